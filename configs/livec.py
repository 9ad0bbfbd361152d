"""MUSIQ on LIVE Challenge (not in the paper; third-party 0.702 / 0.746).

1162 photos (first 7 usually dropped, as the builder documents), random
seeded split. KonIQ-like recipe scaled down: SGD, lr 1e-3, 50 epochs.
"""

from musiq_jax.configs import base

TRAIN_IMAGES = 920


def get_config(arg=None):
  c = base.get_config()
  c.dataset = "live_challenge"
  c.mos_range = (0.0, 100.0)
  c.input.batch_size = 32
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 50
  epochs = 50
  c.num_train_steps = epochs * TRAIN_IMAGES // c.input.batch_size
  c.eval_every_steps = 5 * TRAIN_IMAGES // c.input.batch_size
  c.checkpoint_every_steps = c.eval_every_steps
  if arg == "tiny":
    c = base.tiny(c)
  return c
