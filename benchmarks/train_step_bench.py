r"""Train-step speed and memory of the default MUSIQ on KonIQ-sized inputs.

    python benchmarks/train_step_bench.py --batch_size=32 --steps=200

Feeds synthetic token batches shaped like KonIQ's 1024x768 photos in the
paper's training setting (224 + 384 scales + at most 512 native tokens:
49 + 144 + 512 = 705 tokens) straight to the trainer's own jitted step
(`musiq_jax.trainer.Trainer.train_step` of configs/koniq.py, one device; no
tf.data, so it runs where TensorFlow is not installed, e.g. a GPU box).
Prints steps/s, images/s, real tokens/s and peak device memory.
"""

import argparse
import time

import jax
import numpy as np

from musiq_jax import trainer as trainer_lib
from musiq_jax.configs import koniq


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--tokens", type=int, default=705)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = p.parse_args()
  config = koniq.get_config()
  config.dtype = args.dtype
  config.input.batch_size = args.batch_size
  trainer = trainer_lib.Trainer(config, devices=jax.devices()[:1])
  rng = np.random.default_rng(0)
  b, l = args.batch_size, args.tokens
  mask = np.ones((b, l), np.int32)
  mask[:, 49 - 14:49] = 0  # 224 scale of a 4:3 image: 7x5 real tokens.
  mask[:, 193 - 48:193] = 0  # 384 scale: 12x8 real tokens.
  batch = trainer.device_batch({
      "patches": rng.uniform(-1, 1, (b, l, 3072)).astype(np.float32),
      "spatial": rng.integers(0, 100, (b, l)).astype(np.int32),
      "scale": np.repeat([[0] * 49 + [1] * 144 + [2] * (l - 193)], b,
                         0).astype(np.int32),
      "mask": mask,
      "label": rng.uniform(0, 100, b).astype(np.float32),
      "valid": np.ones(b, np.float32),
  })
  state = trainer.init_state(jax.random.PRNGKey(0))

  def step(state, batch, rng):
    state, out = trainer.train_step(state, batch, rng)
    return state, out["loss"]

  t0 = time.perf_counter()
  state, loss = step(state, batch, jax.random.PRNGKey(1))
  loss.block_until_ready()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(args.steps):
    state, loss = step(state, batch, jax.random.PRNGKey(i))
  loss.block_until_ready()
  dt = (time.perf_counter() - t0) / args.steps
  stats = jax.devices()[0].memory_stats() or {}
  real = int(mask.sum())
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
  print(f"batch {b} x {l} tokens ({real / mask.size:.0%} real), {args.dtype}")
  print(f"first step (compile+run): {compile_s:.1f} s")
  print(f"steady: {1 / dt:.2f} steps/s, {b / dt:.1f} images/s, "
        f"{real / dt:,.0f} real tokens/s, loss {float(loss):.3f}")
  if stats:
    print(f"peak device memory: "
          f"{stats.get('peak_bytes_in_use', 0) / 2**30:.2f} GiB")


if __name__ == "__main__":
  main()
