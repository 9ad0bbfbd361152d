"""MUSIQ on KADID-10k (synthetic distortions, split by reference image).

Not in the paper; KonIQ-like recipe: SGD momentum, cosine from lr 1e-3,
20 epochs, batch 32. MOS here is DMOS on 1..5 (higher is better).
"""

from musiq_jax.configs import base


def get_config(arg=None):
  words = base.args(arg, config="kadid.py")
  c = base.get_config()
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  base.with_dataset(c, "kadid10k", epochs=20, batch_size=32)
  if "tiny" in words:
    c = base.tiny(c)
  return c
