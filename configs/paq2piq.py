"""MUSIQ fine-tuned on PaQ-2-PiQ / FLIVE (paper table: full image).

Paper recipe: SGD momentum, cosine decay from lr 2e-4, 10 epochs, batch 96
(FIELD_NOTES §7, [recall]). Official train/validation/test split.
"""

from musiq_jax.configs import base

TRAIN_IMAGES = 30000


def get_config(arg=None):
  c = base.get_config()
  c.dataset = "paq2piq"
  c.mos_range = (0.0, 100.0)
  c.input.batch_size = 96
  c.optimizer.learning_rate = 2e-4
  c.optimizer.warmup_steps = 100
  epochs = 10
  c.num_train_steps = epochs * TRAIN_IMAGES // c.input.batch_size
  c.eval_every_steps = TRAIN_IMAGES // c.input.batch_size
  c.checkpoint_every_steps = c.eval_every_steps
  if arg == "tiny":
    c = base.tiny(c)
  return c
