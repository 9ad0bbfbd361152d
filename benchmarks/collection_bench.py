"""Folder-scoring throughput: `predict` over a folder of mixed-size photos.

Writes `--num` JPEGs (quality 90) into a temporary folder: crops and resizes
of the photos scikit-image ships, at sizes a photo collection has (phone
and camera photos, portraits, panoramas, thumbnails; 16 sizes), and scores
them with a random full-size MUSIQ checkpoint in the released layout (3
scales, 14 layers: the cost of the real ones), through the code path of
`python -m musiq_jax.predict --image_path=DIR --output=FILE --format=json`
(the lazy walk, `Scorer.score_batches`, the JSON writer), at batch 1 and
batched. Prints images/s of the first pass (compilation included: what a
user sees) and of a second pass over the same folder (programs compiled).

Usage: python benchmarks/collection_bench.py [--num=1000] [--batch_sizes=1,8]
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

# (width, height) of a mixed collection.
SIZES = ((1024, 768), (768, 1024), (640, 480), (480, 640), (800, 600),
         (512, 384), (384, 512), (1280, 720), (720, 1280), (1200, 900),
         (1600, 1200), (1024, 1024), (2048, 512), (300, 200), (256, 256),
         (1080, 1350))
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
           "immunohistochemistry", "retina")


def make_folder(root: str, n: int, seed: int = 0) -> None:
  """n photos: a random crop (half to all of each side) of a skimage photo,
  resized (bicubic) to one of SIZES."""
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  sources = [getattr(skdata, s)() for s in SOURCES]
  sources = [np.repeat(s[..., None], 3, -1) if s.ndim == 2 else s[..., :3]
             for s in sources]
  for i in range(n):
    src = sources[rng.integers(len(sources))]
    h, w = src.shape[:2]
    ch, cw = (int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0)))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    size = SIZES[rng.integers(len(SIZES))]
    img = Image.fromarray(np.ascontiguousarray(src[y:y + ch, x:x + cw]))
    img.resize(size, Image.BICUBIC).save(
        os.path.join(root, f"{i:05d}.jpg"), quality=90)


def score_folder(scorer, folder: str, out_path: str) -> float:
  """predict's path: lazy walk -> score_batches -> JSON lines; seconds."""
  from musiq_jax import collection  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  with open(out_path, "w") as out:
    writer = collection.make_writer("json", out)
    n = 0
    for results in scorer.score_batches(collection.iter_paths([folder])):
      writer.write([r.to_dict() for r in results])
      n += sum(r.error is None for r in results)
  assert n == len(os.listdir(folder)), n
  return time.perf_counter() - start


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--num", type=int, default=1000)
  p.add_argument("--batch_sizes", default="1,8")
  p.add_argument("--passes", type=int, default=2,
                 help="1: only the first pass (compilation included)")
  args = p.parse_args()
  from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  ckpt = os.path.join(common.CACHE_DIR, "random_musiq.npz")
  common.random_checkpoint(ckpt)
  with tempfile.TemporaryDirectory() as tmp:
    folder = os.path.join(tmp, "photos")
    os.makedirs(folder)
    t = time.perf_counter()
    make_folder(folder, args.num)
    print(f"{args.num} photos of {len(SIZES)} sizes written in "
          f"{time.perf_counter() - t:.1f} s; {jax.devices()[0].platform}, "
          f"{os.cpu_count()} CPUs, {common.loadavg()}", flush=True)
    for bs in map(int, args.batch_sizes.split(",")):
      scorer = scorer_lib.load_scorer(ckpt, batch_size=bs)
      out = os.path.join(tmp, f"scores_{bs}.json")
      first = score_folder(scorer, folder, out)
      line = (f"batch {bs}: first pass {args.num / first:.2f} images/s "
              f"({first:.1f} s, {scorer.num_compilations()} programs "
              "compiled)")
      if args.passes > 1:
        second = score_folder(scorer, folder, out)
        line += (f", second pass {args.num / second:.2f} images/s "
                 f"({second:.1f} s)")
      print(f"{line}; {common.loadavg()}", flush=True)


if __name__ == "__main__":
  main()
