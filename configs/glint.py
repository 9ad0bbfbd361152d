r"""GlintIQA-style global-local hybrid (baseline III), and its size registry.

Settings follow GlintIQA's release (github.com/SYSU-Video/GlintIQA, its
training script and model definition):
ViT-S/16 global branch read after blocks 6-9 (patch embedding and blocks
0-4 frozen), ResNet-50 stages 1-3 as the local branch embedded to the same
14x14 grid, 4 progressive fusion stages, mean-pool -> MLP head, L1 loss,
Adam lr 1e-5 (L2 weight decay 1e-5), cosine T_max 30 stepped per iteration,
batch 32 of 224 crops, 25 test crops.

  get_config()            # the paper's setting, size "vit_small_r50", KonIQ
  get_config("tiny")      # "tiny" on 64 px crops of synthetic_iqa/tiny: tests
  get_config("small")     # "small" on 64 px crops of synthetic_iqa/small: CPU
  get_config("musiq_init")  # "vit_musiq_r50": set init.musiq_npz

Trained and evaluated by the trainer (task "crops") through the main entry point:

  python -m musiq_jax.main --config=configs/glint.py:small --workdir=DIR

Model sizes live in `GLINT_SIZES` (exact parameter counts are asserted in
tests/test_glint.py). Departures from the paper are listed in docs/glint.md.
"""

import ml_collections
from ml_collections import config_dict

from musiq_jax.configs import base
from musiq_jax.models import glint

# The size registry lives with the model (musiq_jax/models/glint.py).
GLINT_SIZES = glint.GLINT_SIZES
NAMES = glint.NAMES
get_model_config = glint.get_model_config


def get_config(arg=None):
  """Returns the GlintIQA config; `arg` may hold "tiny", "small" or
  "musiq_init" (comma-separated)."""
  args = base.args(arg, ("small", "musiq_init"), config="glint.py")
  runlocal = "tiny" in args
  size = "tiny" if runlocal else "small" if "small" in args else "vit_small_r50"
  if "musiq_init" in args:  # The paper's layout, ViT blocks from MUSIQ.
    size = "vit_musiq_r50"
  paper = size.startswith("vit_")

  # Data. The paper's setting is KonIQ-10k (and 10 random splits, median
  # reported; run 10 seeds/splits yourself); the CPU sizes use the embedded
  # synthetic dataset, like configs/synthetic.py, so the numbers compare.
  config = base.crop_defaults_for(runlocal, cpu=not paper)

  config.model_name = "glint"
  config.model = ml_collections.ConfigDict()
  config.model.size = size  # key of GLINT_SIZES
  config.model.fusion_dropout_rate = 0.5 if paper else 0.1  # CWSA proj_drop
  config.model.head_dropout_rate = 0.5 if paper else 0.1  # head MLP dropout
  config.model.vit_dropout_rate = 0.0  # timm ViT-S default (no dropout)
  config.model.dtype = "float32"  # computation dtype

  # A MUSIQ .npz whose blocks match the ViT's (width, heads, MLP; size
  # "vit_musiq_r50" for the released MUSIQ): its Transformer blocks 0..9
  # load into the ViT (`checkpoint.load_vit_from_musiq`). None = random init.
  # The paper starts from timm's ImageNet ViT-S/16, which we cannot fetch.
  config.init.musiq_npz = config_dict.placeholder(str)
  config.init.load_patch_resnet = False  # also MUSIQ's root + block1/unit1
  # (init.pretrained_workdir / pretrained_npz load a whole GlintIQA.)

  # Square random crops (+ flip) for training; the score of an image is the
  # mean over `eval.num_crops` random crops.
  config.crop_size = GLINT_SIZES[size]["image_size"]  # paper: 224
  config.input.batch_size = 32 if paper else 16  # paper: 32
  config.eval.num_crops = 25 if paper else (2 if runlocal else 8)  # paper: 25

  config.loss = ml_collections.ConfigDict()
  config.loss.kind = "l1"  # the paper's L1 loss on MOS

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"  # torch Adam: weight decay added to the grad
  config.optimizer.learning_rate = 1e-5 if paper else 3e-4  # paper: 1e-5
  config.optimizer.weight_decay = 1e-5  # L2 coefficient (not decoupled)
  config.optimizer.schedule = "cosine_annealing"  # CosineAnnealingLR...
  config.optimizer.cosine_t_max = 30 if paper else 1000  # ...T_max in steps
  config.optimizer.eta_min = 0.0  # ...floor of the cosine
  config.optimizer.grad_clip_norm = 0.0  # the paper clips nothing
  config.optimizer.freeze_patch_embed = paper  # the paper freezes it...
  # ...and blocks 0..freeze_blocks_until (inclusive; -1 = none): 0-4.
  config.optimizer.freeze_blocks_until = 4 if paper else -1

  # Paper: 300 epochs of KonIQ's 7,058 training images at batch 32.
  config.num_train_steps = 300 * 7058 // 32 if paper else (
      20 if runlocal else 300)
  config.log_every_steps = 1 if runlocal else 50
  config.eval_every_steps = 10 if runlocal else 100  # best-by-val-SRCC
  return config
