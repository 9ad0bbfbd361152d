"""What the one trainer (`musiq_jax.trainer`) needs from each kind of model.

A task is picked by `config.task` (big_vision picks its model and loss by
name in the same way; scenic hands its trainer a model bundle of module,
loss and metrics). It gives the trainer:

* `module`-level pieces: `init_params(rng)` (pure, jit-able),
  `load_pretrained(params)` (host-side weight loading at init time),
  `apply(params, batch, train, rng)` and `loss(outputs, batch)` ->
  (scalar, metrics), `eval_scores(params, batch)` -> one score per example on
  the MOS scale, `frozen_mask(params)` (True = never moves) or None;
* data: `example_batch(n)` (init and tracing), `train_batches(skip)` and
  `eval_batches(split)`, process-local numpy batches whose keys in
  `batch_keys` travel to the device (sharded on 'data'), eval batches with a
  `valid` mask (padding rows are 0) and `label`;
* `export_info()`: what `best.json` records so `load_scorer(workdir=W)`
  scores as the evaluation did.

Tasks:
* "musiq": multi-scale patch tokens, heads "regression", "distribution"
  (EMD, AVA) and "levels" (rating levels over mos_range).
* "crops": square random crops (+ flip) with MOS; RankIQA's CNN fine-tune,
  GlintIQA, LIQE, CLIP-IQA(+), the CLIP linear probe (`crop_models`).
  Evaluation is fixed-shape batches [B, K, S, S, 3] (K crops an image) with
  a validity mask, so one jitted eval step serves every batch.
* "rank": RankIQA's ranking pre-training (Liu et al., ICCV 2017, sec. 3.2):
  batches of one pristine crop distorted at increasing levels, the
  efficient-Siamese all-pairs hinge loss; evaluated like "crops".
"""

from __future__ import annotations

import itertools
import os
import zlib
from typing import Any, Dict, Iterator, Mapping, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musiq_jax import checkpoint
from musiq_jax import losses
from musiq_jax import preprocessing

TASKS = ("musiq", "crops", "rank")


def task_name(config) -> str:
  name = config.get("task", "musiq")
  if name not in TASKS:
    raise ValueError(f"config.task={name!r}; use one of {TASKS}.")
  return name


def get_task(config: ml_collections.ConfigDict) -> "Task":
  """The task of `config.task` ("musiq", "crops" or "rank")."""
  name = task_name(config)
  if name == "musiq":
    return MusiqTask(config)
  if name == "crops":
    return CropTask(config)
  return RankTask(config)


def _process_rows(batch: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """This process's rows of a global batch every process builds alike."""
  n, i = jax.process_count(), jax.process_index()
  if n == 1:
    return dict(batch)
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.ndim == 0 or k == "task_weights":
      out[k] = v
      continue
    if v.shape[0] % n:
      raise ValueError(f"batch of {v.shape[0]} rows ('{k}') does not split "
                       f"over {n} processes")
    rows = v.shape[0] // n
    out[k] = v[i * rows:(i + 1) * rows]
  return out


class Task:
  """The interface; see the module docstring."""
  name: str = ""
  batch_keys: tuple = ()
  # Pick the best step by validation SRCC (else keep the last one).
  select_by_validation: bool = True

  def __init__(self, config):
    self.config = config

  # Host-side hooks around every train step (LIQE's loss weighting).
  def prepare_batch(self, step: int, batch: Dict[str, np.ndarray]):
    return batch

  def observe(self, step: int, out) -> None:
    del step, out

  def host_state(self) -> Dict[str, Any]:
    return {}

  def load_host_state(self, state: Mapping[str, Any]) -> None:
    del state

  def frozen_mask(self, params) -> Optional[Any]:
    del params
    return None

  def load_pretrained(self, params):
    """(params, source): init-time weights merged into fresh params."""
    return params, None


# ----------------------------------------------------------------------------
# MUSIQ on multi-scale patch tokens.
# ----------------------------------------------------------------------------
def pp_config(config, train: bool) -> preprocessing.PreprocessConfig:
  d = dict(config.pp)
  if not train:
    d["max_seq_len_from_original_res"] = (
        config.eval_max_seq_len_from_original_res)
  return preprocessing.PreprocessConfig.from_dict(d)


def head_bias_init(config) -> float:
  """`config.head_bias_init`, or the MOS range's centre for regression."""
  if config.get("head_bias_init") is not None:
    return float(config.head_bias_init)
  if config.head == "regression":
    lo, hi = config.mos_range
    return 0.5 * (float(lo) + float(hi))
  return 0.0


def make_loss_and_score(config):
  """The configured head's loss and read-out (`losses`)."""
  lo, hi = config.mos_range
  keys = dict(weight_key="valid")
  if config.head == "regression":
    loss = losses.get_loss("regression", mos_key="label", **keys,
                           **config.loss)
    score = losses.get_score_fn("regression")
  elif config.head == "distribution":
    loss = losses.get_loss("distribution", dist_key="distribution", **keys,
                           **config.loss)
    score = losses.get_score_fn("distribution")
  elif config.head == "levels":
    loss = losses.get_loss("levels", mos_key="label", lo=lo, hi=hi, **keys,
                           **config.loss)
    score = losses.get_score_fn("levels", lo=lo, hi=hi)
  else:
    raise ValueError(f"Unknown head {config.head!r}; use regression, "
                     "distribution or levels.")
  return loss, score


class MusiqTask(Task):
  """MUSIQ (Ke et al., ICCV 2021) on multi-scale patch tokens."""
  name = "musiq"
  batch_keys = ("patches", "spatial", "scale", "mask", "label", "valid",
                "distribution")

  def __init__(self, config):
    super().__init__(config)
    from musiq_jax.models import musiq  # pylint: disable=g-import-not-at-top
    self.train_pp = pp_config(config, train=True)
    self.eval_pp = pp_config(config, train=False)
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]
    self.module = musiq.Model(num_scales=self.train_pp.num_scales, dtype=dtype,
                              head_bias_init=head_bias_init(config),
                              **config.model)
    head_loss, self.score_fn = make_loss_and_score(config)
    self._head_loss = head_loss

  def example_batch(self, n: int = 1) -> Dict[str, np.ndarray]:
    cfg = self.train_pp
    out = {"patches": np.zeros([n, 1, cfg.token_dim], np.float32),
           "spatial": np.zeros([n, 1], np.int32),
           "scale": np.zeros([n, 1], np.int32),
           "mask": np.ones([n, 1], np.int32),
           "label": np.zeros([n], np.float32),
           "valid": np.ones([n], np.float32)}
    if self.config.head == "distribution":
      out["distribution"] = np.full([n, self.config.model.num_classes],
                                    1.0 / self.config.model.num_classes,
                                    np.float32)
    return out

  def init_params(self, rng):
    tokens = {k: v for k, v in self.example_batch().items()
              if k in ("patches", "spatial", "scale", "mask")}
    return self.module.init(rng, tokens)["params"]

  def apply(self, params, batch, train: bool, rng=None):
    rngs = {"dropout": rng} if train and rng is not None else {}
    return self.module.apply({"params": params}, batch, train=train,
                             rngs=rngs)

  def loss(self, outputs, batch):
    return self._head_loss(outputs, batch), {}

  def eval_scores(self, params, batch):
    return self.score_fn(self.apply(params, batch, train=False))

  def load_pretrained(self, params):
    path = self.config.init.get("pretrained_npz")
    if not path:
      return params, None
    return checkpoint.load_params(
        path, params, dont_load=tuple(self.config.init.dont_load)), path

  def _dataset(self, split: str, train: bool, skip_batches: int = 0):
    from musiq_jax import input_pipeline  # pylint: disable=g-import-not-at-top
    c = self.config
    batch = c.input.batch_size if train else c.input.eval_batch_size
    if batch % jax.process_count():
      raise ValueError(f"batch size {batch} is not divisible by the "
                       f"{jax.process_count()} processes")
    return input_pipeline.get_dataset(
        c.dataset, split, data_dir=c.data_dir,
        pp_config=self.train_pp if train else self.eval_pp,
        batch_size=batch // jax.process_count(), train=train,
        batching=c.input.batching, max_seq_len=c.input.max_seq_len,
        num_buckets=c.input.num_buckets,
        shuffle_buffer=c.input.shuffle_buffer, seed=c.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        skip_batches=skip_batches, label_key=c.label_key,
        cache=c.input.cache, crop_min_fraction=c.input.crop_min_fraction,
        channel_shuffle=c.input.channel_shuffle)

  def train_batches(self, skip_batches: int = 0) -> Iterator:
    return iter(self._dataset(self.config.train_split, True, skip_batches))

  def eval_batches(self, split: str) -> Iterator:
    return iter(self._dataset(split, False))

  def model_name(self) -> str:
    c = self.config
    return f"{c.model_name}/{c.model_size}/{c.head}"

  def export_info(self) -> Dict[str, Any]:
    """best.json: model, preprocessing and read-out, as `scorer` reads them.

    Its preprocessing keeps every native patch (-1): a cap on the native
    tokens is a training (or evaluation) setting, recorded as
    `train_/eval_max_seq_len_from_original_res`, not a scoring default.
    """
    model_cfg = dict(self.config.model)
    model_cfg["num_scales"] = self.eval_pp.num_scales
    scoring_pp = self.eval_pp.to_dict()
    if scoring_pp["max_seq_len_from_original_res"] is not None:
      scoring_pp["max_seq_len_from_original_res"] = -1
    return {
        "task": "musiq", "model": model_cfg, "preprocessing": scoring_pp,
        "train_max_seq_len_from_original_res":
            self.train_pp.max_seq_len_from_original_res,
        "eval_max_seq_len_from_original_res":
            self.eval_pp.max_seq_len_from_original_res,
        "head": self.config.head,
        "mos_range": list(self.config.mos_range)}


# ----------------------------------------------------------------------------
# Crop baselines.
# ----------------------------------------------------------------------------
def fit_crop(image: np.ndarray, crop_size: int) -> np.ndarray:
  """Upscales (keeping the aspect) only images smaller than the crop.

  RankIQA crops instead of resizing; a few synthetic contents have a shorter
  side below the crop at small max_side, and those alone are enlarged
  (bilinear, rounded back to uint8).
  """
  h, w = image.shape[:2]
  scale = max(1.0, crop_size / min(h, w))
  if scale <= 1.0:
    return image
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size = [int(np.ceil(h * scale)), int(np.ceil(w * scale))]
  out = tf.image.resize(tf.constant(image), size, method="bilinear")
  return np.asarray(tf.cast(tf.clip_by_value(tf.round(out), 0, 255),
                            tf.uint8))


def image_seed(image: np.ndarray) -> int:
  """A seed from the pixels, so an image's eval crops do not depend on its
  position in a split (the scorer meets it alone)."""
  return zlib.crc32(np.ascontiguousarray(image).tobytes()) ^ (
      image.shape[0] << 16 | image.shape[1])


def eval_crops(config, image: np.ndarray) -> np.ndarray:
  """The evaluation crops of one (fitted) image, [K, S, S, 3].

  `eval.sampler`: "random" (RankIQA's protocol: `eval.num_crops` uniform
  windows from rng (seed, pixels)) or "liqe" (LIQE's: shorter side resized
  to `eval.resize` when both sides reach it, then `eval.num_crops` evenly
  spaced windows of the stride-`eval.stride` unfold grid).
  """
  from musiq_jax import rankiqa  # pylint: disable=g-import-not-at-top
  e = config.eval
  sampler = e.get("sampler", "random")
  if sampler == "random":
    return rankiqa.random_crops(
        image, config.crop_size, e.num_crops,
        rng=np.random.default_rng([config.seed, image_seed(image)]))
  if sampler == "liqe":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from musiq_jax.clip import preprocess  # pylint: disable=g-import-not-at-top
    op = preprocess.compose(
        preprocess.get_liqe_adaptive_resize(e.get("resize", 768),
                                            config.crop_size),
        preprocess.get_liqe_crops(e.num_crops, config.crop_size,
                                  e.get("stride", 32)))
    return np.asarray(op(tf.constant(image)))
  raise ValueError(f"eval.sampler={sampler!r}; use 'random' or 'liqe'.")


def crop_batches(config, images, batch_size: int):
  """(pixels, label, image_id) records -> [B, K, S, S, 3] batches, padded
  to B with `valid` 0 (so every batch has one shape)."""
  pending = []

  def flush():
    n = len(pending)
    pad = [pending[-1]] * (batch_size - n)
    rows = pending + pad
    out = {"image": np.stack([r[0] for r in rows]),
           "label": np.asarray([r[1] for r in rows], np.float32),
           "valid": np.asarray([1.0] * n + [0.0] * len(pad), np.float32),
           "image_id": np.asarray([r[2] for r in rows])}
    pending.clear()
    return out

  for pixels, label, iid in images:
    crops = eval_crops(config, fit_crop(pixels, config.crop_size))
    pending.append((crops, label, iid))
    if len(pending) == batch_size:
      yield flush()
  if pending:
    yield flush()


class CropTask(Task):
  """Crop baselines trained on MOS (`crop_models.get_crop_model`)."""
  name = "crops"
  batch_keys = ("image", "label", "valid", "distortion", "distortion_mask",
                "level", "group", "weight", "task_weights")

  def __init__(self, config):
    super().__init__(config)
    from musiq_jax import crop_models  # pylint: disable=g-import-not-at-top
    self.model = crop_models.get_crop_model(config)
    self.module = self.model.module
    self._dwa = _DwaState(config, self.model) if self.name == "crops" else None
    self.select_by_validation = config.num_train_steps > 0

  # -- model
  def _input_shape(self):
    s = self.config.crop_size
    return (1, 1, s, s, 3) if self.model.multi_crop else (1, s, s, 3)

  def example_batch(self, n: int = 1) -> Dict[str, np.ndarray]:
    c = self.config
    s = c.crop_size
    k = int(c.input.get("crops_per_image", 1))
    shape = (n, k, s, s, 3) if k > 1 else (n, s, s, 3)  # As train_batches.
    out = {"image": np.zeros(shape, np.uint8),
           "label": np.zeros([n], np.float32),
           "valid": np.ones([n], np.float32)}
    if c.input.get("distortion_key"):
      out["distortion"] = np.zeros([n], np.int32)
      out["distortion_mask"] = np.zeros([n], np.float32)
    if self._dwa is not None and self._dwa.enabled:
      out["task_weights"] = self._dwa.weights()
    return out

  def init_params(self, rng):
    images = jnp.zeros(self._input_shape(), jnp.uint8)
    kwargs = {"train": False} if self.model.takes_train else {}
    return self.module.init(rng, self.model.normalize(images),
                            *self.model.extra_inputs, **kwargs)["params"]

  def load_pretrained(self, params):
    c = self.config
    sources = [c.init[k] for k in ("clip_weights", "musiq_npz")
               if c.init.get(k)]
    if sources and self.model.init_hook is not None:
      params = self.model.init_hook(params, c)
    path = c.init.get("pretrained_npz")
    if c.init.get("pretrained_workdir"):
      path = os.path.join(c.init.pretrained_workdir, "best.npz")
    if path:
      if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: run the pretraining stage first (its workdir "
            "holds best.npz), or fix init.pretrained_workdir.")
      params = checkpoint.load_params(path, jax.device_get(params),
                                      dont_load=tuple(c.init.dont_load))
      sources.append(path)
    return params, (", ".join(sources) or None)

  def frozen_mask(self, params):
    return self.model.frozen_mask(params) if self.model.has_frozen else None

  def apply(self, params, batch, train: bool, rng=None):
    return self.model.apply(params, batch["image"], train=train,
                            rng=rng if train else None)

  def loss(self, outputs, batch):
    return self.model.loss(outputs, batch)

  def eval_scores(self, params, batch):
    """[B, K, S, S, 3] -> [B]: multi-crop modules pool inside (LIQE averages
    logits), scalar ones score B*K crops and `eval.reduce` pools."""
    images = batch["image"]
    if self.model.multi_crop:
      return self.model.score(self.model.apply(params, images))
    b, k = images.shape[:2]
    scores = self.model.score(self.model.apply(
        params, images.reshape((b * k,) + images.shape[2:])))
    scores = jnp.reshape(scores, (b, k))
    reduce = self.config.eval.get("reduce", "mean")
    if reduce == "median":
      return jnp.median(scores, axis=1)
    if reduce != "mean":
      raise ValueError(f"eval.reduce={reduce!r}; use 'mean' or 'median'.")
    return jnp.mean(scores, axis=1)

  # -- data
  def _split(self, split: str, shuffle: bool):
    from musiq_jax import input_pipeline  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    c = self.config
    builder = input_pipeline.get_builder(c.dataset, c.data_dir)
    ds = builder.as_dataset(
        split, shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=c.seed, try_autocache=False),
        decoders={"image": tfds.decode.SkipDecoding()})
    return builder, ds

  def train_batches(self, skip_batches: int = 0) -> Iterator:
    """Endless shuffled batches of random crops + flips of the train split.

    With `input.crops_per_image` K > 1 (LIQE: 3) images are [B, K, S, S, 3],
    K crops of one photo. Crop windows and flips of the k-th example of the
    stream are stateless functions of (seed, k) and the shuffle is seeded,
    so the stream is the same in every run and every process (each feeds
    its rows of the global batch); a resumed run skips what it has seen.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from musiq_jax import crop_models  # pylint: disable=g-import-not-at-top
    from musiq_jax import image_io  # pylint: disable=g-import-not-at-top
    from musiq_jax import input_pipeline  # pylint: disable=g-import-not-at-top
    c = self.config
    builder, ds = self._split(c.train_split, shuffle=True)
    s = c.crop_size
    k = int(c.input.get("crops_per_image", 1))
    keys = ["image", c.label_key]
    dist_key = c.input.get("distortion_key")
    if dist_key:
      index, mask = crop_models.distortion_lookup(
          builder.info.features[dist_key].names)
      index, mask = tf.constant(index), tf.constant(mask)
      keys.append(dist_key)
    ds = ds.map(input_pipeline.as_graph(
        lambda e: {k_: e[k_] for k_ in keys})).cache()
    ds = ds.shuffle(c.input.shuffle_buffer, seed=c.seed,
                    reshuffle_each_iteration=True).repeat()

    def fit(image):
      shape = tf.shape(image)
      h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
      scale = tf.maximum(1.0, s / tf.minimum(h, w))

      def enlarge():
        size = tf.cast(tf.math.ceil(tf.stack([h, w]) * scale), tf.int32)
        out = tf.image.resize(image, size, method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

      return tf.cond(scale > 1.0, enlarge, lambda: image)

    def one_crop(image, seed):
      image = tf.image.stateless_random_crop(image, [s, s, 3], seed=seed)
      if c.input.get("flip", True):
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
      return image

    def augment(i, e):
      image = fit(image_io.tf_decode(e["image"]))
      seed = tf.stack([tf.constant(c.seed, tf.int64), i])
      if k == 1:
        crops = one_crop(image, seed)
      else:
        crops = tf.stack([
            one_crop(image, seed + tf.constant([0, 1], tf.int64) * j * 7919)
            for j in range(k)])
      out = {"image": crops, "label": tf.cast(e[c.label_key], tf.float32),
             "valid": tf.constant(1.0, tf.float32)}
      if dist_key:
        d = tf.cast(e[dist_key], tf.int32)
        out["distortion"] = tf.gather(index, d)
        out["distortion_mask"] = tf.gather(mask, d)
      return out

    ds = ds.enumerate().map(input_pipeline.as_graph(augment),
                            num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(c.input.batch_size, drop_remainder=True)
    if skip_batches:
      ds = ds.skip(skip_batches)
    for batch in ds.prefetch(2).as_numpy_iterator():
      yield _process_rows(batch)

  def eval_batches(self, split: str) -> Iterator:
    """Fixed-shape [B, K, S, S, 3] batches of a split's eval crops."""
    from musiq_jax import image_io  # pylint: disable=g-import-not-at-top
    c = self.config
    _, ds = self._split(split, shuffle=False)
    label_key = c.label_key

    def records():
      for e in ds.as_numpy_iterator():
        iid = e["image_id"]
        iid = iid.decode() if isinstance(iid, bytes) else str(iid)
        yield (image_io.decode_image(e["image"], iid), float(e[label_key]),
               iid)

    size = int(c.input.get("eval_batch_size", 8))
    for batch in crop_batches(c, records(), size):
      yield _process_rows(batch)

  # -- LIQE's loss weighting (host side)
  def prepare_batch(self, step, batch):
    if self._dwa is not None and self._dwa.enabled:
      batch = dict(batch, task_weights=self._dwa.weights())
    return batch

  def observe(self, step, out):
    if self._dwa is not None and self._dwa.enabled:
      self._dwa.update(step, out)

  def host_state(self):
    return self._dwa.state() if self._dwa is not None and \
        self._dwa.enabled else {}

  def load_host_state(self, state):
    if self._dwa is not None and self._dwa.enabled and state:
      self._dwa.load(state)

  def model_name(self) -> str:
    return f"{self.model.name}/{self.config.get('stage', 'finetune')}"

  def export_info(self) -> Dict[str, Any]:
    c = self.config
    return {"task": self.name, "stage": c.get("stage", "finetune"),
            "model_name": c.model_name, "model": c.model.to_dict(),
            "crop_size": c.crop_size, "mos_range": list(c.mos_range),
            "config": c.to_dict()}


class RankTask(CropTask):
  """RankIQA's ranking stage: no MOS; the last step is kept."""
  name = "rank"

  def __init__(self, config):
    super().__init__(config)
    if self.model.multi_crop:
      raise ValueError(f"{self.model.name} has no scalar output to rank; the "
                       "rank stage trains small_cnn or glint.")
    self._rank_loss = losses.get_loss(
        "ranking", level_key="level", group_key="group", weight_key="weight",
        **self.config.loss)
    self.select_by_validation = False

  def example_batch(self, n: int = 1):
    s = self.config.crop_size
    return {"image": np.zeros((n, s, s, 3), np.uint8),
            "level": np.zeros([n], np.int32),
            "group": np.zeros([n], np.int32),
            "weight": np.ones([n], np.float32)}

  def loss(self, outputs, batch):
    return self._rank_loss(outputs, batch), {}

  def train_batches(self, skip_batches: int = 0) -> Iterator:
    """RankIQA batches from the train contents' pristine photos; batch i is
    a pure function of (seed, i), so a resumed run starts at its step."""
    from musiq_jax import rankiqa  # pylint: disable=g-import-not-at-top
    c = self.config
    r = c.rank
    images = [fit_crop(im, c.crop_size) for im in _pristine_photos(c)]
    gen = rankiqa.RankedBatchGenerator(images, rankiqa.RankBatchConfig(
        distortion_names=tuple(r.distortion_names),
        types_per_batch=r.types_per_batch,
        contents_per_type=r.contents_per_type, levels=tuple(r.levels),
        crop_size=c.crop_size, group_by=r.group_by, seed=c.seed))
    logging.info("Rank batches of %d crops from %d pristine photos.",
                 gen.config.batch_size, len(images))
    for batch in gen.as_tf_dataset(start_index=skip_batches,
                                   prefetch=2).as_numpy_iterator():
      yield _process_rows({k: batch[k] for k in
                           ("image", "level", "group", "weight")})


def _pristine_photos(config):
  """The pristine photos of `rank.pristine_split` of the synthetic dataset.

  A `synthetic_iqa` config with fixed validation/test contents (e.g.
  "demo") uses its own split (its training photos and extra training
  photos); the others the builder's seeded random split (`rank.split_seed`).
  """
  from musiq_jax import rankiqa  # pylint: disable=g-import-not-at-top
  r = config.rank
  name, _, cfg_name = config.dataset.partition("/")
  if name == "synthetic_iqa" and r.pristine_split == "train":
    from musiq_jax.datasets import synthetic_iqa  # pylint: disable=g-import-not-at-top
    configs = synthetic_iqa.SyntheticIqa.BUILDER_CONFIGS
    b = next((b for b in configs if b.name == cfg_name), configs[0])
    if b.validation_contents:
      held = set(b.validation_contents) | set(b.test_contents)
      names = [n for n in tuple(b.contents or synthetic_iqa.CONTENTS) +
               tuple(b.extra_train_contents)
               if n not in held]
      return rankiqa.synthetic_pristine_images(max_side=r.max_side,
                                               contents=names)
  return rankiqa.synthetic_pristine_images(
      split=r.pristine_split, max_side=r.max_side, seed=r.split_seed)


class _DwaState:
  """LIQE's Dynamic Weight Averaging of its task losses, on the host.

  On when `config.loss.dwa` is set and the model has several tasks; the
  weights change once per `steps_per_epoch` steps (the mean task losses of
  the last two epochs, `crop_models.dwa_weights`) and reach the jitted step
  as `batch["task_weights"]`, so nothing recompiles. Its history is saved
  with the checkpoints, so a resumed run weights as an uninterrupted one.
  """

  def __init__(self, config, model):
    loss = config.get("loss")
    self.tasks = [t for t in model.task_names
                  if t != "distortion" or config.input.get("distortion_key")]
    self.enabled = bool(model.task_names) and bool(
        loss is not None and loss.get("dwa", False)) and len(self.tasks) > 1
    if self.enabled:
      self.alpha = float(loss.dwa_alpha)
      self.temperature = float(loss.dwa_temperature)
      self.epoch = int(config.get("steps_per_epoch") or 100)
    self.history, self.current, self._w = [], [], None

  def weights(self) -> np.ndarray:
    from musiq_jax import crop_models  # pylint: disable=g-import-not-at-top
    if self._w is None:
      self._w = crop_models.dwa_weights(
          self.history, self.alpha, self.temperature) if self.history \
          else np.full(len(self.tasks), self.alpha / len(self.tasks),
                       np.float32)
    return self._w

  def update(self, step: int, out) -> None:
    self.current.append([out[t] for t in self.tasks])  # device arrays
    if step % self.epoch == 0:
      mean = np.mean(np.asarray(jax.device_get(self.current)), axis=0)
      self.history.append(mean.tolist())
      self.current, self._w = [], None

  def state(self):
    return {"history": self.history,
            "current": np.asarray(jax.device_get(self.current),
                                  np.float64).tolist()}

  def load(self, state):
    self.history = [list(h) for h in state["history"]]
    self.current = [np.asarray(v, np.float32) for v in state["current"]]
    self._w = None


# ----------------------------------------------------------------------------
# Scoring a trained crop workdir (`scorer.load_scorer(workdir=W)`).
# ----------------------------------------------------------------------------
class CropScorer:
  """Scores images as a crop task's evaluation did (its crops and pooling).

  Built by `load_crop_scorer` from a workdir's `best.npz` and `best.json`
  (which holds the training config); `score(images)` returns
  `scorer.ScoreResult`s like the MUSIQ `Scorer`. An image's eval crops
  depend on its pixels only (`image_seed`), so its score does not depend on
  which other images are scored with it.
  """

  def __init__(self, task: CropTask, params, source: str,
               batch_size: int = 8):
    self.task = task
    self.config = task.config
    self.params = jax.device_put(params)
    self.source = source
    self.batch_size = max(1, int(batch_size))
    self._scores = jax.jit(task.eval_scores)

  def decode(self, image, name: Optional[str] = None) -> np.ndarray:
    from musiq_jax import image_io  # pylint: disable=g-import-not-at-top
    if isinstance(image, np.ndarray):
      if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise image_io.ImageError(
            name or "<array>", f"expected an [h, w, 3] uint8 array, got "
            f"{image.dtype} {image.shape}")
      return image
    if isinstance(image, (bytes, bytearray)):
      return image_io.decode_image(bytes(image), name or "<bytes>")
    return image_io.read_image(image)

  def score(self, images, names=None) -> list:
    from musiq_jax import image_io  # pylint: disable=g-import-not-at-top
    from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top
    images = list(images)
    names = list(names) if names is not None else [
        f"<array {i}>" if isinstance(im, np.ndarray) else
        "<bytes>" if isinstance(im, (bytes, bytearray)) else os.fspath(im)
        for i, im in enumerate(images)]
    results = [scorer_lib.ScoreResult(image=n) for n in names]
    good = []
    for i, (im, n) in enumerate(zip(images, names)):
      try:
        good.append((self.decode(im, n), 0.0, i))
      except (image_io.ImageError, OSError, ValueError) as e:
        results[i].error = str(e)
    for batch in crop_batches(self.config, good, self.batch_size):
      scores = np.asarray(self._scores(
          self.params, {"image": batch["image"]}), np.float64)
      for j in np.flatnonzero(batch["valid"] > 0):
        results[int(batch["image_id"][j])].score = float(scores[j])
    return results


  num_devices = 1  # `predict`'s summary line; crops score on one device.

  def score_batches(self, images, names=None):
    """Lazily scores a stream: yields the results of each `batch_size`
    images (in input order), as `Scorer.score_batches` does, so
    `predict`'s streamed output, resume and shards serve crop workdirs."""
    images = iter(images)
    names = iter(names) if names is not None else None
    while True:
      chunk = list(itertools.islice(images, self.batch_size))
      if not chunk:
        return
      chunk_names = (None if names is None else
                     list(itertools.islice(names, len(chunk))))
      yield self.score(chunk, chunk_names)

  def score_iter(self, images, names=None):
    """One result at a time, in input order."""
    for results in self.score_batches(images, names):
      yield from results


def load_crop_scorer(ckpt_path: str, info: Mapping[str, Any],
                     batch_size: Optional[int] = None) -> CropScorer:
  """A `CropScorer` from a crop workdir's best.npz and its best.json."""
  if "config" not in info:
    raise checkpoint.CheckpointError(
        f"{checkpoint.sidecar_path(ckpt_path)}: a '{info.get('task')}' "
        "export without its training config; retrain with this version.")
  config = ml_collections.ConfigDict(info["config"])
  task = get_task(config)
  init = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
  init = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), init)
  params = checkpoint.load_params(ckpt_path, init)
  return CropScorer(task, params, ckpt_path, batch_size or int(
      config.input.get("eval_batch_size", 8)))
