"""MUSIQ fine-tuned on SPAQ (paper: SRCC 0.917 / PLCC 0.921).

Paper recipe: SGD momentum, cosine decay from lr 1e-4, 30 epochs, batch 96
(Ke et al., "MUSIQ", ICCV 2021, Sec. 4.1); SPAQ's phone photos are resized to a 512 shorter
side before the multi-scale preprocessing (done by the builder's config).
Split: random 8:2 with a fixed seed (documented in the builder).
"""

from musiq_jax.configs import base


def get_config(arg=None):
  words = base.args(arg, config="spaq.py")
  c = base.get_config()
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 100
  base.with_dataset(c, "spaq", epochs=30, batch_size=96)
  if "tiny" in words:
    c = base.tiny(c)
  return c
