"""The TF oracle: MUSIQ preprocessing with TensorFlow's own ops.

This is the original release's computation (google-research `musiq/`),
written with the TF calls it makes: `tf.image.resize(method="gaussian")`
(TF2 API, antialias=False) of the [-1, 1] image to float32
round-half-to-even ARP sizes, `tf.image.extract_patches(padding="SAME")`,
and the TF1 nearest-neighbour resize of `range(G)` for the hash tables.
`musiq_jax.preprocessing` must equal it; tests and benchmarks import it,
the package does not (it needs no TensorFlow).
"""

import math
from typing import Dict, Optional, Tuple

import tensorflow as tf

from musiq_jax.preprocessing import FEATURE_KEYS, PreprocessConfig

Features = Dict[str, tf.Tensor]


def normalize_value_range(image: tf.Tensor) -> tf.Tensor:
  image = tf.cast(image, tf.float32)
  return image / 255.0 * 2.0 - 1.0


def arp_size(h, w, longer_side_length: int):
  """The original's ARP size in TF float32 ops (clamped to >= 1 pixel)."""
  ratio = tf.cast(longer_side_length, tf.float32) / tf.cast(
      tf.maximum(h, w), tf.float32)
  rh = tf.cast(tf.round(tf.cast(h, tf.float32) * ratio), tf.int32)
  rw = tf.cast(tf.round(tf.cast(w, tf.float32) * ratio), tf.int32)
  return tf.maximum(rh, 1), tf.maximum(rw, 1)


def resize_preserve_aspect_ratio(image: tf.Tensor,
                                 longer_side_length: int) -> tf.Tensor:
  shape = tf.shape(image)
  size = arp_size(shape[0], shape[1], longer_side_length)
  return tf.image.resize(image, size, method=tf.image.ResizeMethod.GAUSSIAN)


def original_nn_table(grid: int, count: int) -> tf.Tensor:
  """The original's hash table: TF1 nearest-neighbour resize of range(G)."""
  g = tf.reshape(tf.range(grid, dtype=tf.int32), [grid, 1, 1])
  return tf.compat.v1.image.resize(
      g, [count, 1], method=tf.compat.v1.image.ResizeMethod.NEAREST_NEIGHBOR
  )[:, 0, 0]


def hashed_spatial_index(grid_size: int, count_h, count_w) -> tf.Tensor:
  t_h = original_nn_table(grid_size, count_h)
  t_w = original_nn_table(grid_size, count_w)
  return tf.reshape(t_h[:, None] * grid_size + t_w[None, :], [-1])


def extract_patches(image: tf.Tensor, patch_size: int,
                    patch_stride: int) -> Tuple[tf.Tensor, tf.Tensor,
                                                tf.Tensor]:
  p = tf.image.extract_patches(
      image[None], [1, patch_size, patch_size, 1],
      [1, patch_stride, patch_stride, 1], [1, 1, 1, 1], padding="SAME")
  count_h, count_w = tf.shape(p)[1], tf.shape(p)[2]
  return tf.reshape(p, [-1, patch_size * patch_size * 3]), count_h, count_w


def pad_or_cut(features: Features, length: int) -> Features:
  out = {}
  for k, v in features.items():
    pad = tf.maximum(length - tf.shape(v)[0], 0)
    paddings = [[0, pad]] + [[0, 0]] * (len(v.shape) - 1)
    out[k] = tf.pad(v, paddings)[:length]
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


def preprocess_image(image_uint8, cfg: PreprocessConfig) -> Dict:
  """Decoded [h, w, 3] uint8 image -> token features (numpy), the TF way."""
  image = normalize_value_range(tf.convert_to_tensor(image_uint8))
  outputs = []
  for scale_id, length in enumerate(cfg.sorted_lengths):
    resized = resize_preserve_aspect_ratio(image, length)
    max_len = math.ceil(length / cfg.patch_stride)**2
    outputs.append(_scale_features(resized, cfg, scale_id, max_len))
  if cfg.max_seq_len_from_original_res is not None:
    outputs.append(_scale_features(image, cfg, len(cfg.sorted_lengths),
                                   cfg.max_seq_len_from_original_res))
  return {k: tf.concat([o[k] for o in outputs], axis=0).numpy()
          for k in FEATURE_KEYS}
