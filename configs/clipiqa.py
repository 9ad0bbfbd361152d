r"""CLIP-IQA / CLIP-IQA+ (Wang et al., AAAI 2023): an antonym prompt pair.

Score = softmax(100 cos)[good] over ("Good photo.", "Bad photo.");
CLIP-IQA+ learns 16 CoOp context vectors with MSE on MOS scaled to [0, 1]
(Wang et al., AAAI 2023, Sec. 3; github.com/IceClear/CLIP-IQA,
`coopclipiqa.py` and `configs/clipiqa/`). Trained and scored by the
trainer (task "crops"):

  python -m musiq_jax.main --config=configs/clipiqa.py:synthetic \
      --workdir=DIR --config.init.tokenizer_dir=CLIP_TOKENIZER_DIR

  get_config()             # CLIP-IQA+ on KonIQ-10k, ViT-B/32
  get_config("zeroshot")   # no training (num_train_steps 0): zero-shot scores
  get_config("synthetic")  # tiny random CLIP on synthetic_iqa/small: a CPU run
  get_config("tiny")       # tiny CLIP on synthetic_iqa/tiny: tests

The original uses an RN50 CLIP without positional embedding (any input
size); the modified-ResNet tower is not implemented, so ViT-B/32 on 224
crops stands in. With random CLIP weights the context alone cannot learn
much: the CPU numbers say little about CLIP-IQA itself.
"""

import ml_collections
from ml_collections import config_dict

from musiq_jax.configs import base


def get_config(arg=None):
  """Returns the CLIP-IQA(+) config."""
  args = base.args(arg, ("synthetic", "zeroshot"), config="clipiqa.py")
  runlocal, synthetic = "tiny" in args, "synthetic" in args
  zeroshot, cpu = "zeroshot" in args, runlocal or synthetic
  config = base.crop_defaults_for(runlocal, cpu)

  config.model_name = "clipiqa"
  config.model = ml_collections.ConfigDict()
  config.model.name = "clipiqa"
  config.model.clip = "tiny" if cpu else "ViT-B/32"  # original: RN50
  config.model.dtype = "float32"
  config.model.prompts = ("Good photo.", "Bad photo.")  # positive first
  config.model.n_ctx = 0 if zeroshot else 16  # CoOp context (CLIP-IQA+: 16)
  config.model.logit_scale = 100.0  # fixed, not CLIP's learned one

  config.init.clip_weights = config_dict.placeholder(str)  # safetensors
  config.init.tokenizer_dir = config_dict.placeholder(str)

  config.crop_size = 224
  config.input.batch_size = 4 if runlocal else 16
  # Random 224 crop + flip for training; scored on `eval.num_crops` random
  # crops, logits averaged (CLIP-IQA itself scores the whole image).
  config.eval.num_crops = 2 if runlocal else 10

  # MSE between p(good) and MOS scaled to [0, 1] by `mos_range`; scores are
  # mapped back to the MOS range.
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.002  # CLIP-IQA+ (CoOp)
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.schedule = "cosine_restart"  # CosineRestart...
  config.optimizer.restart_period = 100 if cpu else 5000  # ...period (steps)
  config.optimizer.frozen = ("^clip/",)  # only the prompt context learns

  config.num_train_steps = 0 if zeroshot else (
      4 if runlocal else (300 if synthetic else 20000))
  config.log_every_steps = 1 if runlocal else 50
  config.eval_every_steps = 2 if runlocal else 100
  return config
