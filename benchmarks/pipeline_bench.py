"""Input-pipeline benchmark: padding waste, batch shapes and throughput.

Prints, for the synthetic dataset and for a mix of KonIQ-like (1024x768) and
SPAQ-like (shorter side 512, various aspect ratios) fake images, the fraction
of real (non-padding) tokens in training batches, the number of distinct batch shapes and images/s,
in padded and in bucketed mode, with MUSIQ's preprocessing (patch 32, scales
224 and 384, all native patches).

Usage: python benchmarks/pipeline_bench.py [--num_mixed=96] [--batch_size=16]
"""

import argparse
import csv
import os
import tempfile
import time

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

import musiq_jax.datasets  # pylint: disable=unused-import
from musiq_jax import input_pipeline as ip
from musiq_jax import preprocessing

# (h, w) of SPAQ-like photos resized to a 512 shorter side, mixed orientations.
SPAQ_SIZES = [(512, 683), (683, 512), (512, 910), (910, 512), (512, 512),
              (512, 768), (768, 512), (512, 1109), (512, 640)]


def make_mixed(root: str, n: int, seed: int = 0) -> None:
  """A fake SPAQ-layout dataset: half 1024x768 photos, half SPAQ sizes."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "TestImage"))
  os.makedirs(os.path.join(root, "Annotations"))
  rows = []
  for i in range(n):
    h, w = (768, 1024) if i % 2 == 0 else SPAQ_SIZES[rng.integers(
        len(SPAQ_SIZES))]
    # Smooth random content: compresses like a photo, decodes at real cost.
    small = rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3), np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    name = f"{i + 1:05d}.jpg"
    img.save(os.path.join(root, "TestImage", name), quality=90)
    rows.append([name, float(rng.uniform(0, 100)), 1, 1, 1, 1, 1])
  with open(os.path.join(root, "Annotations",
                         "MOS and Image attribute scores.csv"), "w",
            newline="") as f:
    wr = csv.writer(f)
    wr.writerow(["Image name", "MOS", "Brightness", "Colorfulness",
                 "Contrast", "Noisiness", "Sharpness"])
    wr.writerows(rows)


def run(name, split, data_dir, cfg, batch_size, batching, num_buckets,
        num_batches):
  """Stats of `num_batches` training batches (full batches, shuffled stream).

  Training batches are what padding costs; an evaluation pass over a small
  dataset is dominated by the dummy rows that fill each bucket's last batch.
  """
  t = time.time()
  ds = ip.get_dataset(name, split, data_dir=data_dir, pp_config=cfg,
                      batch_size=batch_size, train=True, batching=batching,
                      num_buckets=num_buckets, shuffle_buffer=512)
  stats = ip.batch_stats(b for _, b in zip(range(num_batches), ds))
  stats["images_per_s"] = stats["examples"] / (time.time() - t)
  return stats


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--num_mixed", type=int, default=96)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--num_buckets", type=int, default=8)
  parser.add_argument("--num_batches", type=int, default=16)
  parser.add_argument("--synthetic_config", default="default")
  args = parser.parse_args()
  cfg = preprocessing.PreprocessConfig()  # MUSIQ's: 32 px, (224, 384), native.
  dl = tfds.download.DownloadConfig(try_download_gcs=False)
  with tempfile.TemporaryDirectory() as tmp:
    t = time.time()
    syn = f"synthetic_iqa/{args.synthetic_config}"
    tfds.builder(syn, data_dir=tmp).download_and_prepare(download_config=dl)
    print(f"built {syn} in {time.time() - t:.0f} s")
    manual = os.path.join(tmp, "mixed")
    make_mixed(manual, args.num_mixed)
    tfds.builder("spaq", data_dir=tmp).download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual, try_download_gcs=False))
    datasets = [(syn, "train+validation+test"),
                ("spaq", "train+validation+test")]
    print(f"batch_size={args.batch_size} num_buckets={args.num_buckets} "
          f"on {os.cpu_count()} CPU cores")
    print(f"{'dataset':<24} {'mode':<9} {'real tokens':>11} {'shapes':>6} "
          f"{'images/s':>9}")
    for name, split in datasets:
      label = name if name != "spaq" else "KonIQ+SPAQ-like mix"
      for mode in ("padded", "bucketed"):
        s = run(name, split, tmp, cfg, args.batch_size, mode,
                args.num_buckets, args.num_batches)
        print(f"{label:<24} {mode:<9} {s['real_fraction']:>10.1%} "
              f"{s['num_shapes']:>6} {s['images_per_s']:>9.1f}")


if __name__ == "__main__":
  main()
