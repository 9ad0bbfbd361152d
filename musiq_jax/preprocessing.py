"""Multi-scale MUSIQ preprocessing as small TensorFlow ops.

Every op here works eagerly (prediction) and inside `tf.data` (training and
evaluation): one path for all three. The semantics follow the original MUSIQ
release exactly, because every detail moves a score:

* pixels are scaled to [-1, 1] *before* resizing;
* the aspect-ratio-preserving (ARP) resize uses `tf.image.resize(GAUSSIAN)`
  (TF2 API, no antialias) to `round(h * L / max(h, w))` computed in float32
  with round-half-to-even (`tf.round`);
* patches come from `tf.image.extract_patches(padding="SAME")`, which pads
  with zeros split evenly between the two sides (the smaller half first), not
  only at the right/bottom edge;
* the hashed spatial index of patch (i, j) in a `count_h x count_w` grid is
  `t(i) * G + t(j)` where `t` is the table that the TF1 nearest-neighbour
  resize of `range(G)` produces: `min(floor(float32(i) * float32(G / count)),
  G - 1)`;
* each resized scale is padded (or cut) to `ceil(L / P)**2` tokens; the native
  scale keeps all its patches when `max_seq_len_from_original_res < 0`, is cut
  or padded to that many tokens when >= 0, and is left out when None.

The result is a dict of per-token features instead of the original's one
concatenated `[..., P*P*3 + 3]` tensor (`to_concatenated` converts):
`patches` float32 [N, P*P*3], `spatial` int32 [N], `scale` int32 [N],
`mask` int32 [N] (1 = real token, 0 = padding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

Features = Dict[str, tf.Tensor]
FEATURE_KEYS = ("patches", "spatial", "scale", "mask")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """The preprocessing settings of a MUSIQ model (names as in the original).

  Attributes:
    patch_size: side of a square patch in pixels.
    patch_stride: stride between patches (the original uses patch_size).
    hse_grid_size: G, the side of the hash-based spatial embedding grid.
    longer_side_lengths: longer side of each ARP-resized scale; sorted
      ascending before use, so the scale ids do not depend on the order given.
    max_seq_len_from_original_res: tokens kept from the native resolution:
      < 0 all of them, >= 0 cut/pad to that many, None: no native scale.
  """
  patch_size: int = 32
  patch_stride: int = 32
  hse_grid_size: int = 10
  longer_side_lengths: Tuple[int, ...] = (224, 384)
  max_seq_len_from_original_res: Optional[int] = -1

  @classmethod
  def from_dict(cls, d) -> "PreprocessConfig":
    d = dict(d)
    d["longer_side_lengths"] = tuple(d.get("longer_side_lengths", ()))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"Unknown preprocessing keys {sorted(unknown)}; "
                       f"expected a subset of {sorted(known)}.")
    return cls(**d)

  def to_dict(self):
    d = dataclasses.asdict(self)
    d["longer_side_lengths"] = list(self.longer_side_lengths)
    return d

  @property
  def sorted_lengths(self) -> Tuple[int, ...]:
    return tuple(sorted(self.longer_side_lengths))

  @property
  def num_scales(self) -> int:
    """Number of scale embeddings the model needs (resized + native)."""
    return len(self.longer_side_lengths) + (
        0 if self.max_seq_len_from_original_res is None else 1)

  @property
  def token_dim(self) -> int:
    return self.patch_size * self.patch_size * 3


# ----------------------------------------------------------------------------
# Host-side mirrors of the shape arithmetic (for bucketing, checks and tests).
# They use the same float32 arithmetic as the TF ops below.
# ----------------------------------------------------------------------------
def arp_size(h: int, w: int, longer_side_length: int) -> Tuple[int, int]:
  """(rh, rw) of the original's ARP resize, each at least 1 pixel.

  The original fails on images whose shorter side rounds to 0 pixels (e.g.
  20000x40 at L=224); we clamp to 1 instead, which changes nothing for any
  image the original can score.
  """
  ratio = np.float32(longer_side_length) / np.float32(max(h, w))
  rh = int(np.round(np.float32(h) * ratio))
  rw = int(np.round(np.float32(w) * ratio))
  return max(rh, 1), max(rw, 1)


def hash_table(grid_size: int, count: int) -> np.ndarray:
  """Row (or column) hash table t[0..count) of the original, as int32."""
  scale = np.float32(grid_size) / np.float32(count)
  t = np.floor(np.arange(count, dtype=np.float32) * scale).astype(np.int32)
  return np.minimum(t, grid_size - 1)


def num_patches(h: int, w: int, stride: int) -> int:
  return math.ceil(h / stride) * math.ceil(w / stride)


def scale_lengths(h: int, w: int, cfg: PreprocessConfig) -> Tuple[int, ...]:
  """Tokens each scale contributes (after pad/cut), native scale last."""
  lengths = [math.ceil(l / cfg.patch_stride)**2 for l in cfg.sorted_lengths]
  native = cfg.max_seq_len_from_original_res
  if native is not None:
    lengths.append(num_patches(h, w, cfg.patch_stride) if native < 0 else
                   native)
  return tuple(lengths)


def seq_len(h: int, w: int, cfg: PreprocessConfig) -> int:
  """Total number of tokens of an h x w image (before batch padding)."""
  return sum(scale_lengths(h, w, cfg))


# ----------------------------------------------------------------------------
# TF ops.
# ----------------------------------------------------------------------------
def normalize_value_range(image: tf.Tensor) -> tf.Tensor:
  """uint8-range [0, 255] image -> float32 in [-1, 1], as the original."""
  image = tf.cast(image, tf.float32)
  return image / 255.0 * 2.0 - 1.0


def resize_preserve_aspect_ratio(image: tf.Tensor,
                                 longer_side_length: int) -> tf.Tensor:
  """ARP Gaussian resize of an [h, w, c] float image (original semantics)."""
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  ratio = tf.cast(longer_side_length, tf.float32) / tf.cast(
      tf.maximum(h, w), tf.float32)
  rh = tf.cast(tf.round(tf.cast(h, tf.float32) * ratio), tf.int32)
  rw = tf.cast(tf.round(tf.cast(w, tf.float32) * ratio), tf.int32)
  rh, rw = tf.maximum(rh, 1), tf.maximum(rw, 1)
  return tf.image.resize(image, (rh, rw), method=tf.image.ResizeMethod.GAUSSIAN)


def hashed_spatial_index(grid_size: int, count_h: tf.Tensor,
                         count_w: tf.Tensor) -> tf.Tensor:
  """Hashed spatial index of every patch in raster order, int32 [count_h*count_w].

  Equal to the original's tables from `tf.compat.v1.image.resize(range(G),
  NEAREST_NEIGHBOR)`, i.e. `t(i) = min(floor(float32(i) * float32(G/count)),
  G - 1)`: the paper's `t_i = i * G / (H / P)` rounded down, in float32.
  """

  def table(count):
    scale = tf.cast(grid_size, tf.float32) / tf.cast(count, tf.float32)
    t = tf.floor(tf.cast(tf.range(count), tf.float32) * scale)
    return tf.minimum(tf.cast(t, tf.int32), grid_size - 1)

  t_h, t_w = table(count_h), table(count_w)
  index = t_h[:, None] * grid_size + t_w[None, :]
  return tf.reshape(index, [-1])


def extract_patches(image: tf.Tensor, patch_size: int,
                    patch_stride: int) -> Tuple[tf.Tensor, tf.Tensor,
                                                tf.Tensor]:
  """[h, w, 3] image -> (patches [n, P*P*3], count_h, count_w); SAME padding."""
  p = tf.image.extract_patches(
      image[None], [1, patch_size, patch_size, 1],
      [1, patch_stride, patch_stride, 1], [1, 1, 1, 1],
      padding="SAME")
  count_h, count_w = tf.shape(p)[1], tf.shape(p)[2]
  return tf.reshape(p, [-1, patch_size * patch_size * 3]), count_h, count_w


def pad_or_cut(features: Features, length: int) -> Features:
  """Pads with zeros (mask 0) or cuts every feature to `length` tokens."""
  out = {}
  for k, v in features.items():
    pad = tf.maximum(length - tf.shape(v)[0], 0)
    paddings = [[0, pad]] + [[0, 0]] * (len(v.shape) - 1)
    v = tf.pad(v, paddings)[:length]
    out[k] = tf.ensure_shape(v, [length] + v.shape.as_list()[1:])
  return out


def _scale_features(image, cfg: PreprocessConfig, scale_id: int,
                    max_len: Optional[int]) -> Features:
  patches, count_h, count_w = extract_patches(image, cfg.patch_size,
                                              cfg.patch_stride)
  n = tf.shape(patches)[0]
  feats = {
      "patches": patches,
      "spatial": hashed_spatial_index(cfg.hse_grid_size, count_h, count_w),
      "scale": tf.fill([n], tf.constant(scale_id, tf.int32)),
      "mask": tf.ones([n], tf.int32),
  }
  if max_len is not None and max_len >= 0:
    feats = pad_or_cut(feats, max_len)
  return feats


def get_multiscale_patches(image: tf.Tensor, cfg: PreprocessConfig) -> Features:
  """[h, w, 3] float image in [-1, 1] -> per-token features of all scales.

  Scales are the ARP-resized ones in ascending order of longer side (ids
  0..K-1), then the native resolution (id K) if configured.
  """
  outputs = []
  for scale_id, length in enumerate(cfg.sorted_lengths):
    resized = resize_preserve_aspect_ratio(image, length)
    max_len = math.ceil(length / cfg.patch_stride)**2
    outputs.append(_scale_features(resized, cfg, scale_id, max_len))
  if cfg.max_seq_len_from_original_res is not None:
    outputs.append(
        _scale_features(image, cfg, len(cfg.sorted_lengths),
                        cfg.max_seq_len_from_original_res))
  if not outputs:
    raise ValueError("PreprocessConfig has no scale: give longer_side_lengths "
                     "or max_seq_len_from_original_res.")
  return {k: tf.concat([o[k] for o in outputs], axis=0) for k in FEATURE_KEYS}


def preprocess_image(image_uint8: tf.Tensor, cfg: PreprocessConfig) -> Features:
  """Decoded [h, w, 3] uint8 image -> multi-scale token features."""
  return get_multiscale_patches(normalize_value_range(image_uint8), cfg)


def get_preprocess_fn(cfg: PreprocessConfig):
  """`fn(image_uint8) -> features`, for `tf.data.Dataset.map` or eager use."""
  return lambda image: preprocess_image(image, cfg)


def to_concatenated(features) -> np.ndarray:
  """Features -> the original's `[..., P*P*3 + 3]` float32 layout."""
  extra = [np.asarray(features[k], np.float32)[..., None]
           for k in ("spatial", "scale", "mask")]
  return np.concatenate([np.asarray(features["patches"], np.float32)] + extra,
                        axis=-1)


def from_concatenated(x) -> Dict[str, np.ndarray]:
  """The original's `[..., P*P*3 + 3]` layout -> features."""
  x = np.asarray(x)
  return {
      "patches": x[..., :-3].astype(np.float32),
      "spatial": x[..., -3].astype(np.int32),
      "scale": x[..., -2].astype(np.int32),
      "mask": x[..., -1].astype(np.int32),
  }


def pad_batch(examples: Sequence[Dict[str, np.ndarray]],
              length: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Stacks token features of different lengths, zero-padding (mask 0)."""
  length = length or max(e["mask"].shape[0] for e in examples)
  out = {}
  for k in FEATURE_KEYS:
    first = np.asarray(examples[0][k])
    arr = np.zeros((len(examples), length) + first.shape[1:], first.dtype)
    for i, e in enumerate(examples):
      v = np.asarray(e[k])[:length]
      arr[i, :v.shape[0]] = v
    out[k] = arr
  return out
