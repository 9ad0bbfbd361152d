"""Synthetic image distortions at five increasing levels (RankIQA-style).

Reusable without TFDS or TensorFlow (numpy, scipy and Pillow only): the
`synthetic_iqa` builder and the RankIQA pair generator both call
`apply_distortion(image_uint8, name, level, rng)`.

Levels are 1 (mildest) .. 5 (strongest); level 0 returns the image unchanged.
The parameters follow RankIQA's LIVE generator in spirit (blur, white noise,
JPEG, JPEG2000) but are scaled for the small images of this project (a Gaussian
sigma of 33 px, RankIQA's strongest blur, would flatten a 300 px photo).

| name            | parameter per level 1..5                              |
|-----------------|-------------------------------------------------------|
| gaussian_blur   | sigma (px) 0.8, 1.5, 2.5, 4, 6                        |
| white_noise     | Gaussian noise std (on [0, 1]) .02, .04, .07, .11, .17 |
| jpeg            | Pillow JPEG quality 43, 12, 7, 4, 1 (RankIQA's)       |
| jpeg2000        | target PSNR (dB) 36, 32, 28, 25, 22 (OpenJPEG)        |
| contrast_change | contrast factor towards the mean .75, .55, .4, .28, .18 |
| saturation      | colour saturation factor .7, .5, .3, .15, 0 (no-op on grey) |
| color_cast      | red +/ blue - offset (of 255) 8, 16, 28, 42, 60       |
| pixelate        | block factor 2, 3, 4, 6, 8 (box down, nearest up)      |
| impulse_noise   | fraction of pixels set to black or white .003, .01, .03, .06, .12 |

`apply_distortion_at(image, name, strength, rng)` takes a continuous strength
in [0, 5] instead: the parameter is interpolated linearly between the levels
(strength 0 is the identity parameter of `IDENTITY`), so an integer strength
gives exactly `apply_distortion` at that level. JPEG qualities and pixelation
factors are rounded to integers.

Randomness (`white_noise` and `impulse_noise`) comes from the `rng` argument, a
`numpy.random.Generator`, so callers control determinism.
"""

from __future__ import annotations

import io
from typing import Dict, Sequence

import numpy as np
from PIL import Image
import scipy.ndimage

NUM_LEVELS = 5

# Name -> the parameter of levels 1..5 (see the module docstring).
DISTORTIONS: Dict[str, Sequence[float]] = {
    "gaussian_blur": (0.8, 1.5, 2.5, 4.0, 6.0),
    "white_noise": (0.02, 0.04, 0.07, 0.11, 0.17),
    "jpeg": (43, 12, 7, 4, 1),
    "jpeg2000": (36, 32, 28, 25, 22),
    "contrast_change": (0.75, 0.55, 0.4, 0.28, 0.18),
    "saturation": (0.7, 0.5, 0.3, 0.15, 0.0),
    "color_cast": (8, 16, 28, 42, 60),
    # Integer factors: at 1.5 the uneven blocks cost more PSNR than at 2.
    "pixelate": (2, 3, 4, 6, 8),
    "impulse_noise": (0.003, 0.01, 0.03, 0.06, 0.12),
}
DISTORTION_NAMES = tuple(DISTORTIONS)
# Those that draw from the `rng` argument.
RANDOM_DISTORTIONS = ("white_noise", "impulse_noise")

# The parameter that leaves an image (nearly) unchanged: strength 0. JPEG at
# quality 95 and JPEG2000 at 48 dB are the mildest settings that still encode.
IDENTITY: Dict[str, float] = {
    "gaussian_blur": 0.0,
    "white_noise": 0.0,
    "jpeg": 95,
    "jpeg2000": 48,
    "contrast_change": 1.0,
    "saturation": 1.0,
    "color_cast": 0,
    "pixelate": 1.0,
    "impulse_noise": 0.0,
}


def parameter_at(name: str, strength: float) -> float:
  """The parameter of distortion `name` at a continuous strength in [0, 5]."""
  if name not in DISTORTIONS:
    raise ValueError(f"Unknown distortion {name!r}; choose one of "
                     f"{list(DISTORTION_NAMES)}.")
  if not 0.0 <= strength <= NUM_LEVELS:
    raise ValueError(f"Distortion strength {strength} out of range [0, "
                     f"{NUM_LEVELS}].")
  table = (IDENTITY[name],) + tuple(DISTORTIONS[name])
  value = float(np.interp(strength, np.arange(NUM_LEVELS + 1), table))
  return float(round(value)) if name in ("jpeg", "pixelate") else value

# ITU-R BT.601 luma weights, as Pillow's convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], np.float64)


def _to_uint8(x: np.ndarray) -> np.ndarray:
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _blur(image, sigma, rng):
  del rng
  x = image.astype(np.float64)
  # No blur across channels; reflect at the borders so edges do not darken.
  return _to_uint8(scipy.ndimage.gaussian_filter(x, (sigma, sigma, 0),
                                                 mode="reflect"))


def _noise(image, std, rng):
  x = image.astype(np.float64) / 255.0
  x = x + rng.normal(0.0, std, size=x.shape)
  return _to_uint8(x * 255.0)


def _pillow_roundtrip(image, **save_kwargs):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, **save_kwargs)
  with Image.open(io.BytesIO(buf.getvalue())) as im:
    return np.asarray(im.convert("RGB"), np.uint8)


def _jpeg(image, quality, rng):
  del rng
  return _pillow_roundtrip(image, format="JPEG", quality=int(quality))


def _jpeg2000(image, psnr_db, rng):
  del rng
  # A PSNR target rather than RankIQA's bit rates: on small images a rate
  # target hits OpenJPEG's minimum code-stream size (~260 bytes) and several
  # levels come out identical; PSNR targets stay ordered at any size.
  return _pillow_roundtrip(image, format="JPEG2000", quality_mode="dB",
                           quality_layers=[float(psnr_db)], irreversible=True)


def _contrast(image, factor, rng):
  del rng
  x = image.astype(np.float64)
  mean = np.mean(x @ _LUMA)
  return _to_uint8(mean + (x - mean) * factor)


def _saturation(image, factor, rng):
  del rng
  x = image.astype(np.float64)
  grey = (x @ _LUMA)[..., None]
  return _to_uint8(grey + (x - grey) * factor)


def _color_cast(image, offset, rng):
  del rng
  x = image.astype(np.float64)
  return _to_uint8(x + np.array([offset, 0.0, -offset]))


def _pixelate(image, factor, rng):
  del rng
  h, w = image.shape[:2]
  small = (max(1, round(w / factor)), max(1, round(h / factor)))
  im = Image.fromarray(image).resize(small, Image.BOX)
  return np.asarray(im.resize((w, h), Image.NEAREST), np.uint8)


def _impulse_noise(image, fraction, rng):
  out = image.copy()
  hit = rng.random(image.shape[:2]) < fraction
  salt = rng.random(image.shape[:2]) < 0.5
  out[hit & salt] = 255
  out[hit & ~salt] = 0
  return out


_FNS = {
    "gaussian_blur": _blur,
    "white_noise": _noise,
    "jpeg": _jpeg,
    "jpeg2000": _jpeg2000,
    "contrast_change": _contrast,
    "saturation": _saturation,
    "color_cast": _color_cast,
    "pixelate": _pixelate,
    "impulse_noise": _impulse_noise,
}


def apply_distortion(image_uint8: np.ndarray, name: str, level: int,
                     rng: np.random.Generator | None = None) -> np.ndarray:
  """Distorts an RGB image.

  Args:
    image_uint8: [h, w, 3] uint8 RGB image.
    name: one of `DISTORTION_NAMES`.
    level: 0 (returns a copy of the input) or 1..5, increasing strength.
    rng: numpy Generator for random distortions; required for those in `RANDOM_DISTORTIONS`.

  Returns:
    The distorted [h, w, 3] uint8 image (same size as the input).
  """
  image = np.asarray(image_uint8)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"apply_distortion needs an [h, w, 3] uint8 image, got "
                     f"{image.dtype} {image.shape}; convert with "
                     "np.asarray(PIL.Image.open(f).convert('RGB')).")
  if name not in _FNS:
    raise ValueError(f"Unknown distortion {name!r}; choose one of "
                     f"{list(DISTORTION_NAMES)}.")
  if not 0 <= int(level) <= NUM_LEVELS:
    raise ValueError(f"Distortion level {level} out of range; use 0 "
                     f"(pristine) to {NUM_LEVELS}.")
  if int(level) == 0:
    return image.copy()
  if name in RANDOM_DISTORTIONS and rng is None:
    raise ValueError(f"{name} needs rng=np.random.default_rng(seed) so "
                     "that the noise is reproducible.")
  out = _FNS[name](image, DISTORTIONS[name][int(level) - 1], rng)
  assert out.shape == image.shape, (name, out.shape, image.shape)
  return out


def apply_distortion_at(image_uint8: np.ndarray, name: str, strength: float,
                        rng: np.random.Generator | None = None) -> np.ndarray:
  """As `apply_distortion` at a continuous strength in [0, 5] (0: a copy)."""
  image = np.asarray(image_uint8)
  parameter = parameter_at(name, strength)  # Validates name and strength.
  if float(strength).is_integer():
    return apply_distortion(image, name, int(strength), rng)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"apply_distortion_at needs an [h, w, 3] uint8 image, "
                     f"got {image.dtype} {image.shape}.")
  if name in RANDOM_DISTORTIONS and rng is None:
    raise ValueError(f"{name} needs rng=np.random.default_rng(seed) so "
                     "that the noise is reproducible.")
  out = _FNS[name](image, parameter, rng)
  assert out.shape == image.shape, (name, out.shape, image.shape)
  return out
