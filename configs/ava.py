"""MUSIQ on AVA aesthetics (paper: SRCC 0.726 / PLCC 0.738).

10-bin head trained with the EMD loss on the vote distribution; the score is
the softmax-weighted mean of 1..10 (as the released ava_ckpt.npz). Paper
recipe: SGD momentum, cosine decay from lr 0.12, 20 epochs, batch 512
(Ke et al., "MUSIQ", ICCV 2021, Sec. 4.1); use accum_steps on small devices.
"""

import ml_collections

from musiq_jax.configs import base


def get_config(arg=None):
  words = base.args(arg, config="ava.py")
  c = base.get_config()
  c.model.num_classes = 10
  c.head = "distribution"
  c.loss = ml_collections.ConfigDict(dict(r=2.0))
  c.optimizer.learning_rate = 0.12
  c.optimizer.warmup_steps = 500
  base.with_dataset(c, "ava", epochs=20, batch_size=512)
  if "tiny" in words:
    c = base.tiny(c)
  return c
