r"""LIQE (Zhang et al., CVPR 2023): CLIP ViT-B/32 fine-tuned on 495 joint prompts.

Settings follow LIQE's release (Zhang et al., CVPR 2023; github.com/zwx8981/LIQE,
`train_unique_clip_weight.py`, `MNL_Loss.py`, `LIQE.py`).
Trained and scored by the trainer (task "crops") through the main entry point:

  python -m musiq_jax.main --config=configs/liqe.py:synthetic --workdir=DIR \
      --config.init.tokenizer_dir=CLIP_TOKENIZER_DIR

  get_config()             # the paper's setting (KonIQ-10k, ViT-B/32)
  get_config("synthetic")  # tiny random CLIP on synthetic_iqa/small: a CPU run
  get_config("tiny")       # tiny CLIP on synthetic_iqa/tiny, a few steps: tests

With random CLIP weights (nothing downloads them: pass
`--config.init.clip_weights=FILE.safetensors`) LIQE's zero-shot prior is
gone and it learns from scratch; expect poor numbers on a CPU budget.
"""

import ml_collections
from ml_collections import config_dict

from musiq_jax.configs import base


def get_config(arg=None):
  """Returns the LIQE config."""
  args = base.args(arg, ("synthetic",), config="liqe.py")
  runlocal, synthetic = "tiny" in args, "synthetic" in args
  cpu = runlocal or synthetic
  config = base.crop_defaults_for(runlocal, cpu)
  if cpu:
    # The synthetic dataset labels its distortion types; LIQE learns them as
    # its distortion task (crop_models.LIQE_DISTORTION_OF maps the names).
    config.input.distortion_key = "distortion_type"

  config.model_name = "liqe"
  config.model = ml_collections.ConfigDict()
  config.model.name = "liqe"
  config.model.clip = "tiny" if cpu else "ViT-B/32"  # clip/model_sizes.py
  config.model.dtype = "float32"  # computation dtype of the CLIP towers

  # .safetensors CLIP weights (OpenAI/open_clip or HF layout; LIQE.pt after
  # `python -m musiq_jax.clip.convert_torch`). None = random init.
  config.init.clip_weights = config_dict.placeholder(str)
  # Folder with tokenizer.json, or vocab.json + merges.txt (docs/clip.md).
  config.init.tokenizer_dir = config_dict.placeholder(str)

  config.crop_size = 224  # CLIP's input size
  config.input.crops_per_image = 3  # LIQE: 3 random crops, logits averaged
  config.input.batch_size = 4 if runlocal else 16  # LIQE: 16 KonIQ/KADID
  # Test: AdaptiveResize(768) then 15 evenly spaced 224 unfold patches at
  # stride 32, logits averaged before the softmax.
  config.eval.sampler = "liqe"
  config.eval.num_crops = 2 if runlocal else 15
  config.eval.resize = 768
  config.eval.stride = 32

  config.loss = ml_collections.ConfigDict()
  config.loss.quality_weight = 1.0  # pairwise fidelity (loss_m4) on scores
  config.loss.scene_weight = 1.0  # fidelity on the scene marginal, if labelled
  config.loss.distortion_weight = 1.0  # same on the distortion marginal
  config.loss.aux_loss = "fidelity"  # or "cross_entropy" for scene/distortion
  config.loss.dwa = True  # Dynamic Weight Averaging of the task losses...
  config.loss.dwa_alpha = 1.5  # ...to this total weight (LIQE: 1.5)...
  config.loss.dwa_temperature = 2.0  # ...at this softmax temperature.

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adamw"
  # The whole CLIP is fine-tuned at 5e-6 from pretrained weights; a random
  # tiny CLIP needs a larger step to learn anything in a few hundred.
  config.optimizer.learning_rate = 1e-4 if cpu else 5e-6
  config.optimizer.weight_decay = 1e-3
  config.optimizer.grad_clip_norm = 0.0
  # CosineAnnealingLR(T_max=5 epochs), stepped per iteration here.
  config.optimizer.schedule = "cosine_annealing"
  config.optimizer.frozen = ()  # regexes of frozen parameter paths; none

  config.steps_per_epoch = 2 if runlocal else (50 if synthetic else 200)
  config.optimizer.cosine_t_max = 5 * config.steps_per_epoch
  # LIQE: 80 epochs x 200 steps (and 10 sessions, median reported).
  config.num_train_steps = 4 if runlocal else (
      300 if synthetic else 80 * config.steps_per_epoch)
  config.log_every_steps = 1 if runlocal else 50
  config.eval_every_steps = 2 if runlocal else (
      100 if synthetic else 5 * config.steps_per_epoch)
  return config
