r"""Time to the first score of `predict` processes, with the compilation cache.

Writes JPEG photos to a temporary folder and runs, one after the other,
fresh `python -m musiq_jax.predict --format=json` processes on one of them:
  1. with an empty `--compilation_cache_dir` (compiles, fills the cache);
  2. again with the same cache (loads the compiled program from the program
     store, `compilation_cache.ProgramStore`: no tracing, no lowering);
  3. again with `--noprogram_store` (JAX's persistent cache alone: traces
     and lowers, then loads the compiled program);
  4. with `--nocompilation_cache` (compiles again: the control).
For each it prints the wall time from starting the process to its first
score line on stdout, and the ratios of 1 to 2 and of 1 to 3. Uses the random-weight
checkpoint of `inference_bench.py`.

Usage:
  python benchmarks/compile_cache_bench.py [--size=1024x768] [--rounds=1]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import inference_bench  # pylint: disable=g-import-not-at-top,wrong-import-position


def first_score_s(args):
  """Seconds from process start to its first score line; and its exit code."""
  cmd = [sys.executable, "-m", "musiq_jax.predict", "--format=json", *args]
  t = time.perf_counter()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=common._ROOT)  # pylint: disable=protected-access
  first = None
  for line in proc.stdout:
    if first is None and '"score"' in line:
      first = time.perf_counter() - t
  _, err = proc.communicate()
  if proc.returncode or first is None:
    raise RuntimeError(f"predict failed ({proc.returncode}):\n{err[-3000:]}")
  return first


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--size", default="1024x768")
  ap.add_argument("--rounds", type=int, default=1,
                  help="Repeat the three runs (fresh cache each round).")
  args = ap.parse_args()
  common.random_checkpoint(inference_bench.CKPT)
  w, h = map(int, args.size.split("x"))
  print(f"# Compilation cache: time to first score ({common.loadavg()}, "
        f"{os.cpu_count()} CPUs; {args.size} JPEG, fresh processes)")
  print("| round | 1: empty cache s | 2: cache filled by 1 s | "
        "3: same, --noprogram_store s | 4: --nocompilation_cache s | "
        "1 / 2 | 1 / 3 |")
  print("|---|---|---|---|---|---|---|")
  ratios = []
  with tempfile.TemporaryDirectory() as tmp:
    image = os.path.join(tmp, "photo.jpg")
    Image.fromarray(common.photo(w, h)).save(image, quality=90)
    base = [f"--ckpt_path={inference_bench.CKPT}", f"--image_path={image}"]
    for r in range(args.rounds):
      cache = os.path.join(tmp, f"cache{r}")
      t1 = first_score_s(base + [f"--compilation_cache_dir={cache}"])
      t2 = first_score_s(base + [f"--compilation_cache_dir={cache}"])
      t3 = first_score_s(base + [f"--compilation_cache_dir={cache}",
                                 "--noprogram_store"])
      t4 = first_score_s(base + ["--nocompilation_cache"])
      ratios.append((t1 / t2, t1 / t3))
      print(f"| {r + 1} | {t1:.2f} | {t2:.2f} | {t3:.2f} | {t4:.2f} | "
            f"**{t1 / t2:.2f}x** | {t1 / t3:.2f}x |", flush=True)
  med = np.median(np.asarray(ratios), axis=0)
  print(f"\nmedian 1 / 2: {med[0]:.2f}x, 1 / 3: {med[1]:.2f}x "
        f"({common.loadavg()} at the end)")


if __name__ == "__main__":
  main()
