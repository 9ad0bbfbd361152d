"""tf.data input pipeline: IQA TFDS datasets -> batches of multi-scale tokens.

Order (flax imagenet / big_vision style): read this process's shard -> [cache]
-> [train: shuffle, repeat] -> number every example of the stream -> group into
batches of *light* records (encoded bytes + labels, no pixels yet) -> [skip
batches] -> decode (`image_io.tf_decode`), [train: random crop (when
`crop_min_fraction` < 1), random horizontal flip, (when `channel_shuffle`)
random order of the R, G, B channels],
multi-scale tokens (`preprocessing.tf_preprocess_image`: the scorer's own
ops, run as TF kernels), pad/cut to the batch's length -> batch -> prefetch.

Batching modes:
* `padded`: every example padded/cut to one length (`max_seq_len`, or the
  longest example in a sample of the split), as the original MUSIQ; one shape.
* `bucketed`: examples are grouped by token count (computed from the stored
  height/width, before decoding) into at most `num_buckets` buckets; each batch
  is padded to its bucket's upper bound, so jit compiles at most `num_buckets`
  programs. Bounds minimise the padding of a sample of the split's token
  lengths (an exact dynamic programme over the distinct lengths), or are given.

Evaluation (`train=False`) visits every example of the shard exactly once: the
last (per bucket) partial batch is filled with dummy examples whose `valid` is 0
and whose `mask` is all 0, so metrics and losses can ignore them.

Resuming: the training stream is a deterministic function of (dataset, split,
seed, process_index, process_count, batch settings); flips use stateless
per-position seeds. `skip_batches=n` restores the position after `n` batches
(skipping happens on light records, before decoding, so it is cheap). Save the
step with the checkpoint and pass it back as `skip_batches`.

Batches are dicts of numpy arrays: `patches` float32 [B, L, P*P*3], `spatial`,
`scale`, `mask` int32 [B, L], `label` float32 [B], `valid` float32 [B],
`image_id` bytes [B]; plus `distribution` float32 [B, 10] (AVA) and
`content_id`, `distortion_type`, `distortion_level` int32 [B] when the dataset
has them.
"""

from __future__ import annotations

import io
import math
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from musiq_jax import image_io
from musiq_jax import preprocessing


def as_graph(fn):
  """`fn` for tf.data as written, without autograph's source rewrite.

  The pipeline's functions (and the preprocessing they call) branch on
  Python values only (the config, the split), never on tensors, so
  autograph's conversion changes nothing but its cost: it re-parsed every
  function reached from `make_dataset` each time a pipeline was built,
  ~18 s of a 6-step tiny training run's 35 s (cProfile).
  """
  return tf.autograph.experimental.do_not_convert(fn)


OPTIONAL_INT_KEYS = ("content_id", "distortion_type", "distortion_level")
BATCHING_MODES = ("padded", "bucketed")


def get_builder(builder_name: str, data_dir: Optional[str]):
  """The TFDS builder (name may include a config: "synthetic_iqa/small")."""
  import musiq_jax.datasets  # pylint: disable=g-import-not-at-top,unused-import
  return tfds.builder(builder_name, data_dir=data_dir, try_gcs=False)


def process_split(split: str, process_index: int = 0,
                  process_count: int = 1) -> str:
  """This process's disjoint part of `split` (all parts cover it)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in "
                     f"[0, {process_count}).")
  if process_count == 1:
    return split
  return tfds.even_splits(split, n=process_count,
                          drop_remainder=False)[process_index]


def get_num_examples(builder_name: str, split: str, *, data_dir=None,
                     process_index: int = 0, process_count: int = 1) -> int:
  """Number of examples of `split` in this process's shard."""
  b = get_builder(builder_name, data_dir)
  return b.info.splits[process_split(split, process_index,
                                     process_count)].num_examples


# ----------------------------------------------------------------------------
# Token lengths and bucket bounds.
# ----------------------------------------------------------------------------
def token_lengths(heights, widths, cfg: preprocessing.PreprocessConfig
                  ) -> np.ndarray:
  """Token count of each (h, w) image, as `preprocessing.seq_len`."""
  return np.array([preprocessing.seq_len(int(h), int(w), cfg)
                   for h, w in zip(heights, widths)], np.int64)


def _tf_seq_len(h, w, cfg: preprocessing.PreprocessConfig):
  """`preprocessing.seq_len` in TF, from the stored height/width."""
  fixed = sum(math.ceil(l / cfg.patch_stride)**2 for l in cfg.sorted_lengths)
  native = cfg.max_seq_len_from_original_res
  if native is None:
    return tf.constant(fixed, tf.int32)
  if native >= 0:
    return tf.constant(fixed + native, tf.int32)
  s = cfg.patch_stride
  return fixed + ((h + s - 1) // s) * ((w + s - 1) // s)


def sample_lengths(builder, split: str, cfg: preprocessing.PreprocessConfig,
                   max_examples: int = 4096) -> np.ndarray:
  """Token lengths of up to `max_examples` examples of `split` (no decoding)."""
  ds = builder.as_dataset(split, shuffle_files=False, decoders={
      "image": tfds.decode.SkipDecoding()})
  ds = ds.take(max_examples).map(as_graph(lambda e: (e["height"], e["width"])))
  hw = np.array(list(ds.batch(1024).as_numpy_iterator()) or
                [(np.zeros(0), np.zeros(0))], dtype=object)
  heights = np.concatenate([b[0] for b in hw])
  widths = np.concatenate([b[1] for b in hw])
  return token_lengths(heights, widths, cfg)


def bucket_boundaries(lengths: Sequence[int], num_buckets: int,
                      max_len: Optional[int] = None) -> List[int]:
  """Upper bounds of <= num_buckets buckets minimising total padding.

  Exact: a dynamic programme over the distinct lengths (each bound is one of
  them; the longest is always a bound). Lengths above `max_len` count as
  `max_len` (those examples are cut).
  """
  lengths = np.asarray(lengths, np.int64)
  if lengths.size == 0:
    raise ValueError("No token lengths to compute bucket bounds from; is the "
                     "split empty?")
  if max_len is not None:
    lengths = np.minimum(lengths, max_len)
  vals, counts = np.unique(lengths, return_counts=True)
  n = len(vals)
  if n <= num_buckets:
    return [int(v) for v in vals]
  cum_c = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)
  cum_s = np.concatenate([[0], np.cumsum(counts * vals)]).astype(np.float64)

  def cost(i, j):  # Padding when vals[i..j] all pad to vals[j]; i is a vector.
    return vals[j] * (cum_c[j + 1] - cum_c[i]) - (cum_s[j + 1] - cum_s[i])

  inf = np.inf
  dp = np.array([cost(np.array([0]), j)[0] for j in range(n)])
  choice = [np.zeros(n, np.int64)]
  for _ in range(1, num_buckets):
    new = np.full(n, inf)
    arg = np.zeros(n, np.int64)
    for j in range(n):
      i = np.arange(1, j + 1)  # The last bucket covers vals[i..j].
      if i.size == 0:
        new[j] = dp[j]
        continue
      c = dp[i - 1] + cost(i, j)
      k = int(np.argmin(c))
      new[j], arg[j] = (c[k], i[k]) if c[k] < dp[j] else (dp[j], -1)
    dp = new
    choice.append(arg)
  bounds, j = [], n - 1
  for level in range(num_buckets - 1, -1, -1):
    if j < 0:
      break
    i = choice[level][j] if level > 0 else 0
    if i == -1:  # No extra bucket used at this level.
      continue
    bounds.append(int(vals[j]))
    j = i - 1
  return sorted(bounds)


# ----------------------------------------------------------------------------
# The pipeline.
# ----------------------------------------------------------------------------
def _dummy_png() -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def _light_record(e, keys: Dict[str, str], label_key: str):
  """TFDS example -> the fields the pipeline carries before decoding."""
  out = {
      "encoded": e["image"],
      "height": tf.cast(e["height"], tf.int32),
      "width": tf.cast(e["width"], tf.int32),
      "label": tf.cast(e[label_key], tf.float32),
      "image_id": e["image_id"],
      "valid": tf.constant(1.0, tf.float32),
  }
  if "distribution" in keys:
    out["distribution"] = tf.cast(e["distribution"], tf.float32)
  for k in OPTIONAL_INT_KEYS:
    if k in keys:
      out[k] = tf.cast(e[k], tf.int32)
  return out


def _dummy_record(spec) -> Dict[str, tf.Tensor]:
  """A 1x1 black image with valid 0, matching the light record `spec`."""
  d = {}
  for k, s in spec.items():
    if k == "encoded":
      d[k] = tf.constant(_dummy_png())
    elif k in ("height", "width"):
      d[k] = tf.constant(1, tf.int32)
    else:
      d[k] = tf.zeros(s.shape, s.dtype)
  return d


def _pad_light_batch(batch, batch_size: int, dummy):
  """Fills a partial light batch up to `batch_size` with dummy records."""
  missing = batch_size - tf.shape(batch["valid"])[0]
  out = {}
  for k, v in batch.items():
    if k == "target_len":
      fill = tf.fill([missing], v[0])
    else:
      fill = tf.repeat(dummy[k][None], missing, axis=0)
    out[k] = tf.concat([v, fill], axis=0)
  return out


def _pad_to(features, length):
  """Pads (mask 0) or cuts token features to a (tensor) `length`."""
  out = {}
  for k, v in features.items():
    pad = tf.maximum(length - tf.shape(v)[0], 0)
    paddings = [[0, pad]] + [[0, 0]] * (len(v.shape) - 1)
    out[k] = tf.pad(v, paddings)[:length]
  return out


def make_dataset(builder_name: str, split: str, *, data_dir=None,
                 pp_config: preprocessing.PreprocessConfig, batch_size: int,
                 train: bool, batching: str = "padded",
                 max_seq_len: Optional[int] = None, num_buckets: int = 8,
                 bucket_bounds: Optional[Sequence[int]] = None,
                 shuffle_buffer: int = 1024, seed: int = 0,
                 process_index: int = 0, process_count: int = 1,
                 repeat: Optional[int] = None, skip_batches: int = 0,
                 label_key: str = "mos", cache: bool = False,
                 prefetch: int = 2, length_sample_size: int = 4096,
                 crop_min_fraction: float = 1.0,
                 channel_shuffle: bool = False,
                 num_parallel_calls: int = tf.data.AUTOTUNE
                 ) -> tf.data.Dataset:
  """The batched `tf.data.Dataset` (see `get_dataset` for the arguments)."""
  if batching not in BATCHING_MODES:
    raise ValueError(f"batching={batching!r}; use one of {BATCHING_MODES}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if not 0.0 < crop_min_fraction <= 1.0:
    raise ValueError(f"crop_min_fraction must be in (0, 1], got "
                     f"{crop_min_fraction}.")
  builder = get_builder(builder_name, data_dir)
  shard = process_split(split, process_index, process_count)
  keys = builder.info.features.keys()
  if label_key not in keys:
    raise ValueError(f"{builder_name} has no feature {label_key!r} to use as "
                     f"label; features: {sorted(keys)}.")

  # Lengths / bucket bounds from the stored sizes of a sample of the split.
  if batching == "padded" and max_seq_len is None:
    max_seq_len = int(np.max(sample_lengths(builder, shard, pp_config,
                                            length_sample_size)))
  if batching == "bucketed" and bucket_bounds is None:
    bucket_bounds = bucket_boundaries(
        sample_lengths(builder, shard, pp_config, length_sample_size),
        num_buckets, max_seq_len)
  if batching == "bucketed":
    bucket_bounds = sorted(int(b) for b in bucket_bounds)
    if max_seq_len is not None:
      bucket_bounds = sorted({min(b, max_seq_len) for b in bucket_bounds})

  read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
  ds = builder.as_dataset(shard, shuffle_files=train, read_config=read_config,
                          decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.map(as_graph(lambda e: _light_record(e, keys, label_key)),
              num_parallel_calls=num_parallel_calls)
  if cache:
    ds = ds.cache()
  if train:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  epochs = repeat if repeat is not None else (None if train else 1)
  if epochs != 1:
    ds = ds.repeat(epochs)
  dummy = _dummy_record(ds.element_spec)

  # Position in the stream: seeds the flip, so skipping keeps the same flips.
  ds = ds.enumerate().map(as_graph(lambda i, e: {**e, "index": i}))
  dummy["index"] = tf.constant(-1, tf.int64)

  if batching == "padded":
    target = tf.constant(max_seq_len, tf.int32)
    ds = ds.map(as_graph(lambda e: {**e, "target_len": target}))
    ds = ds.batch(batch_size, drop_remainder=train)
  else:
    bounds = tf.constant(bucket_bounds, tf.int32)

    def add_bucket(e):
      n = _tf_seq_len(e["height"], e["width"], pp_config)
      b = tf.minimum(tf.searchsorted(bounds, n[None], side="left")[0],
                     len(bucket_bounds) - 1)
      return {**e, "bucket": tf.cast(b, tf.int64), "target_len": bounds[b]}

    ds = ds.map(as_graph(add_bucket))
    ds = ds.group_by_window(
        key_func=as_graph(lambda e: e["bucket"]),
        reduce_func=as_graph(lambda _, w: w.batch(batch_size)),
        window_size=batch_size)
    ds = ds.map(as_graph(
        lambda b: {k: v for k, v in b.items() if k != "bucket"}))
    if train:
      ds = ds.filter(as_graph(
          lambda b: tf.shape(b["valid"])[0] == batch_size))
  dummy["target_len"] = tf.constant(0, tf.int32)
  if not train:
    ds = ds.map(as_graph(lambda b: _pad_light_batch(b, batch_size, dummy)))
  if skip_batches:
    ds = ds.skip(skip_batches)

  def process(e):
    image = image_io.tf_decode(e["encoded"])
    if train:
      flip_seed = tf.stack([tf.cast(seed, tf.int64), e["index"]])
      if crop_min_fraction < 1.0:
        # Height and width fractions drawn independently from
        # [crop_min_fraction, 1]; a crop never has more tokens than the
        # whole image, so the batch length computed before decoding holds.
        size = tf.shape(image)[:2]
        frac = tf.random.stateless_uniform(
            [2], seed=flip_seed + [0, 1 << 40], minval=crop_min_fraction,
            maxval=1.0)
        crop = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * frac),
                                  tf.int32), 1)
        image = tf.image.stateless_random_crop(
            image, tf.concat([crop, [3]], 0), seed=flip_seed + [0, 2 << 40])
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
      if channel_shuffle:
        # A uniformly random permutation: the ranks of 3 uniform draws.
        order = tf.argsort(tf.random.stateless_uniform(
            [3], seed=flip_seed + [0, 3 << 40]))
        image = tf.gather(image, order, axis=-1)
    feats = preprocessing.tf_preprocess_image(image, pp_config)
    feats = _pad_to(feats, e["target_len"])
    feats["mask"] = feats["mask"] * tf.cast(e["valid"] > 0, tf.int32)
    out = {k: v for k, v in e.items()
           if k not in ("encoded", "height", "width", "index", "target_len")}
    out.update(feats)
    return out

  ds = ds.unbatch().map(as_graph(process),
                         num_parallel_calls=num_parallel_calls)
  ds = ds.batch(batch_size)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  return ds.prefetch(prefetch)


def get_dataset(builder_name: str, split: str, **kwargs) -> Iterable[
    Dict[str, np.ndarray]]:
  """Batches of numpy arrays for training or evaluation.

  Args:
    builder_name: TFDS name, optionally with config ("synthetic_iqa/small").
    split: TFDS split string ("train", "test", "train[:80%]", ...).
    **kwargs: keyword-only settings:
      data_dir: TFDS data directory (built with `musiq_jax.datasets.build`).
      pp_config: `preprocessing.PreprocessConfig`.
      batch_size: examples per batch (per process).
      train: shuffle, repeat, flip and drop partial batches; else one pass in
        order with the last batches padded by dummy examples (valid 0).
      batching: "padded" or "bucketed".
      max_seq_len: tokens per example in padded mode (default: the longest in
        a sample of the split); in bucketed mode caps the largest bucket.
      num_buckets: at most this many bucket shapes (bucketed mode).
      bucket_bounds: explicit bucket upper bounds (else computed).
      shuffle_buffer, seed: shuffling (seeded, deterministic).
      process_index, process_count: this process's disjoint shard.
      repeat: epochs (None: forever when training, once otherwise).
      skip_batches: batches to skip to resume a training stream.
      label_key: the feature used as `label` (default "mos").
      cache: cache the encoded examples in memory (small datasets).
      crop_min_fraction: training only: below 1, each image is randomly
        cropped to a height and a width fraction drawn from
        [crop_min_fraction, 1] before the multi-scale tokens (augmentation
        for small datasets; 1 = off, the paper's setting).
      channel_shuffle: training only: put each image's R, G, B channels in a
        random order (one of the 6 permutations, uniformly), so a model
        cannot use colour as a cue for quality. It keeps the synthetic_iqa
        label exactly (its SSIM is the mean over channels and its PSNR pools
        them, so permuting the reference and the distorted image alike
        changes neither), but colour is part of quality for real photos:
        off by default, and off in the paper.

  Returns:
    An iterable of dicts of numpy arrays (see the module docstring).
  """
  return tfds.as_numpy(make_dataset(builder_name, split, **kwargs))


def batch_stats(batches: Iterable[Dict[str, np.ndarray]]) -> Dict[str, float]:
  """Real-token fraction, distinct [B, L] shapes and examples of batches."""
  real = total = examples = 0
  shapes = set()
  for b in batches:
    real += int(b["mask"].sum())
    total += b["mask"].size
    examples += int(b["valid"].sum())
    shapes.add(b["mask"].shape)
  return {"real_fraction": real / max(total, 1), "num_shapes": len(shapes),
          "examples": examples}


def iterate(ds: tf.data.Dataset) -> Iterator[Dict[str, np.ndarray]]:
  return iter(tfds.as_numpy(ds))
