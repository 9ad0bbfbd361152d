r"""MUSIQ training-step throughput (padded vs bucketed batches) and memory.

The trainer's own jitted step (`musiq_jax.trainer.Trainer.train_step` of
configs/koniq.py: the default MUSIQ model, SGD momentum 0.9 with global-norm
clipping 1.0, MSE on the score, donated state, one device) on token batches
built directly, shaped like the default training
config: scales 224 and 384 plus at most 512 native tokens, i.e. 193 + min(
native patches, 512) real tokens per image, for a KonIQ/SPAQ-like mix of
photo sizes. Prints:

1. real (non-padding) tokens/s when every batch is padded to the longest
   possible example (705 tokens, the original's fixed shape) and when images
   are grouped by length and each batch padded to its `length_bucket`;
2. XLA's buffer sizes for one step at the default config's batch (32, from
   the compiled program), and the peak resident memory (VmHWM) of a fresh
   process running steps at `--rss_batch_size` (default 4: a batch-32 step
   takes minutes on 2 shared cores; pass 32 to measure it).

Usage:
  python benchmarks/train_bench.py [--batch_size=2] [--steps=3]
      [--rss_batch_size=4] [--mem_batch_size=32] [--no_rss]
"""

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top,wrong-import-position
from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from musiq_jax import trainer as trainer_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from musiq_jax.configs import koniq  # pylint: disable=g-import-not-at-top,wrong-import-position

NATIVE_CAP = 512  # configs/base.py: pp.max_seq_len_from_original_res.
BASE = 49 + 144  # Tokens of the 224 and 384 scales.
# (w, h) of KonIQ-like and SPAQ-like (shorter side 512) photos and smaller ones.
MIX = ((1024, 768), (512, 683), (683, 512), (512, 910), (512, 512),
       (640, 480), (480, 360), (400, 300), (768, 512), (320, 240))


def real_lengths(n: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  sizes = [MIX[i] for i in rng.integers(len(MIX), size=n)]
  return np.array([BASE + min(preprocessing.num_patches(h, w, 32), NATIVE_CAP)
                   for w, h in sizes])


def token_batch(lengths, length: int, rng) -> dict:
  """Random tokens, `lengths[i]` real ones in row i, padded to `length`."""
  b = len(lengths)
  mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(
      np.int32)
  return {
      "patches": (rng.uniform(-1, 1, (b, length, 3072)).astype(np.float32) *
                  mask[..., None]),
      "spatial": rng.integers(0, 100, (b, length)).astype(np.int32) * mask,
      "scale": rng.integers(0, 3, (b, length)).astype(np.int32) * mask,
      "mask": mask,
  }


def make_trainer():
  """The trainer of the default config (KonIQ's), on one device."""
  return trainer_lib.Trainer(koniq.get_config(), devices=jax.devices()[:1])


def make_step(trainer):
  """step(state, numpy batch, rng): the trainer's own train_step."""

  def step(state, batch, rng):
    batch = dict(batch, valid=np.ones(batch["mask"].shape[:1], np.float32))
    state, out = trainer.train_step(state, trainer.device_batch(batch), rng)
    return state, out["loss"]

  return step


def init_state(trainer):
  return trainer.init_state(jax.random.PRNGKey(0))


def run_mode(step, state, batches, rng_seed=0):
  """Warms every shape up, then times one pass; returns (state, real tok/s)."""
  rng = jax.random.PRNGKey(rng_seed)
  seen = set()
  for b in batches:  # Compile every distinct shape first.
    shape = b["mask"].shape
    if shape not in seen:
      seen.add(shape)
      state, loss = step(state, b, rng)
      loss.block_until_ready()
  t = time.perf_counter()
  for i, b in enumerate(batches):
    state, loss = step(state, b, jax.random.fold_in(rng, i))
  loss.block_until_ready()
  elapsed = time.perf_counter() - t
  real = sum(int(b["mask"].sum()) for b in batches)
  total = sum(b["mask"].size for b in batches)
  return state, real / elapsed, real / total, len(seen), elapsed


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch_size", type=int, default=2)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--rss_batch_size", type=int, default=4)
  ap.add_argument("--mem_batch_size", type=int, default=32,
                  help="batch of XLA's buffer-size analysis (compile only)")
  ap.add_argument("--no_rss", action="store_true")
  ap.add_argument("--rss_probe", type=int, default=0,
                  help=argparse.SUPPRESS)  # Internal: run steps, then exit.
  args = ap.parse_args()

  trainer = make_trainer()
  step = make_step(trainer)
  if args.rss_probe:  # Fresh process: one compile + two steps at this batch.
    state = init_state(trainer)
    rng = np.random.default_rng(0)
    b = token_batch(real_lengths(args.rss_probe), BASE + NATIVE_CAP, rng)
    b["label"] = np.zeros([args.rss_probe], np.float32)
    for i in range(2):
      state, loss = step(state, b, jax.random.PRNGKey(i))
    print("loss", float(loss))
    return

  print(f"# MUSIQ train-step benchmark  ({common.loadavg()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__})")
  bs, n = args.batch_size, args.batch_size * args.steps
  lengths = real_lengths(n)
  rng = np.random.default_rng(1)
  labels = rng.uniform(0, 1, n).astype(np.float32)
  padded, bucketed = [], []
  for i in range(0, n, bs):
    b = token_batch(lengths[i:i + bs], BASE + NATIVE_CAP, rng)
    b["label"] = labels[i:i + bs]
    padded.append(b)
  order = np.argsort(lengths, kind="stable")  # Group similar lengths.
  for i in range(0, n, bs):
    idx = order[i:i + bs]
    b = token_batch(lengths[idx], scorer_lib.length_bucket(
        int(lengths[idx].max())), rng)
    b["label"] = labels[idx]
    bucketed.append(b)

  state = init_state(trainer)
  print(f"\n## Train step, default MUSIQ, batch {bs}, {args.steps} steps "
        f"per mode ({n} images; real tokens per image {lengths.min()}.."
        f"{lengths.max()}, mean {lengths.mean():.0f})")
  print("| batching | shapes | real-token fraction | s/step | real tokens/s |")
  print("|---|---|---|---|---|")
  results = {}
  for name, batches in (("padded to 705", padded), ("bucketed", bucketed)):
    state, tps, frac, shapes, elapsed = run_mode(step, state, batches)
    results[name] = tps
    print(f"| {name} | {shapes} | {frac:.2f} | {elapsed / len(batches):.1f} |"
          f" {tps:.0f} |", flush=True)
  print(f"bucketed / padded: "
        f"{results['bucketed'] / results['padded to 705']:.2f}x")

  big = args.mem_batch_size
  b = token_batch(real_lengths(big), BASE + NATIVE_CAP,
                  np.random.default_rng(0))
  b["label"] = np.zeros([big], np.float32)
  b["valid"] = np.ones([big], np.float32)
  b = trainer.device_batch(b)
  mem = trainer.jitted_train_step(b).lower(
      state, b, jax.random.PRNGKey(0)).compile().memory_analysis()
  if mem is not None:
    print(f"\nXLA buffers for one step at batch {big} x 705 tokens: "
          f"temp {mem.temp_size_in_bytes / 1e9:.2f} GB, arguments "
          f"{mem.argument_size_in_bytes / 1e9:.2f} GB")
  if not args.no_rss:
    big = args.rss_batch_size
    code = ("import runpy, sys\n"
            f"sys.argv = ['train_bench.py', '--rss_probe={big}']\n"
            "runpy.run_path('benchmarks/train_bench.py', "
            "run_name='__main__')\n")
    print(f"Peak RSS (VmHWM), fresh process, train steps at batch {big}: "
          f"{common.rss_of(code):.2f} GB")
  print(f"({common.loadavg()} at the end)")


if __name__ == "__main__":
  main()
