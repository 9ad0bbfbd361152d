r"""Linear probe: frozen CLIP image features -> Dense -> MOS.

Trained and scored by the trainer (task "crops") through the main entry point:

  python -m musiq_jax.main --config=configs/clip_linear.py:synthetic \
      --workdir=DIR --config.init.clip_weights=CLIP.safetensors

  get_config()             # ViT-B/32 features on KonIQ-10k
  get_config("synthetic")  # tiny random CLIP on synthetic_iqa/small
  get_config("tiny")       # tiny CLIP on synthetic_iqa/tiny: tests

A probe on random features is only a smoke test of the pipeline.
"""

import ml_collections
from ml_collections import config_dict

from musiq_jax.configs import base


def get_config(arg=None):
  """Returns the CLIP linear-probe config."""
  args = base.args(arg, ("synthetic",), config="clip_linear.py")
  runlocal, synthetic = "tiny" in args, "synthetic" in args
  cpu = runlocal or synthetic
  config = base.crop_defaults_for(runlocal, cpu)

  config.model_name = "clip_linear"
  config.model = ml_collections.ConfigDict()
  config.model.name = "clip_linear"
  config.model.clip = "tiny" if cpu else "ViT-B/32"
  config.model.dtype = "float32"
  config.model.num_outputs = 1  # MOS regression

  config.init.clip_weights = config_dict.placeholder(str)
  config.init.tokenizer_dir = config_dict.placeholder(str)  # unused

  config.crop_size = 224
  config.input.batch_size = 4 if runlocal else (16 if synthetic else 64)
  config.eval.num_crops = 2 if runlocal else 10

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3  # only the Dense head learns
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.schedule = "cosine"
  config.optimizer.frozen = ("^clip/",)  # CLIP stays frozen

  config.num_train_steps = 4 if runlocal else (300 if synthetic else 5000)
  config.log_every_steps = 1 if runlocal else 50
  config.eval_every_steps = 2 if runlocal else 100
  return config
