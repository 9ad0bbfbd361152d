"""MUSIQ fine-tuned on KonIQ-10k (paper: SRCC 0.916 / PLCC 0.928).

Paper recipe: ImageNet-pretrained MUSIQ, SGD momentum 0.9, cosine decay from
lr 2e-3, 30 epochs (FIELD_NOTES §7, [recall]), batch 32, horizontal flip only,
at most 512 native-resolution patches in training, all of them at test time.
KonIQ's official split: 7058 train / 1000 validation / 2015 test.

    python -m musiq_jax.main --config=configs/koniq.py --workdir=DIR \
        --config.data_dir=TFDS_DIR --config.manual_dir=KONIQ_DIR \
        --config.init.pretrained_npz=imagenet_pretrain.npz
"""

from musiq_jax.configs import base

TRAIN_IMAGES = 7058


def get_config(arg=None):
  c = base.get_config()
  c.dataset = "koniq10k"
  c.mos_range = (0.0, 100.0)  # MOS_zscore scale.
  c.input.batch_size = 32
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 200
  epochs = 30
  c.num_train_steps = epochs * TRAIN_IMAGES // c.input.batch_size
  c.eval_every_steps = TRAIN_IMAGES // c.input.batch_size  # Every epoch.
  c.checkpoint_every_steps = c.eval_every_steps
  if arg == "tiny":
    c = base.tiny(c)
  return c
