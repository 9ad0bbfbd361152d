"""MUSIQ on LIVE Challenge (not in the paper; third-party 0.702 / 0.746).

1162 photos (first 7 usually dropped, as the builder documents), random
seeded split. KonIQ-like recipe scaled down: SGD, lr 1e-3, 50 epochs.
"""

from musiq_jax.configs import base


def get_config(arg=None):
  words = base.args(arg, config="livec.py")
  c = base.get_config()
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 50
  base.with_dataset(c, "live_challenge", epochs=50, batch_size=32,
                    eval_every_epochs=5)
  if "tiny" in words:
    c = base.tiny(c)
  return c
