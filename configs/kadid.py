"""MUSIQ on KADID-10k (synthetic distortions, split by reference image).

Not in the paper; KonIQ-like recipe: SGD momentum, cosine from lr 1e-3,
20 epochs, batch 32. MOS here is DMOS on 1..5 (higher is better).
"""

from musiq_jax.configs import base

TRAIN_IMAGES = 8100


def get_config(arg=None):
  c = base.get_config()
  c.dataset = "kadid10k"
  c.mos_range = (1.0, 5.0)
  c.input.batch_size = 32
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  epochs = 20
  c.num_train_steps = epochs * TRAIN_IMAGES // c.input.batch_size
  c.eval_every_steps = TRAIN_IMAGES // c.input.batch_size
  c.checkpoint_every_steps = c.eval_every_steps
  if arg == "tiny":
    c = base.tiny(c)
  return c
