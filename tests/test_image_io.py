"""Decoding: the original's pixels for ordinary files, clear errors for bad ones."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from musiq_jax import image_io
import musiq_fixtures as mf


def _encode(array, fmt, **kw):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format=fmt, **kw)
  return buf.getvalue()


@pytest.mark.parametrize("kw", [
    dict(quality=95), dict(quality=75, subsampling=0),
    dict(quality=30, subsampling=1, progressive=True), dict(quality=100)])
def test_jpeg_pixels_are_tf_decode_jpeg_pixels(kw):
  # simplejpeg with TF's settings (fast IDCT, fancy upsampling): TF's pixels
  # exactly (benchmarks/jpeg_decoder_check.py checks a few hundred files).
  rgb = mf.photo("chelsea")[:101, :203]
  for image in (rgb, rgb[..., 1]):  # Colour and greyscale.
    data = _encode(image, "JPEG", **kw)
    np.testing.assert_array_equal(image_io.decode_image(data),
                                  tf.io.decode_image(data, channels=3).numpy())


def test_lossless_formats_are_tf_decode_image_pixels():
  # Pillow decodes these; TF's decoders give the same pixels (alpha
  # dropped, palettes and 1/4-bit greyscale expanded) ...
  base = Image.fromarray(mf.photo("coffee")[:64, :48])

  def enc(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()

  cases = [enc(base, "PNG"), enc(base.convert("L"), "PNG"),
           enc(base.convert("RGBA"), "PNG"), enc(base.convert("P"), "PNG"),
           enc(base.convert("LA"), "PNG"), enc(base.convert("1"), "PNG"),
           enc(base.convert("P"), "PNG", transparency=3),
           enc(base.convert("L"), "PNG", bits=4),
           enc(base.convert("P"), "GIF"), enc(base, "BMP"),
           enc(base.convert("L"), "BMP")]
  for i, data in enumerate(cases):
    want = tf.io.decode_image(data, channels=3, expand_animations=False)
    np.testing.assert_array_equal(image_io.decode_image(data), want.numpy(),
                                  err_msg=f"case {i}")
  # ... except palette BMPs, whose palette TF ignores (it returns the colour
  # indices as grey levels); we keep Pillow's true colours.
  data = enc(base.convert("P"), "BMP")
  tf_px = tf.io.decode_image(data, channels=3).numpy()
  np.testing.assert_array_equal(tf_px[..., 0],
                                np.asarray(Image.open(io.BytesIO(data))))
  np.testing.assert_array_equal(image_io.decode_image(data),
                                np.asarray(Image.open(io.BytesIO(data))
                                           .convert("RGB")))


def test_jpeg_warnings_tf_tolerates_still_decode():
  # Bytes appended after the end-of-image marker: libjpeg warns, TF and
  # Pillow decode; so do we, with TF's pixels.
  data = _encode(mf.photo("rocket")[:40, :64], "JPEG", quality=90)
  noisy = data[:-2] + b"\x00" * 7 + data[-2:]
  want = tf.io.decode_image(noisy, channels=3).numpy()
  np.testing.assert_array_equal(image_io.decode_image(noisy), want)


def test_greyscale_rgba_palette_cmyk_16bit_become_rgb8():
  rgb = mf.photo("coffee")[:64, :48]
  cases = {
      "L": _encode(rgb[..., 0], "PNG"),
      "RGBA": _encode(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
                      "PNG"),
      "P": _encode(np.asarray(Image.fromarray(rgb).convert("P")), "PNG"),
      "CMYK": (lambda b: (Image.fromarray(rgb).convert("CMYK").save(
          b, format="JPEG"), b.getvalue())[1])(io.BytesIO()),
  }
  for mode, data in cases.items():
    out = image_io.decode_image(data, mode)
    assert out.shape == (64, 48, 3) and out.dtype == np.uint8, mode
  np.testing.assert_array_equal(image_io.decode_image(cases["RGBA"]), rgb)
  grey16 = (np.arange(64 * 48).reshape(64, 48) * 21).astype(np.uint16)
  buf = io.BytesIO()
  Image.fromarray(grey16).save(buf, format="PNG")
  out = image_io.decode_image(buf.getvalue(), "16bit.png")
  np.testing.assert_array_equal(
      out[..., 0], np.round(grey16 / 65535 * 255).astype(np.uint8))


def test_exif_orientation_is_applied():
  rgb = mf.photo("chelsea")[:40, :60]
  exif = Image.Exif()
  exif[0x0112] = 6  # Rotate 90 CW to display.
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format="PNG", exif=exif)
  out = image_io.decode_image(buf.getvalue())
  assert out.shape == (60, 40, 3)
  np.testing.assert_array_equal(out, np.rot90(rgb, k=-1))


def test_one_pixel_and_extreme_aspect_ratio_decode():
  assert image_io.decode_image(_encode(np.zeros((1, 1, 3), np.uint8),
                                       "PNG")).shape == (1, 1, 3)
  assert image_io.decode_image(_encode(np.zeros((2000, 4, 3), np.uint8),
                                       "PNG")).shape == (2000, 4, 3)


@pytest.mark.parametrize("name,content,problem", [
    ("empty.jpg", b"", "empty file"),
    ("text.jpg", b"this is not an image\n" * 10, "not an image"),
])
def test_bad_bytes_name_the_file_and_problem(tmp_path, name, content, problem):
  path = tmp_path / name
  path.write_bytes(content)
  with pytest.raises(image_io.ImageError, match=problem) as e:
    image_io.read_image(path)
  assert str(path) in str(e.value)


def test_truncated_and_missing(tmp_path):
  data = _encode(mf.photo("rocket"), "JPEG")
  path = tmp_path / "cut.jpg"
  path.write_bytes(data[:len(data) // 3])
  with pytest.raises(image_io.ImageError, match="truncated"):
    image_io.read_image(path)
  with pytest.raises(image_io.ImageError, match="not found"):
    image_io.read_image(tmp_path / "missing.jpg")
  with pytest.raises(image_io.ImageError, match="directory"):
    image_io.read_image(tmp_path)


def test_canonical_bytes_decode_in_tf_to_the_same_pixels():
  rgb = mf.photo("astronaut")[:50, :70]
  exif = Image.Exif()
  exif[0x0112] = 3
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format="JPEG", exif=exif)
  for data in (_encode(rgb, "JPEG"), buf.getvalue(),
               _encode(np.dstack([rgb, rgb[..., :1]]), "PNG")):
    canon, _ = image_io.canonical_bytes(data)
    np.testing.assert_array_equal(image_io.tf_decode(canon).numpy(),
                                  image_io.decode_image(data))
  plain = _encode(rgb, "JPEG")
  assert image_io.canonical_bytes(plain)[0] is plain  # No re-encoding.
