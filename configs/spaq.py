"""MUSIQ fine-tuned on SPAQ (paper: SRCC 0.917 / PLCC 0.921).

Paper recipe: SGD momentum, cosine decay from lr 1e-4, 30 epochs, batch 96
(FIELD_NOTES §7, [recall]); SPAQ's phone photos are resized to a 512 shorter
side before the multi-scale preprocessing (done by the builder's config).
Split: random 8:2 with a fixed seed (documented in the builder).
"""

from musiq_jax.configs import base

TRAIN_IMAGES = 8900


def get_config(arg=None):
  c = base.get_config()
  c.dataset = "spaq"
  c.mos_range = (0.0, 100.0)
  c.input.batch_size = 96
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 100
  epochs = 30
  c.num_train_steps = epochs * TRAIN_IMAGES // c.input.batch_size
  c.eval_every_steps = TRAIN_IMAGES // c.input.batch_size
  c.checkpoint_every_steps = c.eval_every_steps
  if arg == "tiny":
    c = base.tiny(c)
  return c
