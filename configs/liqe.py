r"""LIQE (Zhang et al., CVPR 2023): CLIP ViT-B/32 fine-tuned on 495 joint prompts.

Settings follow LIQE's released training script (FIELD_NOTES.md section 4).

  get_config()            # the paper's setting
  get_config("runlocal")  # tiny CLIP, a few steps, for tests and laptops
"""

import ml_collections


def get_config(arg=None):
  """Returns the LIQE config; `arg="runlocal"` shrinks it for a CPU."""
  runlocal = bool(arg) and "runlocal" in str(arg).split(",")
  config = ml_collections.ConfigDict()
  config.seed = 0  # init and per-step rng (folded with the step)

  config.model = ml_collections.ConfigDict()
  config.model.name = "liqe"
  config.model.clip = "tiny" if runlocal else "ViT-B/32"  # musiq_jax.clip.model_sizes
  config.model.dtype = "float32"  # computation dtype of the CLIP towers

  config.init = ml_collections.ConfigDict()
  # .safetensors CLIP weights (OpenAI/open_clip or HF layout; LIQE.pt after
  # `python -m musiq_jax.clip.convert_torch`). None = random init.
  config.init.clip_weights = None
  # Folder with tokenizer.json, or vocab.json + merges.txt (docs/clip.md).
  config.init.tokenizer_dir = None

  config.input = ml_collections.ConfigDict()
  config.input.crop_size = 224  # CLIP's input size
  config.input.train_patches = 3  # random 224 crops per training image (LIQE: 3)
  config.input.train_flip = True  # horizontal flip; nothing else alters quality
  config.input.eval_resize = 768  # AdaptiveResize: shorter side to 768 if both sides >= 768
  config.input.eval_crops = 15  # evenly spaced unfold patches, logits averaged
  config.input.eval_stride = 32  # unfold stride of the eval patches
  config.input.batch_size = 2 if runlocal else 16  # LIQE: 4 per small dataset, 16 KonIQ/KADID

  config.loss = ml_collections.ConfigDict()
  config.loss.quality_weight = 1.0  # pairwise fidelity (MNL_Loss.loss_m4) on scores
  config.loss.scene_weight = 1.0  # fidelity on the scene marginal, where labelled
  config.loss.distortion_weight = 1.0  # fidelity on the distortion marginal, where labelled
  config.loss.aux_loss = "fidelity"  # or "cross_entropy" for scene/distortion
  config.loss.dwa = True  # LIQE re-weights tasks by Dynamic Weight Averaging...
  config.loss.dwa_alpha = 1.5  # ...scaled to this total weight (LIQE: 1.5 * softmax)
  config.loss.dwa_temperature = 2.0  # ...with this softmax temperature

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 5e-6  # the whole CLIP is fine-tuned
  config.optimizer.weight_decay = 1e-3
  config.optimizer.schedule = "cosine"  # CosineAnnealingLR...
  config.optimizer.cosine_period_epochs = 5  # ...T_max = 5 epochs (restarting)
  config.optimizer.frozen = ()  # regexes of frozen parameter paths; none in LIQE

  config.num_epochs = 1 if runlocal else 80
  config.steps_per_epoch = 4 if runlocal else 200
  config.num_sessions = 1 if runlocal else 10  # LIQE reports the median of 10 splits
  config.log_every_steps = 1 if runlocal else 50
  return config
