"""MUSIQ on AVA aesthetics (paper: SRCC 0.726 / PLCC 0.738).

10-bin head trained with the EMD loss on the vote distribution; the score is
the softmax-weighted mean of 1..10 (as the released ava_ckpt.npz). Paper
recipe: SGD momentum, cosine decay from lr 0.12, 20 epochs, batch 512
(FIELD_NOTES §7, [recall]); use accum_steps on small devices.
"""

import ml_collections

from musiq_jax.configs import base

TRAIN_IMAGES = 230000


def get_config(arg=None):
  c = base.get_config()
  c.dataset = "ava"
  c.mos_range = (1.0, 10.0)
  c.model.num_classes = 10
  c.head = "distribution"
  c.loss = ml_collections.ConfigDict(dict(r=2.0))
  c.input.batch_size = 512
  c.optimizer.learning_rate = 0.12
  c.optimizer.warmup_steps = 500
  epochs = 20
  c.num_train_steps = epochs * TRAIN_IMAGES // c.input.batch_size
  c.eval_every_steps = TRAIN_IMAGES // c.input.batch_size
  c.checkpoint_every_steps = c.eval_every_steps
  if arg == "tiny":
    c = base.tiny(c)
  return c
