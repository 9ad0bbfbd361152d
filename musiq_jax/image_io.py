"""Image decoding with clear errors, matching the original's pixels, no TF.

The original MUSIQ decodes with TF's `decode_jpeg`/`decode_image`, which
run libjpeg-turbo with the fast integer IDCT (`JDCT_IFAST`: TF's default
`dct_method=""`, tensorflow/core/kernels/image/decode_image_op.cc) and fancy
chroma upsampling (`fancy_upscaling=True`, tensorflow/core/lib/jpeg/
jpeg_mem.h). Pillow uses the accurate IDCT, whose pixels differ by up to ~18
levels on high-quality JPEGs. So RGB and greyscale JPEGs are decoded with
simplejpeg (libjpeg-turbo's TurboJPEG API) with `fastdct=True,
fastupsample=False`, TF's settings, which gives TF's pixels exactly
(`benchmarks/jpeg_decoder_check.py` measures it: every one of its few hundred
test files, qualities 5..100, 4:4:4/4:2:2/4:2:0, baseline and progressive,
greyscale, odd sizes). The lossless formats (PNG, GIF, BMP, ...) and what TF
cannot decode (CMYK JPEGs, 16-bit, TIFF, WebP) are decoded by Pillow, which
also reads the format, mode and EXIF orientation.

Every failure raises `ImageError` naming the file and the problem; nothing
here prints a bare traceback for a bad image.
"""

from __future__ import annotations

import io
import os
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError
import simplejpeg

# JPEG colour modes libjpeg decodes to RGB as TF does (YCbCr reads as "RGB").
_TURBO_JPEG_MODES = {"RGB", "L"}
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
  """An image that cannot be scored; `str()` names the file and the problem."""

  def __init__(self, source: str, problem: str):
    super().__init__(f"{source}: {problem}")
    self.source = source
    self.problem = problem


def _apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
  """Applies an EXIF orientation code (1..8) to an [h, w, c] array."""
  ops = {
      2: lambda x: x[:, ::-1],
      3: lambda x: x[::-1, ::-1],
      4: lambda x: x[::-1],
      5: lambda x: np.swapaxes(x, 0, 1),
      6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
      7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
      8: lambda x: np.swapaxes(x, 0, 1)[::-1],
  }
  op = ops.get(orientation)
  return np.ascontiguousarray(op(image)) if op else image


def _pillow_to_rgb8(im: Image.Image) -> np.ndarray:
  """Any Pillow image -> uint8 RGB, scaling 16/32-bit data to 8 bits."""
  if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    arr = np.asarray(im, dtype=np.float64)
    top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
    arr = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(arr[..., None], 3, axis=-1)
  return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _open(data: bytes, source: str) -> Tuple[Image.Image, int]:
  """Opens `data` with Pillow (header only); returns (image, orientation)."""
  if not data:
    raise ImageError(source, "empty file (0 bytes)")
  try:
    im = Image.open(io.BytesIO(data))
    orientation = 1
    try:
      orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # pylint: disable=broad-except
      orientation = 1  # Malformed EXIF: pixels are still usable.
  except UnidentifiedImageError:
    raise ImageError(source, "not an image file (format not recognised)")
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageError(source, f"corrupt or truncated image ({e})")
  except Image.DecompressionBombError as e:
    raise ImageError(source, f"image too large to decode safely ({e})")
  if im.width < 1 or im.height < 1:
    raise ImageError(source, f"image has no pixels ({im.width}x{im.height})")
  return im, orientation


def _load(im: Image.Image, source: str) -> None:
  """Fully decodes a Pillow image; raises ImageError on bad pixel data."""
  try:
    im.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageError(source, f"corrupt or truncated image ({e})")
  except Image.DecompressionBombError as e:
    raise ImageError(source, f"image too large to decode safely ({e})")


def probe(data: bytes, source: str = "<bytes>") -> Tuple[Image.Image, int]:
  """Opens and fully loads `data` with Pillow; returns (image, orientation)."""
  im, orientation = _open(data, source)
  _load(im, source)
  return im, orientation


def decode_jpeg_like_tf(data: bytes, strict: bool = True) -> np.ndarray:
  """JPEG bytes -> uint8 [h, w, 3] RGB exactly as TF's `decode_jpeg` /
  `decode_image(channels=3)` with their defaults (fast integer IDCT, fancy
  upsampling; greyscale replicated to 3 channels). Raises ValueError."""
  return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True,
                                fastupsample=False, strict=strict)


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
  """Encoded image bytes -> uint8 [h, w, 3] RGB with EXIF orientation applied."""
  im, orientation = _open(data, source)
  pixels = None
  if im.format == "JPEG" and im.mode in _TURBO_JPEG_MODES:
    try:
      pixels = decode_jpeg_like_tf(data)
    except ValueError:
      # Truncated or corrupt (Pillow says which), or a warning that strict
      # mode refuses but TF tolerates (e.g. extraneous bytes): TF's pixels.
      _load(im, source)
      try:
        pixels = decode_jpeg_like_tf(data, strict=False)
      except ValueError:
        pixels = None
  if pixels is None:
    _load(im, source)
    pixels = _pillow_to_rgb8(im)
  return _apply_orientation(pixels, orientation)


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
  """Reads and decodes an image file; raises ImageError naming the file."""
  source = os.fspath(path)
  if not os.path.exists(source):
    raise ImageError(source, "file not found")
  if os.path.isdir(source):
    raise ImageError(source, "is a directory, not an image file")
  try:
    with open(source, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ImageError(source, f"cannot read file ({e.strerror})")
  return decode_image(data, source)


def canonical_bytes(data: bytes, source: str = "<bytes>") -> Tuple[bytes, str]:
  """Bytes that `tf.io.decode_image(channels=3)` decodes to `decode_image(data)`.

  Used by dataset builders so that the tf.data path sees the same pixels as
  prediction: ordinary RGB/greyscale JPEGs and PNGs without a rotation pass
  through untouched (no re-encoding loss); anything else is re-encoded as a
  lossless PNG of the decoded RGB pixels. Returns (bytes, format).
  """
  im, orientation = probe(data, source)
  if (im.format in ("JPEG", "PNG") and im.mode in ("RGB", "L")
      and orientation == 1):
    return data, im.format.lower()
  buf = io.BytesIO()
  Image.fromarray(decode_image(data, source)).save(buf, format="PNG")
  return buf.getvalue(), "png"


def tf_decode(encoded):
  """Graph-mode decode for tf.data of bytes made by `canonical_bytes`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def image_size(path: str) -> Optional[Tuple[int, int]]:
  """(h, w) after EXIF orientation from the header only, or None if unreadable."""
  try:
    with Image.open(path) as im:
      w, h = im.size
      o = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    return (w, h) if o in (5, 6, 7, 8) else (h, w)
  except Exception:  # pylint: disable=broad-except
    return None
