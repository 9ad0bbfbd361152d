r"""JPEG decoders against TensorFlow's, the original MUSIQ's decoder.

The original decodes with `tf.io.decode_image(channels=3)`: libjpeg-turbo
with the fast integer IDCT (JDCT_IFAST, TF's default `dct_method=""`) and
fancy chroma upsampling. We decode with simplejpeg (libjpeg-turbo's TurboJPEG
API) set the same way (`fastdct=True, fastupsample=False`). This script
encodes a few hundred JPEGs from scikit-image's photos with Pillow, over
qualities 5..100, subsampling 4:4:4 / 4:2:2 / 4:2:0, baseline and
progressive, colour and greyscale, photo-sized and odd sizes, decodes each
with TF and with each candidate, and prints per setting the largest pixel
difference (0..255) from TF's pixels and the fraction of files decoded to
exactly TF's pixels.

Usage: python benchmarks/jpeg_decoder_check.py [--max_side=512]
"""

import argparse
import collections
import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position
import simplejpeg  # pylint: disable=g-import-not-at-top,wrong-import-position
from skimage import data as skdata  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from musiq_jax import image_io  # pylint: disable=g-import-not-at-top,wrong-import-position

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "camera")
QUALITIES = (5, 10, 25, 50, 75, 90, 95, 100)
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}

DECODERS = {
    "musiq_jax (simplejpeg fastdct)": image_io.decode_jpeg_like_tf,
    "simplejpeg default (accurate IDCT)": lambda d: simplejpeg.decode_jpeg(
        d, colorspace="RGB"),
    "simplejpeg fastdct+fastupsample": lambda d: simplejpeg.decode_jpeg(
        d, colorspace="RGB", fastdct=True, fastupsample=True),
    "Pillow": lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")),
}


def sources(max_side):
  """(name, uint8 image) pairs: photos, greyscale, odd crops and sizes."""
  out = []
  for name in PHOTOS:
    im = getattr(skdata, name)()
    if im.ndim == 3 and im.shape[-1] == 4:
      im = im[..., :3]
    scale = max_side / max(im.shape[:2])
    if scale < 1:
      pil = Image.fromarray(im)
      im = np.asarray(pil.resize((max(1, round(pil.width * scale)),
                                  max(1, round(pil.height * scale))),
                                 Image.BICUBIC))
    out.append((name, im))
    out.append((name + " odd 101x203", im[:101, :203]))
    out.append((name + " odd 17x9", im[5:22, 7:16]))
  return out


def encodings(image):
  """Pillow JPEG encodings of one image: (setting dict, bytes)."""
  grey = image.ndim == 2
  for q in QUALITIES:
    for sub in ([None] if grey else SUBSAMPLING):
      for progressive in (False, True):
        buf = io.BytesIO()
        kw = dict(quality=q, progressive=progressive)
        if sub is not None:
          kw["subsampling"] = sub
        Image.fromarray(image).save(buf, format="JPEG", **kw)
        yield ({"quality": q, "subsampling": "grey" if grey else
                SUBSAMPLING[sub], "progressive": progressive}, buf.getvalue())


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--max_side", type=int, default=512)
  args = ap.parse_args()
  rows = collections.defaultdict(lambda: collections.defaultdict(list))
  n = 0
  for name, image in sources(args.max_side):
    images = [image] if image.ndim == 2 else [image, image[..., 1]]
    for im in images:
      grey = im.ndim == 2
      size = "odd" if "odd" in name else "photo"
      for setting, data in encodings(im):
        n += 1
        want = tf.io.decode_image(data, channels=3).numpy().astype(np.int16)
        groups = [("all", "all"),
                  ("subsampling", setting["subsampling"]),
                  ("quality", str(setting["quality"])),
                  ("progressive", str(setting["progressive"])),
                  ("size", size), ("colour", "grey" if grey else "colour")]
        for dec, fn in DECODERS.items():
          got = fn(data).astype(np.int16)
          diff = int(np.abs(got - want).max()) if got.shape == want.shape \
              else 255
          for g in groups:
            rows[g][dec].append(diff)
  print(f"# {n} JPEGs from scikit-image photos ({', '.join(PHOTOS)}), "
        f"longer side <= {args.max_side} plus odd crops, encoded by Pillow "
        f"{Image.__version__}; reference tf.io.decode_image(channels=3), "
        f"TF {tf.__version__}; simplejpeg {simplejpeg.__version__}")
  print("max |diff| (0..255) / fraction of files decoded exactly to TF's "
        "pixels")
  header = "| setting | files | " + " | ".join(DECODERS) + " |"
  print(header)
  print("|" + "---|" * (len(DECODERS) + 2))
  order = {"all": 0, "subsampling": 1, "quality": 2, "progressive": 3,
           "colour": 4, "size": 5}
  keys = sorted(rows, key=lambda k: (order[k[0]], int(k[1]) if
                                     k[1].isdigit() else k[1]))
  for kind, value in keys:
    by_dec = rows[(kind, value)]
    diffs = next(iter(by_dec.values()))
    cells = []
    for dec in DECODERS:
      d = np.array(by_dec[dec])
      cells.append(f"{d.max()} / {np.mean(d == 0):.0%}")
    label = "all" if kind == "all" else f"{kind} {value}"
    print(f"| {label} | {len(diffs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
