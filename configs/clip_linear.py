r"""Linear probe: frozen CLIP image features -> Dense -> MOS.

  get_config()            # ViT-B/32 features
  get_config("runlocal")  # tiny CLIP for tests
"""

import ml_collections


def get_config(arg=None):
  """Returns the CLIP linear-probe config."""
  runlocal = bool(arg) and "runlocal" in str(arg).split(",")
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = "clip_linear"
  config.model.clip = "tiny" if runlocal else "ViT-B/32"
  config.model.dtype = "float32"
  config.model.num_outputs = 1  # MOS regression (10 for an AVA histogram head)

  config.init = ml_collections.ConfigDict()
  config.init.clip_weights = None  # a probe on random features is only a smoke test
  config.init.tokenizer_dir = None  # unused by the probe; kept for a uniform interface

  config.input = ml_collections.ConfigDict()
  config.input.crop_size = 224
  config.input.train_flip = True
  config.input.eval = "center_crop"
  config.input.batch_size = 4 if runlocal else 64

  config.loss = ml_collections.ConfigDict()
  config.loss.name = "mse"

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3  # only the Dense head learns
  config.optimizer.frozen = ("^clip/",)  # CLIP stays frozen (also stop_gradient in the head)

  config.num_steps = 4 if runlocal else 5000
  config.log_every_steps = 1 if runlocal else 100
  return config
