"""Preprocessing ops of the CLIP heads, as small TF op factories.

Every `get_*` factory returns a function image -> image (or crops) that runs
eagerly and inside `tf.data.Dataset.map`, so prediction, evaluation and training
share one path. Images go in as uint8 or float in [0, 255], HWC RGB; `normalize`
maps to CLIP's input space ((x / 255 - mean) / std), NHWC for `model.CLIP`.

CLIP's evaluation transform (OpenAI `clip.load`): resize the shorter side to 224
with bicubic filtering (long side `int(224 * long / short)`, as torchvision
computes it), center crop 224 (offsets `round((H - 224) / 2)`), scale to [0, 1],
normalise with CLIP's mean/std. OpenAI resizes with PIL; TF's antialiased bicubic
resize is close to but not bit-exact with PIL. `clip_preprocess_pil` is the
PIL path for bit-faithful single-image prediction.

LIQE's test transform (`AdaptiveResize(768)` then unfold): the image is resized
(bilinear, shorter side to 768) only when *both* sides are at least 768; smaller
images are left as they are (LIQE's code fails on images under 224 px; we resize
their shorter side up to 224 instead). The 224 x 224 patches at stride 32 are
enumerated row-major, and the patches at indices `(n // 15) * i`, i = 0..14, are
kept. Fewer than 15 patches (possible only for images with a side < 224 + 32 * 14
patches' worth, e.g. 224 x 300) make LIQE's code assert; we then take the indices
`floor(i * n / 15)` (repeats allowed).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Op = Callable[[tf.Tensor], tf.Tensor]


def _shorter_side_size(image: tf.Tensor, size: int):
  """torchvision's Resize(int) output size: shorter side = size, long side floored."""
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  short = tf.minimum(h, w)
  target = tf.constant(size, tf.float64)
  new_h = tf.where(h <= w, target, tf.floor(target * h / short))
  new_w = tf.where(h <= w, tf.floor(target * w / short), target)
  return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def _resize_uint8_like(image: tf.Tensor, new_h, new_w, method: str) -> tf.Tensor:
  """Antialiased resize whose result is rounded and clipped as PIL's uint8 output is."""
  out = tf.image.resize(tf.cast(image, tf.float32), (new_h, new_w), method=method,
                        antialias=True)
  return tf.clip_by_value(tf.round(out), 0.0, 255.0)


def get_resize_shorter_side(size: int = 224, method: str = "bicubic") -> Op:
  """Resizes so the shorter side is `size` (CLIP: 224, bicubic)."""

  def _op(image):
    new_h, new_w = _shorter_side_size(image, size)
    return _resize_uint8_like(image, new_h, new_w, method)

  return _op


def get_center_crop(size: int = 224) -> Op:
  """torchvision's CenterCrop: offsets round((H - size) / 2), round((W - size) / 2)."""

  def _op(image):
    shape = tf.shape(image)
    top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float64) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float64) / 2.0), tf.int32)
    return tf.image.crop_to_bounding_box(image, top, left, size, size)

  return _op


def get_random_crop(size: int = 224) -> Op:
  """A uniformly placed `size` x `size` crop (training); the image must be large enough."""

  def _op(image):
    return tf.image.random_crop(image, (size, size, 3))

  return _op


def get_random_flip_lr() -> Op:
  """Horizontal flip with probability 1/2: the only augmentation that keeps quality."""
  return tf.image.random_flip_left_right


def get_normalize(mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> Op:
  """[0, 255] -> (x / 255 - mean) / std, float32."""
  mean_t = tf.constant(mean, tf.float32)
  std_t = tf.constant(std, tf.float32)

  def _op(image):
    return (tf.cast(image, tf.float32) / 255.0 - mean_t) / std_t

  return _op


def get_liqe_adaptive_resize(size: int = 768, min_size: int = 224) -> Op:
  """LIQE's AdaptiveResize: shorter side to `size` (bilinear) only if both sides >= size.

  Images with a side under `min_size` get their shorter side resized up to
  `min_size` (LIQE's code would fail on them); others are returned unchanged.
  """

  def _op(image):
    shape = tf.shape(image)
    short = tf.minimum(shape[0], shape[1])
    image = tf.cast(image, tf.float32)

    def _resize_to(target):
      new_h, new_w = _shorter_side_size(image, target)
      return _resize_uint8_like(image, new_h, new_w, "bilinear")

    return tf.case([(short >= size, lambda: _resize_to(size)),
                    (short < min_size, lambda: _resize_to(min_size))],
                   default=lambda: image)

  return _op


def liqe_patch_indices(num_patches: int, num: int = 15) -> np.ndarray:
  """Indices of the kept patches among `num_patches` (row-major), as LIQE picks them."""
  if num_patches >= num:
    return (num_patches // num) * np.arange(num)
  return (np.arange(num) * num_patches) // num


def get_liqe_crops(num: int = 15, size: int = 224, stride: int = 32) -> Op:
  """[H, W, C] -> [num, size, size, C]: LIQE's evenly spaced unfold patches."""

  def _op(image):
    shape = tf.shape(image)
    rows = (shape[0] - size) // stride + 1
    cols = (shape[1] - size) // stride + 1
    total = rows * cols
    i = tf.range(num)
    idx = tf.where(total >= num, (total // num) * i, (i * total) // num)
    tops, lefts = (idx // cols) * stride, (idx % cols) * stride
    crops = [image[tops[k]:tops[k] + size, lefts[k]:lefts[k] + size] for k in range(num)]
    return tf.ensure_shape(tf.stack(crops), (num, size, size, None))

  return _op


def compose(*ops: Op) -> Op:
  """Applies `ops` left to right."""

  def _op(image):
    for op in ops:
      image = op(image)
    return image

  return _op


def get_clip_eval(size: int = 224) -> Op:
  """CLIP's evaluation transform: shorter side bicubic, center crop, normalise."""
  return compose(get_resize_shorter_side(size), get_center_crop(size), get_normalize())


def get_clip_train(size: int = 224) -> Op:
  """Training: random crop + horizontal flip, then normalise.

  Images smaller than `size` are first resized (shorter side to `size`); larger
  ones are cropped at their own resolution, since resizing alters quality.
  """

  def _maybe_upscale(image):
    shape = tf.shape(image)
    image = tf.cast(image, tf.float32)
    return tf.cond(tf.minimum(shape[0], shape[1]) < size,
                   lambda: get_resize_shorter_side(size)(image), lambda: image)

  return compose(_maybe_upscale, get_random_crop(size), get_random_flip_lr(),
                 get_normalize())


def get_liqe_eval(num: int = 15, size: int = 224, stride: int = 32,
                  resize: int = 768) -> Op:
  """LIQE's test transform: adaptive resize, normalise, 15 crops [num, 224, 224, 3]."""
  return compose(get_liqe_adaptive_resize(resize, size), get_normalize(),
                 get_liqe_crops(num, size, stride))


def clip_preprocess_pil(image, size: int = 224) -> np.ndarray:
  """OpenAI's exact PIL transform for one image -> [size, size, 3] float32.

  Args:
    image: a PIL image or a uint8 HWC array.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if isinstance(image, np.ndarray):
    image = Image.fromarray(image)
  image = image.convert("RGB")
  w, h = image.size
  short = min(w, h)
  new_w, new_h = ((size, int(size * h / w)) if w <= h else (int(size * w / h), size))
  del short
  image = image.resize((new_w, new_h), Image.BICUBIC)
  left = int(round((new_w - size) / 2.0))
  top = int(round((new_h - size) / 2.0))
  image = image.crop((left, top, left + size, top + size))
  x = np.asarray(image, np.float32) / 255.0
  return (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
