"""MUSIQ fine-tuned on PaQ-2-PiQ / FLIVE (paper table: full image).

Paper recipe: SGD momentum, cosine decay from lr 2e-4, 10 epochs, batch 96
(Ke et al., "MUSIQ", ICCV 2021, Sec. 4.1). Official train/validation/test split.
"""

from musiq_jax.configs import base


def get_config(arg=None):
  words = base.args(arg, config="paq2piq.py")
  c = base.get_config()
  c.optimizer.learning_rate = 2e-4
  c.optimizer.warmup_steps = 100
  base.with_dataset(c, "paq2piq", epochs=10, batch_size=96)
  if "tiny" in words:
    c = base.tiny(c)
  return c
