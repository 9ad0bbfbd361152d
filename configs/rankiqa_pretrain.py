r"""RankIQA stage 1: ranking pre-training on synthetic distortions (CPU-sized).

    python -m musiq_jax.main --config=configs/rankiqa_pretrain.py --workdir=W1

then fine-tune with configs/rankiqa_finetune.py and
`--config.init.pretrained_workdir=W1`. Runs the trainer's task "rank": batches of the synthetic dataset's *train-split* pristine photos,
each distorted by RankIQA's four LIVE types at levels 0..5, trained with the
efficient-Siamese hinge loss (margin 10). Values from RankIQA (Liu et al.,
ICCV 2017, Sec. 3-4; github.com/xialeiliu/RankIQA: the LIVE generator
`data/data_generator/distortion_generator.m`, the loss
`src/MyLossLayer/netloss_*.py`, the solver prototxts) where they fit; what is scaled down for a 2-core CPU says so.

Args (after the colon, comma-separated): "tiny" = test-sized (tiny CNN, 32
px crops, synthetic_iqa/tiny, a few steps); "musiq" = MUSIQ as the ranked
backbone (with "tiny": the tiny MUSIQ on 64 px crops).

Backbones: `model_name="small_cnn"` (RankIQA's shallow net family, any
`model.variant` of `musiq_jax.models.small_cnn.VARIANTS`), or "musiq"
(`musiq_jax.crop_models.MusiqCrops`): every crop of a ranked batch becomes
multi-scale patch tokens inside the jitted step (the scorer's device
preprocessing), so the ranking stage pre-trains MUSIQ itself, as RankIQA
(Sec. 3) proposes the ranking idea for any network. Its export is a MUSIQ
checkpoint: `configs/rankiqa_finetune.py:musiq` fine-tunes it on crops,
and the MUSIQ task loads it with `init.pretrained_npz`.
"""

import ml_collections
from ml_collections import config_dict

from musiq_jax.configs import base
from musiq_jax.configs import models


def get_config(arg=None):
  words = base.args(arg, ("musiq",), config="rankiqa_pretrain.py")
  c = base.trainer_defaults(ml_collections.ConfigDict())
  c.task = "rank"  # musiq_jax.tasks.RankTask ("crops" to fine-tune).
  c.stage = "rank"  # "rank" (this file) or "finetune".
  c.seed = 0  # Init, ranked batches and evaluation crops.

  # Dataset: only its pristine train contents are used for training; MOS is
  # used for evaluation only. Same dataset as configs/synthetic.py so the
  # numbers are comparable with MUSIQ's.
  c.dataset = "synthetic_iqa/small"
  c.data_dir = config_dict.placeholder(str)  # TFDS data_dir (None: default).
  c.manual_dir = config_dict.placeholder(str)  # Unused by synthetic_iqa.
  c.label_key = "mos"
  c.mos_range = (1.0, 5.0)
  c.train_split = "train"  # Unused by the rank stage (pristine photos).
  c.val_split = "validation"
  c.eval_splits = ("validation", "test")

  c.model_name = "small_cnn"  # Or "musiq" (the ":musiq" argument, above).
  c.model = ml_collections.ConfigDict(dict(
      # RankIQA used VGG-16 from ImageNet; "shallow" (4 convs + FC, 0.4M
      # params) is its shallow-net family and trains from scratch on CPU.
      variant="shallow",
      dropout_rate=0.0,  # RankIQA's VGG had dropout 0.5 in fc6/fc7; the
                         # shallow net has one FC and no room to overfit.
      zero_init_head=False,  # Ranking scores must differ from the start.
  ))
  c.dtype = "float32"

  # RankIQA: random 224 x 224 crops. 96 px keeps a step fast on 2 cores and
  # still fits the small dataset's photos (256 px longer side).
  c.crop_size = 96

  c.rank = ml_collections.ConfigDict(dict(
      # RankIQA's LIVE generator: 4 types x 5 levels (+ the pristine image).
      distortion_names=("gaussian_blur", "white_noise", "jpeg", "jpeg2000"),
      types_per_batch=None,  # All 4 in every batch, as the LIVE data layer.
      contents_per_type=2,  # LIVE batch: 4 types x 6 levels x 2 = 48.
      levels=(0, 1, 2, 3, 4, 5),  # 0 = pristine.
      # Pairs within one (type, content) slot: only orders known by
      # construction (RankIQA's LIVE layer also ranks across contents).
      group_by="content_type",
      pristine_split="train",  # Never the validation/test contents.
      max_side=256,  # = synthetic_iqa/small's max_side.
      split_seed=0,  # = the builder's split seed.
  ))
  # RankIQA's hinge margin 10; loss divided by the number of images, as its
  # gradient is accumulated per image and divided by N.
  c.loss = ml_collections.ConfigDict(dict(margin=10.0,
                                          normalize="num_images"))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd",  # RankIQA: SGD, momentum 0.9, weight decay 5e-4.
      momentum=0.9,
      weight_decay=5e-4,
      # RankIQA: 1e-4 (TID) / 1e-5 (LIVE) for an ImageNet VGG-16; a shallow
      # net from scratch needs a larger step to learn in a few hundred.
      learning_rate=3e-3,
      schedule="step",  # Caffe "step": x gamma every step_size iterations.
      step_size=100,  # RankIQA: every 10k of 50k (1/3 of the run here).
      gamma=0.1,  # RankIQA's gamma.
      grad_clip_norm=0.0,  # RankIQA has none.
  ))
  c.num_train_steps = 300  # RankIQA: 50k; 681 s on an idle 2-core CPU.
  c.log_every_steps = 50
  c.eval_every_steps = 200  # Finetune only (rank keeps its last step).
  c.checkpoint_every_steps = 100

  # Evaluation: RankIQA scores the mean of 30 random 224 crops; 10 on CPU.
  c.eval = ml_collections.ConfigDict(dict(num_crops=10, reduce="mean"))
  c.input = ml_collections.ConfigDict(dict(
      batch_size=48,  # Unused by "rank" (fixed by the rank layout above).
      eval_batch_size=8,  # Images per eval batch ([B, K, S, S, 3]).
      shuffle_buffer=1024, flip=True))

  c.init = ml_collections.ConfigDict(dict(
      pretrained_workdir=config_dict.placeholder(str),  # Its best.npz.
      pretrained_npz=config_dict.placeholder(str),  # Or a file directly.
      dont_load=("head/.*",),  # Re-initialised when loading.
  ))

  if "tiny" in words:
    c.dataset = "synthetic_iqa/tiny"
    c.model.variant = "tiny"
    c.crop_size = 32  # Tiny photos have a 96 px longer side.
    c.rank.max_side = 96
    c.rank.contents_per_type = 1  # Tiny has very few train contents.
    c.rank.levels = (0, 2, 5)
    c.num_train_steps = 4
    c.optimizer.step_size = 2
    c.log_every_steps = 2
    c.eval_every_steps = 2
    c.eval.num_crops = 2
  if "musiq" in words:
    _musiq_backbone(c, tiny="tiny" in words)
  return c


def _musiq_backbone(c, tiny: bool):
  """MUSIQ (Ke et al., ICCV 2021) as the ranked backbone, CPU-sized."""
  c.model_name = "musiq"  # musiq_jax.crop_models.MusiqCrops.
  c.model_size = "tiny" if tiny else "small"
  c.model = models.get_model_config(c.model_size)
  c.model.num_classes = 1
  c.model.dropout_rate = 0.0
  c.model.attention_dropout_rate = 0.0
  c.model.stochastic_layer_drop_rate = 0.0
  # The demo model's settings (configs/synthetic.py).
  c.model.resnet_num_groups = 4
  c.model.patch_input = "mscn"
  # Tokens of each crop: the native scale whole plus ARP resizes (the
  # paper's 224/384 would upscale a 96 px crop). As many resized scales as
  # the model the export initialises (configs/synthetic.py: 2; its :tiny:
  # 1), so that the scale embedding loads with `init.pretrained_npz`.
  c.pp = ml_collections.ConfigDict(dict(
      patch_size=32, patch_stride=32, hse_grid_size=10,
      longer_side_lengths=(32,) if tiny else (48, 64),
      max_seq_len_from_original_res=-1))
  # 96 px crops of 32 px patches: 3x3 native + 2x2 + 2x2 resized = 17
  # tokens.
  c.crop_size = 64 if tiny else 96
  # Adam as configs/synthetic.py trains the same model from scratch
  # (RankIQA's SGD schedule is for an ImageNet VGG-16).
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 3e-4
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 1.0
