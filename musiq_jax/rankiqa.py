"""RankIQA ranked batches: synthetic distortions of pristine images.

RankIQA (Liu et al., ICCV 2017) pre-trains a network to rank images whose
relative quality is known by construction: the same pristine image distorted
by one type at increasing levels. Its "efficient Siamese" trick forwards one
batch that holds every level of a few contents and types, and back-propagates
the hinge loss of all valid pairs in it (`losses.pairwise_hinge_loss`).

`RankedBatchGenerator` produces such batches. Batch layout, type-major as in
RankIQA's data layer (LIVE: 4 types x 6 levels x 2 contents = 48):

    for t in the batch's types (types_per_batch of distortion_names):
      for level in levels (default 0 = pristine, 1..5):
        for c in the type's contents (contents_per_type distinct images):
          crop of apply_distortion(pristine[c], type t, level)

Each batch is a dict of numpy arrays:
  image    uint8 [B, S, S, 3]  crops of side S = crop_size.
  level    int32 [B]  0 = pristine .. 5 = strongest (lower is better).
  group    int32 [B]  batch-local pair group: one id per (type, content) slot
                      (group_by="content_type"), or per type slot
                      (group_by="type", RankIQA's own LIVE loss, which also
                      ranks content A at level 1 above content B at level 3).
  content  int32 [B]  index of the pristine image in the source list.
  distortion int32 [B]  index of the type in `distortion_names`.
  weight   float32 [B]  all ones (the valid mask the losses accept).

Cropping: all levels of one (type, content) slot share one random crop
window, so the ranking compares the same pixels. By default the window is cut
first and then distorted (cheap: only S x S pixels are processed); with
crop_first=False the whole image is distorted first (RankIQA's order, slower,
and closer to it for blur borders, the JPEG block grid and contrast, whose
mean is then the whole image's).

Determinism: batch k depends only on (seed, k): types, contents and crop
windows come from `np.random.default_rng([seed, k])`, and the noise of each
distorted image from `np.random.default_rng([seed, k, type slot, content
slot, level])`. So a run resumed at batch k (`start_index=k`) sees the same
batches as an uninterrupted one.

Also here: `random_crops` and `predict_with_crops`, RankIQA's evaluation (30
random 224 x 224 crops per image, the mean (or median) prediction).
"""

from __future__ import annotations

import dataclasses
import os
from typing import (Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
from PIL import Image

from musiq_jax.datasets import distortions

Batch = Dict[str, np.ndarray]
ImageSource = Union[np.ndarray, str]

# RankIQA's four LIVE distortion types.
RANKIQA_LIVE_TYPES = ("gaussian_blur", "white_noise", "jpeg", "jpeg2000")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------------
# Pristine image sources.
# ---------------------------------------------------------------------------


def list_image_folder(folder: str) -> List[str]:
  """Sorted paths of the image files directly inside `folder`.

  Args:
    folder: a directory of pristine images (e.g. the Waterloo set).

  Returns:
    Paths, sorted by name so content indices are stable across runs.
  """
  if not os.path.isdir(folder):
    raise ValueError(f"Pristine image folder {folder!r} does not exist.")
  paths = sorted(
      os.path.join(folder, f) for f in os.listdir(folder)
      if f.lower().endswith(IMAGE_EXTENSIONS))
  if not paths:
    raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in "
                     f"{folder!r}.")
  return paths


def load_rgb(source: ImageSource) -> np.ndarray:
  """A pristine image as [h, w, 3] uint8 (paths are decoded with Pillow)."""
  if isinstance(source, str):
    with Image.open(source) as im:
      return np.asarray(im.convert("RGB"), np.uint8)
  image = np.asarray(source)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"Pristine images must be [h, w, 3] uint8, got "
                     f"{image.dtype} {image.shape}.")
  return image


def synthetic_pristine_images(split: Optional[str] = None,
                              max_side: int = 512,
                              contents: Optional[Sequence[str]] = None,
                              seed: int = 0) -> List[np.ndarray]:
  """The synthetic dataset's pristine photos (shipped by scikit-image).

  Args:
    split: None for every content, or "train"/"validation"/"test" for the
      contents that the `synthetic_iqa` builder with the same `seed` puts in
      that split, so ranking pre-training never sees test contents.
    max_side: longer-side cap, as the builder's config.
    contents: content names (default: the builder's full list).
    seed: the builder's split seed.

  Returns:
    [h, w, 3] uint8 images.
  """
  # Imported lazily: only this source needs the builder's content list.
  from musiq_jax.datasets import common  # pylint: disable=g-import-not-at-top
  from musiq_jax.datasets import synthetic_iqa  # pylint: disable=g-import-not-at-top
  names = tuple(contents or synthetic_iqa.CONTENTS)
  if split is not None:
    assignment = common.random_split(names, synthetic_iqa.CONTENT_SPLIT, seed)
    names = tuple(n for n in names if assignment[n] == split)
  return [synthetic_iqa.load_content(n, max_side) for n in names]


# ---------------------------------------------------------------------------
# Crops.
# ---------------------------------------------------------------------------


def _check_crop(shape: Tuple[int, ...], crop_size: int, what: str = "Image"):
  if shape[0] < crop_size or shape[1] < crop_size:
    raise ValueError(
        f"{what} of size {shape[0]}x{shape[1]} is smaller than the "
        f"{crop_size}x{crop_size} crop; use a smaller crop_size or larger "
        "images (RankIQA crops instead of resizing, so as not to add "
        "interpolation artefacts).")


def random_crop_offsets(shape: Tuple[int, ...], crop_size: int,
                        num_crops: int,
                        rng: np.random.Generator) -> np.ndarray:
  """Uniform top-left corners of `num_crops` crops, int [num_crops, 2]."""
  _check_crop(shape, crop_size)
  top = rng.integers(0, shape[0] - crop_size + 1, size=num_crops)
  left = rng.integers(0, shape[1] - crop_size + 1, size=num_crops)
  return np.stack([top, left], axis=-1)


def crop(image: np.ndarray, offset: Sequence[int], crop_size: int):
  """The crop_size x crop_size window of `image` at (top, left) `offset`."""
  top, left = int(offset[0]), int(offset[1])
  return image[top:top + crop_size, left:left + crop_size]


def random_crops(image: np.ndarray, crop_size: int = 224, num_crops: int = 30,
                 rng: Optional[np.random.Generator] = None,
                 seed: int = 0) -> np.ndarray:
  """RankIQA's test-time crops: `num_crops` uniform random windows.

  Args:
    image: [h, w, C] image with h, w >= crop_size.
    crop_size: side of the square crops (224 in RankIQA).
    num_crops: how many (30 in RankIQA).
    rng: numpy Generator; default `np.random.default_rng(seed)`, so the
      crops of an image are reproducible.
    seed: used when rng is None.

  Returns:
    [num_crops, crop_size, crop_size, C], the dtype of `image`.
  """
  image = np.asarray(image)
  rng = np.random.default_rng(seed) if rng is None else rng
  offsets = random_crop_offsets(image.shape, crop_size, num_crops, rng)
  return np.stack([crop(image, o, crop_size) for o in offsets])


def predict_with_crops(predict_fn: Callable[[np.ndarray], np.ndarray],
                       image: np.ndarray, crop_size: int = 224,
                       num_crops: int = 30, reduce: str = "mean",
                       seed: int = 0) -> float:
  """Scores an image as RankIQA does: the mean (or median) over random crops.

  Args:
    predict_fn: maps a [K, S, S, 3] batch of crops (the dtype of `image`) to
      K scores ([K] or [K, 1]); any preprocessing belongs inside it.
    image: [h, w, 3] image.
    crop_size: side of the crops.
    num_crops: number of crops.
    reduce: "mean" or "median" of the crop scores.
    seed: crop seed.

  Returns:
    The image's score.
  """
  reducers = {"mean": np.mean, "median": np.median}
  if reduce not in reducers:
    raise ValueError(f"reduce must be 'mean' or 'median', got {reduce!r}.")
  crops = random_crops(image, crop_size, num_crops, seed=seed)
  scores = np.asarray(predict_fn(crops), np.float64).reshape(-1)
  if scores.shape[0] != num_crops:
    raise ValueError(f"predict_fn returned {scores.shape[0]} scores for "
                     f"{num_crops} crops.")
  return float(reducers[reduce](scores))


# ---------------------------------------------------------------------------
# Ranked batches.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RankBatchConfig:
  """How ranked batches are built (defaults: RankIQA's LIVE batches).

  Attributes:
    distortion_names: the types to synthesise (names of
      `distortions.DISTORTION_NAMES`).
    types_per_batch: types per batch, sampled without replacement from
      distortion_names each batch; None = all of them, in their order.
    contents_per_type: distinct pristine images per type in a batch.
    levels: distortion levels per (type, content); 0 = pristine.
    crop_size: side of the square crops.
    group_by: "content_type" (pairs within one content and type) or "type"
      (pairs across the contents of a type, as RankIQA's LIVE loss layer).
    crop_first: crop, then distort (fast) instead of distort, then crop.
    seed: the generator's seed.
  """
  distortion_names: Tuple[str, ...] = RANKIQA_LIVE_TYPES
  types_per_batch: Optional[int] = None
  contents_per_type: int = 2
  levels: Tuple[int, ...] = tuple(range(distortions.NUM_LEVELS + 1))
  crop_size: int = 224
  group_by: str = "content_type"
  crop_first: bool = True
  seed: int = 0

  def __post_init__(self):
    unknown = set(self.distortion_names) - set(distortions.DISTORTION_NAMES)
    if unknown:
      raise ValueError(f"Unknown distortions {sorted(unknown)}; choose from "
                       f"{list(distortions.DISTORTION_NAMES)}.")
    if self.types_per_batch is not None and not (
        1 <= self.types_per_batch <= len(self.distortion_names)):
      raise ValueError(f"types_per_batch={self.types_per_batch} must be in "
                       f"1..{len(self.distortion_names)}.")
    if len(set(self.levels)) < 2 or not all(
        0 <= l <= distortions.NUM_LEVELS for l in self.levels):
      raise ValueError(f"levels={self.levels} needs at least two distinct "
                       f"levels in 0..{distortions.NUM_LEVELS}.")
    if self.group_by not in ("content_type", "type"):
      raise ValueError(f"group_by must be 'content_type' or 'type', got "
                       f"{self.group_by!r}.")
    if self.contents_per_type < 1:
      raise ValueError("contents_per_type must be >= 1.")

  @property
  def num_types(self) -> int:
    return self.types_per_batch or len(self.distortion_names)

  @property
  def batch_size(self) -> int:
    return self.num_types * len(self.levels) * self.contents_per_type


class RankedBatchGenerator:
  """Deterministic ranked batches for the efficient Siamese loss.

  Usage:
    gen = RankedBatchGenerator(list_image_folder("waterloo/"), config)
    for batch in gen.batches(num_batches=50_000): ...
    ds = gen.as_tf_dataset()  # Same batches through tf.data.

  Attributes:
    images: the pristine sources (arrays or file paths, decoded on use).
    config: a RankBatchConfig.
  """

  def __init__(self, images: Sequence[ImageSource],
               config: RankBatchConfig = RankBatchConfig()):
    if len(images) < config.contents_per_type:
      raise ValueError(f"{len(images)} pristine images for "
                       f"contents_per_type={config.contents_per_type}.")
    self.images = list(images)
    self.config = config
    for i, image in enumerate(self.images):
      if not isinstance(image, str):
        self.images[i] = load_rgb(image)
        _check_crop(self.images[i].shape, config.crop_size,
                    f"Pristine image {i}")

  def _pristine(self, index: int) -> np.ndarray:
    image = load_rgb(self.images[index])
    _check_crop(image.shape, self.config.crop_size, f"Pristine image {index}")
    return image

  def batch(self, index: int) -> Batch:
    """Batch number `index` (a pure function of the seed and the index)."""
    cfg = self.config
    rng = np.random.default_rng([cfg.seed, index])
    if cfg.types_per_batch is None:
      types = np.arange(len(cfg.distortion_names))
    else:
      types = rng.choice(len(cfg.distortion_names), cfg.types_per_batch,
                         replace=False)
    # Contents are drawn per type, like RankIQA's per-type image lists.
    contents = np.stack([
        rng.choice(len(self.images), cfg.contents_per_type, replace=False)
        for _ in types])
    # One crop window per (type, content) slot, shared by all its levels.
    slots = {}
    for t_slot in range(len(types)):
      for c_slot in range(cfg.contents_per_type):
        image = self._pristine(contents[t_slot, c_slot])
        offset = random_crop_offsets(image.shape, cfg.crop_size, 1, rng)[0]
        slots[t_slot, c_slot] = (image, offset)

    crops, level, group, content, dist = [], [], [], [], []
    for t_slot, t in enumerate(types):
      name = cfg.distortion_names[t]
      for lev in cfg.levels:
        for c_slot in range(cfg.contents_per_type):
          image, offset = slots[t_slot, c_slot]
          noise_rng = np.random.default_rng(
              [cfg.seed, index, t_slot, c_slot, lev])
          if cfg.crop_first:
            out = distortions.apply_distortion(
                np.ascontiguousarray(crop(image, offset, cfg.crop_size)),
                name, lev, noise_rng)
          else:
            out = crop(distortions.apply_distortion(image, name, lev,
                                                    noise_rng),
                       offset, cfg.crop_size)
          crops.append(out)
          level.append(lev)
          group.append(t_slot if cfg.group_by == "type"
                       else t_slot * cfg.contents_per_type + c_slot)
          content.append(contents[t_slot, c_slot])
          dist.append(distortions.DISTORTION_NAMES.index(name))
    return {
        "image": np.stack(crops).astype(np.uint8),
        "level": np.asarray(level, np.int32),
        "group": np.asarray(group, np.int32),
        "content": np.asarray(content, np.int32),
        "distortion": np.asarray(dist, np.int32),
        "weight": np.ones((len(crops),), np.float32),
    }

  def batches(self, num_batches: Optional[int] = None,
              start_index: int = 0) -> Iterator[Batch]:
    """Yields batches start_index, start_index + 1, ... (forever if None)."""
    index = start_index
    while num_batches is None or index < start_index + num_batches:
      yield self.batch(index)
      index += 1

  __iter__ = batches

  def output_signature(self):
    """The tf.TensorSpec dict of one batch (shapes are static)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    b, s = self.config.batch_size, self.config.crop_size
    return {
        "image": tf.TensorSpec((b, s, s, 3), tf.uint8),
        "level": tf.TensorSpec((b,), tf.int32),
        "group": tf.TensorSpec((b,), tf.int32),
        "content": tf.TensorSpec((b,), tf.int32),
        "distortion": tf.TensorSpec((b,), tf.int32),
        "weight": tf.TensorSpec((b,), tf.float32),
    }

  def as_tf_dataset(self, num_batches: Optional[int] = None,
                    start_index: int = 0, prefetch: int = 2):
    """The same batches as a `tf.data.Dataset` (already batched).

    Args:
      num_batches: stop after this many; None = infinite.
      start_index: index of the first batch (to resume a run).
      prefetch: batches to prepare ahead (0 = no prefetch).

    Returns:
      A tf.data.Dataset of batch dicts.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    ds = tf.data.Dataset.from_generator(
        lambda: self.batches(num_batches, start_index),
        output_signature=self.output_signature())
    if prefetch:
      ds = ds.prefetch(prefetch)
    return ds
