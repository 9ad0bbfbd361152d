"""Defaults shared by every MUSIQ training config; dataset configs override.

Follows the MUSIQ paper's fine-tuning recipe where it gives one (SGD with
momentum, cosine decay, horizontal flip only, at most 512 native tokens in
training); see each dataset config for its learning rate, batch and epochs.
"""

import ml_collections
from ml_collections import config_dict

from musiq_jax.configs import models


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.task = "musiq"  # musiq_jax.tasks: "musiq", "crops" or "rank".
  c.seed = 0
  c.mode = "train"  # "train", or "eval": score a checkpoint on eval_splits.

  # Data: a TFDS builder from musiq_jax.datasets, built into data_dir
  # (`python -m musiq_jax.datasets.build`); built on first use if
  # manual_dir is set or the dataset needs no download (synthetic_iqa).
  c.dataset = "synthetic_iqa"
  # TFDS data_dir (None: ~/tensorflow_datasets); manual_dir holds the
  # downloaded files of a real dataset. Placeholders: overridable from flags.
  c.data_dir = config_dict.placeholder(str)
  c.manual_dir = config_dict.placeholder(str)
  c.train_split = "train"
  c.eval_splits = ("validation", "test")
  c.val_split = "validation"  # Best checkpoint chosen by SRCC on this split.
  c.label_key = "mos"
  c.mos_range = (1.0, 5.0)  # Used by the levels head.

  # Preprocessing (names as the original's _PP_CONFIG).
  c.pp = ml_collections.ConfigDict(dict(
      patch_size=32, patch_stride=32, hse_grid_size=10,
      longer_side_lengths=(224, 384),
      # Paper: at most 512 native-resolution patches in training.
      max_seq_len_from_original_res=512))
  # Evaluation keeps every native patch (-1), as the released models.
  c.eval_max_seq_len_from_original_res = -1

  c.input = ml_collections.ConfigDict(dict(
      batch_size=32,  # Global batch (split across processes).
      eval_batch_size=16,
      batching="bucketed",  # "padded" (the original) or "bucketed".
      num_buckets=6,
      # Padded mode length / bucketed cap (None: from the data).
      max_seq_len=config_dict.placeholder(int),
      shuffle_buffer=2048,
      cache=False,  # Cache encoded examples in memory (small datasets).
      # Training augmentation: random crops of at least this fraction of
      # the height and of the width (1.0 = off; the paper only flips).
      crop_min_fraction=1.0,
      # Training augmentation: a random order of the R, G, B channels per
      # image, so colour cannot stand in for quality (see
      # input_pipeline.get_dataset; off in the paper).
      channel_shuffle=False,
  ))

  c.model_name = "musiq"
  c.model_size = "musiq"
  c.model = models.get_model_config("musiq")
  c.model.num_classes = 1
  c.model.dropout_rate = 0.1
  c.model.attention_dropout_rate = 0.0
  c.model.stochastic_layer_drop_rate = 0.0
  c.dtype = "float32"  # "bfloat16" computes in bf16, params stay float32.

  # Head/loss: "regression" (loss.kind mse|l1), "distribution" (AVA, EMD),
  # "levels" (Q-Align rating levels over mos_range).
  c.head = "regression"
  # Initial bias of the zero-kernel head (the score every image starts
  # with); None = the centre of mos_range for "regression", 0 otherwise.
  c.head_bias_init = config_dict.placeholder(float)
  c.loss = ml_collections.ConfigDict(dict(kind="mse"))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd",  # "sgd" (momentum), "adam" or "adamw".
      learning_rate=2e-3,
      momentum=0.9,
      weight_decay=0.0,
      grad_clip_norm=1.0,  # Global-norm clipping (0 disables).
      warmup_steps=0,
      schedule="cosine",  # "cosine" or "constant" after warmup.
      accum_steps=1,  # Gradient accumulation: effective batch x accum_steps.
  ))
  # > 0: keep an exponential moving average of the weights (Polyak
  # averaging; decay per optimizer step, warmed up as min(decay,
  # (1 + t) / (10 + t))) and validate, select and export it instead of the
  # raw weights. 0 keeps no average.
  c.ema_decay = 0.0
  c.num_train_steps = 1000
  c.log_every_steps = 20
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  c.max_checkpoints_to_keep = 2

  # Initialisation when the workdir has no checkpoint: a released .npz (e.g.
  # imagenet_pretrain.npz) with the head re-initialised.
  c.init = ml_collections.ConfigDict(dict(
      pretrained_npz=config_dict.placeholder(str), dont_load=("head/.*",)))

  # Mesh: axis sizes (-1 = the rest of the devices). Params are replicated
  # unless a rule below shards them on the 'model' axis: (regex over the
  # '/'-joined param path, PartitionSpec entries per dimension).
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1))
  c.sharding_rules = (
      (r".*MlpBlock_3/Dense_0/kernel", (None, "model")),
      (r".*MlpBlock_3/Dense_0/bias", ("model",)),
      (r".*MlpBlock_3/Dense_1/kernel", ("model", None)),
      (r".*MultiHeadDotProductAttention_1/(query|key|value)/kernel",
       (None, "model", None)),
      (r".*MultiHeadDotProductAttention_1/(query|key|value)/bias",
       ("model", None)),
      (r".*MultiHeadDotProductAttention_1/out/kernel", ("model", None, None)),
  )
  return c


def tiny(c):
  """Shrinks any config for tests: tiny model, few steps, small batches."""
  c.model_size = "tiny"
  num_classes = c.model.num_classes
  c.model = models.get_model_config("tiny")
  c.model.num_classes = num_classes
  c.model.dropout_rate = 0.0
  c.model.attention_dropout_rate = 0.0
  c.model.stochastic_layer_drop_rate = 0.0
  c.pp.longer_side_lengths = (64,)
  c.pp.max_seq_len_from_original_res = 16  # A training cap only.
  c.eval_max_seq_len_from_original_res = -1  # Every patch, as scoring.
  c.input.batch_size = 4
  c.input.eval_batch_size = 4
  c.input.shuffle_buffer = 16
  c.num_train_steps = 4
  c.log_every_steps = 2
  c.eval_every_steps = 2
  c.checkpoint_every_steps = 2
  return c


# Training-set sizes (the builders' train splits) and MOS scales: what turns
# a recipe's epochs into steps (`with_dataset`).
DATASETS = {
    "koniq10k": dict(train_images=7058, mos_range=(0.0, 100.0)),  # MOS_zscore
    "kadid10k": dict(train_images=8100, mos_range=(1.0, 5.0)),  # DMOS 1..5
    "paq2piq": dict(train_images=30000, mos_range=(0.0, 100.0)),
    "spaq": dict(train_images=8900, mos_range=(0.0, 100.0)),
    "ava": dict(train_images=230000, mos_range=(1.0, 10.0)),
    "live_challenge": dict(train_images=920, mos_range=(0.0, 100.0)),
}


def with_dataset(c, name: str, *, epochs: int, batch_size: int,
                 eval_every_epochs: int = 1):
  """Sets a dataset preset: name, MOS scale, batch, and the run length in
  steps from epochs (validation and checkpoints every `eval_every_epochs`).
  """
  if name not in DATASETS:
    raise ValueError(f"No preset for dataset {name!r}; known: "
                     f"{sorted(DATASETS)}.")
  d = DATASETS[name]
  c.dataset = name
  c.mos_range = tuple(d["mos_range"])
  c.input.batch_size = batch_size
  c.num_train_steps = epochs * d["train_images"] // batch_size
  c.eval_every_steps = eval_every_epochs * d["train_images"] // batch_size
  c.checkpoint_every_steps = c.eval_every_steps
  return c


def args(arg, allowed=(), config="config") -> set:
  """The comma-separated words after a config file's colon, checked.

  Every config takes "tiny" (test-sized: tiny model, tiny data, a few
  steps); `allowed` lists its other words.
  """
  words = {w for w in str(arg).split(",") if w} if arg else set()
  unknown = words - set(allowed) - {"tiny"}
  if unknown:
    raise ValueError(f"{config}: unknown argument(s) {sorted(unknown)}; "
                     f"use {sorted(set(allowed) | {'tiny'})}.")
  return words


def trainer_defaults(c):
  """The trainer's fields every schema shares (see musiq_jax.trainer)."""
  c.mode = "train"  # "train", or "eval": score a checkpoint on eval_splits.
  # > 0: an exponential moving average of the weights is validated,
  # selected and exported (see get_config).
  c.ema_decay = 0.0
  c.checkpoint_every_steps = 100
  c.max_checkpoints_to_keep = 2
  # Mesh axis sizes (-1 = the rest of the devices); params replicated
  # unless a rule (regex over the param path, PartitionSpec entries) shards
  # them on 'model'.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1))
  c.sharding_rules = ()
  return c


def crop_defaults(dataset: str, mos_range=(1.0, 5.0)):
  """The schema of the crop baselines (task "crops" of musiq_jax.tasks).

  Crop baselines (RankIQA's CNN, GlintIQA, the CLIP heads) train on square
  random crops (+ flip) and score an image by pooling `eval.num_crops`
  crops; each config then sets its model, crop size, loss and optimizer.
  """
  c = trainer_defaults(ml_collections.ConfigDict())
  c.task = "crops"  # musiq_jax.tasks.CropTask.
  c.stage = "finetune"  # MOS training ("rank": RankIQA's pre-training).
  c.seed = 0  # Init, crops, dropout (folded with the step).
  c.dataset = dataset
  c.data_dir = config_dict.placeholder(str)  # TFDS data_dir (None: default).
  c.manual_dir = config_dict.placeholder(str)  # A real dataset's downloads.
  c.label_key = "mos"
  c.mos_range = tuple(mos_range)  # The label scale (scores are mapped to it).
  c.train_split = "train"
  c.val_split = "validation"  # Best step chosen by SRCC on this split.
  c.eval_splits = ("validation", "test")
  c.input = ml_collections.ConfigDict(dict(
      batch_size=16,
      eval_batch_size=8,  # Images per eval batch ([B, K, S, S, 3]).
      crops_per_image=1,  # Crops of one photo per example ([B, K, S, S, 3]).
      flip=True,  # Horizontal flip: it does not alter quality.
      shuffle_buffer=1024,
      # A ClassLabel feature holding the distortion type (LIQE's task).
      distortion_key=config_dict.placeholder(str)))
  c.eval = ml_collections.ConfigDict(dict(
      sampler="random",  # "random" windows, or "liqe" (evenly spaced).
      num_crops=10,
      reduce="mean",  # Pools crop scores (scalar models).
      resize=768,  # "liqe": shorter side to this when both sides reach it.
      stride=32))  # "liqe": unfold stride.
  c.init = ml_collections.ConfigDict(dict(
      pretrained_workdir=config_dict.placeholder(str),  # Its best.npz...
      pretrained_npz=config_dict.placeholder(str),  # ...or a file directly.
      dont_load=()))  # Regexes of params re-initialised when loading.
  c.log_every_steps = 50
  c.eval_every_steps = 100  # Best-by-validation-SRCC selection.
  c.checkpoint_every_steps = 100
  return c


def crop_defaults_for(runlocal: bool, cpu: bool):
  """`crop_defaults` on the dataset a crop baseline's variant trains on.

  runlocal: synthetic_iqa/tiny (tests); cpu: synthetic_iqa/small (a CPU
  run, comparable with configs/synthetic.py); else KonIQ-10k on its 0..100
  MOS scale (the papers' setting).
  """
  if runlocal:
    return crop_defaults("synthetic_iqa/tiny")
  if cpu:
    return crop_defaults("synthetic_iqa/small")
  return crop_defaults("koniq10k", (0.0, 100.0))
