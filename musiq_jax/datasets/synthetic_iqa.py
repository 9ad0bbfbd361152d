"""`synthetic_iqa`: the embedded default IQA dataset, generated offline.

Pristine photos are the ones scikit-image ships (no download): 14 contents,
greyscale ones converted to RGB by repeating the channel. Native sizes and
aspect ratios are kept, except that photos whose longer side exceeds
`max_side` (512 in the default config: hubble_deep_field, retina, motorcycle,
rocket, coffee) are downscaled with Pillow's Lanczos filter so their longer side
is `max_side`.

Each content is distorted by 6 types (`gaussian_blur`, `white_noise`, `jpeg`,
`jpeg2000`, `contrast_change`, `color_cast`; see `distortions.py`) at 5 levels,
plus the pristine image itself at level 0: 31 images per content.

MOS-like label on a 1..5 scale (higher is better), a full-reference proxy
computed against the pristine image (the same formula for level 0):

    s = SSIM(ref, img)   mean over R, G, B; Gaussian window sigma 1.5,
                         population covariances, data range 255 (Wang 2004)
    p = PSNR(ref, img)   in dB on RGB, 60 dB when the images are identical
    q = clip((p - 15) / 30, 0, 1)             # 15 dB -> 0, 45 dB -> 1
    z = 0.5 * s + 0.5 * q
    mos = 1 + 4 / (1 + exp(-(z - 0.5) / 0.15))

SSIM sees structure (blur, noise, compression, contrast) and PSNR sees
pixel shifts SSIM is blind to (colour cast). Pristine images get z = 1,
mos = 4.86.

The `demo` config (the default demo's data) swaps contrast_change and
color_cast for two local types (pixelate, impulse_noise) and enriches the
training split (more views, continuous strengths, one more photo, generated
dead-leaves contents); see `SyntheticConfig` and docs/datasets.md.

Splits are by content (a seeded permutation of the content names): no pristine
photo, nor any of its distorted versions, is in two splits. Default config: 14
contents -> train 9, validation 2, test 3 contents (279 / 62 / 93 images).

Determinism: white noise uses `np.random.default_rng([seed, content index,
type index, level])`; Pillow's codecs and the SSIM/PSNR maths are
deterministic; so two builds give identical records.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Tuple

import numpy as np
from PIL import Image
import scipy.ndimage
import skimage.data
import tensorflow_datasets as tfds

from musiq_jax.datasets import common
from musiq_jax.datasets import distortions

# Photos scikit-image ships inside its wheel (no download needed).
CONTENTS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
            "immunohistochemistry", "retina", "motorcycle", "camera", "moon",
            "brick", "coins", "clock", "grass")
SYNTHETIC_DISTORTIONS = ("gaussian_blur", "white_noise", "jpeg", "jpeg2000",
                         "contrast_change", "color_cast")
# Types whose evidence lives inside every 32x32 patch: MUSIQ's patch ResNet
# (weight-standardised conv + per-patch GroupNorm) is nearly invariant to a
# global affine change of intensities, so it cannot see contrast_change or
# color_cast (docs/datasets.md, "synthetic_iqa/demo").
LOCAL_DISTORTIONS = ("gaussian_blur", "white_noise", "jpeg", "jpeg2000",
                     "pixelate", "impulse_noise")
# Split fractions over contents.
CONTENT_SPLIT = {"test": 0.2, "validation": 0.15, "train": 0.65}


def load_content(name: str, max_side: int) -> np.ndarray:
  """A packaged pristine photo as [h, w, 3] uint8, longer side <= max_side."""
  if name == "motorcycle":
    image = skimage.data.stereo_motorcycle()[0]  # The left view.
  else:
    image = getattr(skimage.data, name)()
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  image = image[..., :3].astype(np.uint8)
  h, w = image.shape[:2]
  if max(h, w) > max_side:
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
  return image


def dead_leaves(rng: np.random.Generator, height: int, width: int,
                textures=(), *, min_radius: float = 1.5,
                max_radius: float | None = None, texture_fraction: float = 0.5,
                blur_fraction: float = 0.0, max_blur: float = 3.0,
                supersample: int = 2, max_leaves: int = 200_000) -> np.ndarray:
  """A dead-leaves image (Matheron; Lee, Mumford & Huang 2001) as uint8.

  Opaque discs fall on the picture plane until it is covered; radii follow
  the scale-invariant density p(r) ~ r^-3 on [min_radius, max_radius] (pixels
  of the output; max_radius defaults to half the longer side), so the image
  has edges and flat regions at every scale and a natural-image-like power
  spectrum. The leaves are drawn front to back: a leaf paints only the pixels
  no earlier leaf covers, and drawing stops once every pixel is covered.
  A leaf is a flat colour, or (with probability `texture_fraction`, when
  `textures` are given) a piece of one of `textures` ([h, w, 3] uint8 at
  `supersample` times the output resolution, indexed with wrap-around) at a
  random offset, tinted per channel by a gain in [0.6, 1.2]; flat colours are
  pixels of a random texture (uniform RGB without textures). A fraction
  `blur_fraction` of the textured leaves is Gaussian-blurred (sigma uniform in
  (0, `max_blur`] output pixels), like the out-of-focus parts of a photo, so
  that smooth regions are not by themselves a sign of a distortion. The image is
  rendered at `supersample` times the size and box-downsampled, so leaf edges
  are anti-aliased like a camera's.

  Args:
    rng: the only source of randomness (same rng state, same image).
    height, width: output size.
    textures: texture sources, at `supersample` x the output resolution.
    min_radius, max_radius: radius range in output pixels.
    texture_fraction: probability that a leaf is textured.
    blur_fraction, max_blur: out-of-focus textured leaves, see above.
    supersample: rendering factor (1 = aliased edges).
    max_leaves: a bound on the loop; pixels still uncovered then keep the
      mean colour of the covered ones.

  Returns:
    [height, width, 3] uint8.
  """
  if height < 1 or width < 1:
    raise ValueError(f"dead_leaves: size must be positive, got "
                     f"{height}x{width}.")
  ss = int(supersample)
  big_h, big_w = height * ss, width * ss
  r_lo = min_radius * ss
  r_hi = (max_radius if max_radius is not None else
          max(height, width) / 2.0) * ss
  if not 0 < r_lo <= r_hi:
    raise ValueError(f"dead_leaves: need 0 < min_radius <= max_radius, got "
                     f"{min_radius}, {max_radius}.")
  textures = [np.asarray(t, np.float32) for t in textures]
  canvas = np.zeros((big_h, big_w, 3), np.float32)
  covered = np.zeros((big_h, big_w), bool)
  a, b = r_lo**-2, r_hi**-2
  uncovered = big_h * big_w
  drawn = 0
  while uncovered and drawn < max_leaves:
    # Leaves in blocks of 1024: the random draws vectorise, the painting not.
    n = min(1024, max_leaves - drawn)
    drawn += n
    radii = (a - rng.random(n) * (a - b))**-0.5  # Inverse CDF of r^-3.
    cys = rng.uniform(-radii, big_h + radii)
    cxs = rng.uniform(-radii, big_w + radii)
    textured = rng.random(n) < (texture_fraction if textures else 0.0)
    which = rng.integers(max(1, len(textures)), size=n)
    offsets = rng.random((n, 2))
    gains = rng.uniform(0.6, 1.2, size=(n, 3)).astype(np.float32)
    colours = rng.uniform(0, 255, size=(n, 3)).astype(np.float32)
    sigmas = np.where(rng.random(n) < blur_fraction,
                      (1.0 - rng.random(n)) * max_blur * ss, 0.0)
    for r, cy, cx, tex, k, off, gain, colour, sigma in zip(
        radii, cys, cxs, textured, which, offsets, gains, colours, sigmas):
      y0, y1 = max(0, int(cy - r)), min(big_h, int(cy + r) + 1)
      x0, x1 = max(0, int(cx - r)), min(big_w, int(cx + r) + 1)
      if y0 >= y1 or x0 >= x1:
        continue
      yy = np.arange(y0, y1)[:, None]
      xx = np.arange(x0, x1)[None, :]
      mask = ((yy - cy)**2 + (xx - cx)**2 <= r * r) & ~covered[y0:y1, x0:x1]
      count = int(np.count_nonzero(mask))
      if not count:
        continue
      if textures:
        source = textures[k]
        th, tw = source.shape[:2]
        oy, ox = int(off[0] * th), int(off[1] * tw)
        if tex:
          fill = source[(yy + oy) % th, (xx + ox) % tw] * gain
          if sigma > 0:
            fill = scipy.ndimage.gaussian_filter(fill, (sigma, sigma, 0),
                                                 mode="wrap")
        else:
          fill = source[oy, ox] * gain
      else:
        fill = colour
      region = canvas[y0:y1, x0:x1]
      region[mask] = np.broadcast_to(fill, region.shape)[mask]
      covered[y0:y1, x0:x1] |= mask
      uncovered -= count
      if not uncovered:
        break
  if not covered.all():
    canvas[~covered] = canvas[covered].mean(axis=0) if covered.any() else 128
  image = canvas.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
  """SSIM (Wang et al. 2004) of two [h, w, 3] uint8 images, channel mean.

  Gaussian window sigma 1.5 truncated at 3.5 sigma, K1 = 0.01, K2 = 0.03,
  population covariances, borders of half a window left out of the mean:
  `skimage.metrics.structural_similarity(..., channel_axis=2,
  data_range=255, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)` up to float32 rounding, but one filter pass
  over all moments at once (about 4x faster).
  """
  x = np.asarray(reference, np.float32)
  y = np.asarray(image, np.float32)
  moments = np.concatenate([x, y, x * x, y * y, x * y], axis=-1)
  m = scipy.ndimage.gaussian_filter(moments, (1.5, 1.5, 0), truncate=3.5,
                                    mode="reflect")
  mx, my, mxx, myy, mxy = np.split(m, 5, axis=-1)
  vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
  c1, c2 = (0.01 * 255)**2, (0.03 * 255)**2
  s = ((2 * mx * my + c1) * (2 * cxy + c2)) / (
      (mx * mx + my * my + c1) * (vx + vy + c2))
  pad = 5  # (window 11 - 1) // 2, as skimage crops.
  if s.shape[0] > 2 * pad and s.shape[1] > 2 * pad:
    s = s[pad:-pad, pad:-pad]
  return float(np.mean(s, dtype=np.float64))


def mos_proxy(reference: np.ndarray, image: np.ndarray) -> float:
  """The documented full-reference MOS proxy on a 1..5 scale."""
  ref = np.asarray(reference)
  img = np.asarray(image)
  s = ssim(ref, img)
  mse = np.mean((ref.astype(np.float64) - img.astype(np.float64))**2)
  p = 60.0 if mse == 0 else min(60.0, 10 * math.log10(255.0**2 / mse))
  q = min(max((p - 15.0) / 30.0, 0.0), 1.0)
  z = 0.5 * s + 0.5 * q
  return float(1.0 + 4.0 / (1.0 + math.exp(-(z - 0.5) / 0.15)))


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  # Fast zlib level: the dataset is small and build time matters more.
  Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


@dataclasses.dataclass(eq=False)
class SyntheticConfig(common.IQAConfig):
  """Which contents, distortion types and size cap to generate.

  The last three fields enrich the training split only (validation and test
  stay the fixed 5 levels of whole photos, so their numbers compare across
  configs):
    train_views: views per training content: the whole photo, plus
      `train_views - 1` crops of the same shape taken at random places from the
      photo at up to twice the resolution (capped by the photo's own size):
      a closer look, other framing, finer texture.
    train_strengths: 0: the 5 fixed levels per type; N > 0: N strengths per
      type drawn uniformly from (0, 5] (`distortions.apply_distortion_at`),
      so no two training images share a distortion strength and memorising
      image -> score pays less. `distortion_level` is then the strength
      rounded up (1..5).
    extra_train_contents: photos added to the training split only.
    validation_contents, test_contents: when given, these photos make the
      evaluation splits and every other content trains (instead of the
      seeded random split of `contents`).
    dead_leaves: procedurally generated training contents (`dead_leaves`,
      named `dead_leaves_<i>`), textured with pieces of the training photos
      only; one view each, distorted like the photos.
  """
  contents: Tuple[str, ...] = CONTENTS
  distortion_names: Tuple[str, ...] = SYNTHETIC_DISTORTIONS
  max_side: int = 512
  seed: int = 0
  train_views: int = 1
  train_strengths: int = 0
  extra_train_contents: Tuple[str, ...] = ()
  dead_leaves: int = 0
  dead_leaves_blur: float = 0.0
  validation_contents: Tuple[str, ...] = ()
  test_contents: Tuple[str, ...] = ()


class SyntheticIqa(tfds.core.GeneratorBasedBuilder):
  """Distorted scikit-image photos with a full-reference MOS proxy (1..5)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticConfig(name="default", description=(
          "14 contents, 6 distortions x 5 levels + pristine, longer side "
          "<= 512: 434 images.")),
      SyntheticConfig(name="small", max_side=256, description=(
          "As default with longer side <= 256 (fast CPU training).")),
      SyntheticConfig(
          name="demo", max_side=256, distortion_names=LOCAL_DISTORTIONS,
          # No `clock`: scikit-image's clock photo is motion-blurred ("Motion
          # blurred clock."), not a pristine reference; `coins` takes its
          # place in validation. Test contents as in `small`.
          contents=tuple(c for c in CONTENTS if c != "clock"),
          validation_contents=("coffee", "coins"),
          test_contents=("astronaut", "camera", "chelsea"),
          train_views=3, train_strengths=5, extra_train_contents=("gravel",),
          dead_leaves=30, dead_leaves_blur=0.3, version="1.1.0",
          release_notes={
              "1.0.0": "Photos only (930 training images).",
              "1.1.0": "+30 dead-leaves training contents; the motion-"
                       "blurred clock photo left out, coins validates.",
          },
          description=(
              "The default demo's data: test contents as small, validation "
              "coffee and coins (no motion-blurred clock), 6 "
              "local distortion types (no contrast change or colour cast), "
              "and a richer training split: 3 views of each training photo "
              "(the photo and 2 closer crops), 5 random strengths per type, "
              "the gravel photo, and 30 generated dead-leaves images "
              "textured with pieces of the training photos: 1767 training "
              "images.")),
      SyntheticConfig(name="tiny", max_side=96, contents=(
          "astronaut", "coffee", "chelsea", "camera", "coins"), description=(
              "5 contents at longer side <= 96, for tests.")),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=common.core_features(
            reference=tfds.features.Text(),
            content_id=tfds.features.Scalar(np.int32),
            distortion_type=tfds.features.ClassLabel(
                names=("pristine",) + tuple(cfg.distortion_names)),
            distortion_level=tfds.features.Scalar(np.int32),
        ),
        metadata=tfds.core.MetadataDict(),
        homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated from packaged photos.
    cfg = self.builder_config
    unknown = set(cfg.distortion_names) - set(distortions.DISTORTION_NAMES)
    if unknown:
      raise ValueError(f"Config {cfg.name!r}: unknown distortions "
                       f"{sorted(unknown)}; choose from "
                       f"{list(distortions.DISTORTION_NAMES)}.")
    if len(cfg.contents) < 3:
      raise ValueError(f"Config {cfg.name!r} has {len(cfg.contents)} "
                       "contents; content-disjoint splits need at least 3.")
    overlap = set(cfg.extra_train_contents) & set(cfg.contents)
    if overlap:
      raise ValueError(f"Config {cfg.name!r}: extra_train_contents "
                       f"{sorted(overlap)} are also in contents; a photo may "
                       "be in one split only.")
    fixed = {**{c: "validation" for c in cfg.validation_contents},
             **{c: "test" for c in cfg.test_contents}}
    if fixed:
      if not cfg.validation_contents or not cfg.test_contents or (
          set(cfg.validation_contents) & set(cfg.test_contents)):
        raise ValueError(f"Config {cfg.name!r}: validation_contents and "
                         "test_contents must both be given and disjoint.")
      if set(fixed) - set(cfg.contents):
        raise ValueError(f"Config {cfg.name!r}: held-out contents "
                         f"{sorted(set(fixed) - set(cfg.contents))} are not "
                         "in contents.")
      assignment = {c: fixed.get(c, "train") for c in cfg.contents}
    else:
      assignment = common.random_split(cfg.contents, CONTENT_SPLIT, cfg.seed)
    splits = {
        split: [c for c in cfg.contents if assignment[c] == split]
        for split in ("train", "validation", "test")
    }
    splits["train"] += list(cfg.extra_train_contents)
    self._texture_names = tuple(splits["train"])
    splits["train"] += [f"dead_leaves_{i}" for i in range(cfg.dead_leaves)]
    return {
        split: self._generate_examples(contents, train=split == "train")
        for split, contents in splits.items()
    }

  def _views(self, name: str, content_index: int, train: bool):
    """(suffix, pristine image) per view of a content."""
    cfg = self.builder_config
    if name.startswith("dead_leaves_"):
      yield "", self._dead_leaves(content_index)
      return
    ref = load_content(name, cfg.max_side)
    yield "", ref
    if not train or cfg.train_views <= 1:
      return
    big = load_content(name, 2 * cfg.max_side)
    h, w = ref.shape[:2]
    rng = np.random.default_rng([cfg.seed, content_index, 1000])
    for v in range(1, cfg.train_views):
      top = int(rng.integers(0, big.shape[0] - h + 1))
      left = int(rng.integers(0, big.shape[1] - w + 1))
      yield f"@crop{v}", np.ascontiguousarray(big[top:top + h, left:left + w])

  def _dead_leaves(self, content_index: int) -> np.ndarray:
    """A generated training content: photo-like size, textures of train."""
    cfg = self.builder_config
    if not hasattr(self, "_textures"):
      self._textures = [load_content(n, 2 * cfg.max_side)
                        for n in self._texture_names]
    rng = np.random.default_rng([cfg.seed, content_index, 4000])
    short = int(round(cfg.max_side * rng.choice([2 / 3, 3 / 4, 1.0])))
    h, w = (short, cfg.max_side) if rng.random() < 0.7 else (
        cfg.max_side, short)
    return dead_leaves(rng, h, w, self._textures, min_radius=4.0,
                       texture_fraction=0.6,
                       blur_fraction=cfg.dead_leaves_blur)

  def _variants(self, content_index: int, view: int, train: bool):
    """(type, level, strength) per image of a view; pristine first."""
    cfg = self.builder_config
    yield "pristine", 0, 0.0
    for dist in cfg.distortion_names:
      if train and cfg.train_strengths > 0:
        type_index = distortions.DISTORTION_NAMES.index(dist)
        rng = np.random.default_rng(
            [cfg.seed, content_index, view, type_index, 2000])
        # (0, 5]: 1 - U[0, 1) never gives exactly 0 (the pristine image).
        for s in 5.0 * (1.0 - rng.random(cfg.train_strengths)):
          yield dist, int(math.ceil(s)), float(s)
      else:
        for level in range(1, 6):
          yield dist, level, float(level)

  def _generate_examples(self, contents, train: bool):
    cfg = self.builder_config
    for name in contents:
      content_id = CONTENTS.index(name) if name in CONTENTS else -1
      # Seeds need a non-negative index; extra contents come after CONTENTS.
      if content_id >= 0:
        content_index = content_id
      elif name.startswith("dead_leaves_"):
        content_index = (len(CONTENTS) + len(cfg.extra_train_contents) +
                         int(name[len("dead_leaves_"):]))
      else:
        content_index = len(CONTENTS) + cfg.extra_train_contents.index(name)
      for view, (suffix, ref) in enumerate(
          self._views(name, content_index, train)):
        yield from self._view_examples(name, suffix, ref, content_id,
                                       content_index, view, train)

  def _view_examples(self, name, suffix, ref, content_id, content_index,
                     view, train):
    """The pristine view and its distorted versions; `reference` = photo."""
    cfg = self.builder_config
    view_name = name + suffix
    h, w = ref.shape[:2]
    for k, (dist, level, strength) in enumerate(
        self._variants(content_index, view, train)):
      if dist == "pristine":
        image = ref
        image_id = f"{view_name}/pristine_0"
      elif strength == level:
        type_index = distortions.DISTORTION_NAMES.index(dist)
        # The seed of the original fixed-level builds (view 0 unchanged).
        seed = [cfg.seed, content_index, type_index, level]
        if view:
          seed.append(view)
        image = distortions.apply_distortion(ref, dist, level,
                                             np.random.default_rng(seed))
        image_id = f"{view_name}/{dist}_{level}"
      else:
        type_index = distortions.DISTORTION_NAMES.index(dist)
        rng = np.random.default_rng(
            [cfg.seed, content_index, view, type_index, 3000 + k])
        image = distortions.apply_distortion_at(ref, dist, strength, rng)
        image_id = f"{view_name}/{dist}_{strength:.3f}"
      yield image_id, {
          "image": _png(image),
          "height": h,
          "width": w,
          "image_id": image_id,
          "mos": mos_proxy(ref, image),
          "reference": name,
          "content_id": content_id,
          "distortion_type": dist,
          "distortion_level": level,
      }
