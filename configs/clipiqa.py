r"""CLIP-IQA (Wang et al., AAAI 2023): antonym prompts, zero-shot or CoOp-tuned.

  get_config()                   # CLIP-IQA+: 16 learnable context vectors, MSE
  get_config("zeroshot")         # CLIP-IQA: fixed "Good photo." / "Bad photo."
  get_config("runlocal")         # tiny CLIP for tests (combinable: "zeroshot,runlocal")

The original uses CLIP RN50 without positional embedding (any input size); we
have the ViT towers only, so inputs are 224 crops (see docs/clip.md).
"""

import ml_collections


def get_config(arg=None):
  """Returns the CLIP-IQA(+) config."""
  flags = set(str(arg).split(",")) if arg else set()
  runlocal, zeroshot = "runlocal" in flags, "zeroshot" in flags
  config = ml_collections.ConfigDict()
  config.seed = 0  # init and per-step rng

  config.model = ml_collections.ConfigDict()
  config.model.name = "clipiqa"
  config.model.clip = "tiny" if runlocal else "ViT-B/32"  # original: RN50 (not implemented)
  config.model.dtype = "float32"
  config.model.prompts = ("Good photo.", "Bad photo.")  # positive first
  config.model.n_ctx = 0 if zeroshot else 16  # CoOp context vectors (CLIP-IQA+: 16)
  config.model.logit_scale = 100.0  # fixed temperature, not CLIP's learned one

  config.init = ml_collections.ConfigDict()
  config.init.clip_weights = None  # .safetensors CLIP weights; None = random init
  config.init.tokenizer_dir = None  # tokenizer.json or vocab.json + merges.txt

  config.input = ml_collections.ConfigDict()
  config.input.crop_size = 224
  config.input.train_flip = True  # random 224 crop + horizontal flip
  config.input.eval = "center_crop"  # or "liqe_crops" (15 crops, logits averaged)
  config.input.batch_size = 2 if runlocal else 16
  config.input.mos_min = 0.0  # MOS is scaled to [0, 1] for the MSE target...
  config.input.mos_max = 100.0  # ...with this dataset range (KonIQ: 0..100)

  config.loss = ml_collections.ConfigDict()
  config.loss.name = "mse"  # on softmax(100 cos)[good] vs scaled MOS

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.002  # CLIP-IQA+ (CoOp)
  config.optimizer.momentum = 0.9
  config.optimizer.schedule = "cosine_restart"  # CosineRestart in the original
  config.optimizer.frozen = ("^clip/",)  # only the prompt context learns (CoOp)

  config.num_steps = 4 if runlocal else (0 if zeroshot else 20000)  # zero-shot: no training
  config.log_every_steps = 1 if runlocal else 100
  return config
