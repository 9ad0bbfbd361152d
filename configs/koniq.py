"""MUSIQ fine-tuned on KonIQ-10k (paper: SRCC 0.916 / PLCC 0.928).

Paper recipe: ImageNet-pretrained MUSIQ, SGD momentum 0.9, cosine decay from
lr 2e-3, 30 epochs (Ke et al., "MUSIQ", ICCV 2021, Sec. 4.1), batch 32, horizontal flip only,
at most 512 native-resolution patches in training, all of them at test time.
KonIQ's official split: 7058 train / 1000 validation / 2015 test.

    python -m musiq_jax.main --config=configs/koniq.py --workdir=DIR \
        --config.data_dir=TFDS_DIR --config.manual_dir=KONIQ_DIR \
        --config.init.pretrained_npz=imagenet_pretrain.npz
"""

from musiq_jax.configs import base


def get_config(arg=None):
  words = base.args(arg, config="koniq.py")
  c = base.get_config()
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 200
  base.with_dataset(c, "koniq10k", epochs=30, batch_size=32)
  if "tiny" in words:
    c = base.tiny(c)
  return c
