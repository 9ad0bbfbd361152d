r"""Train-step speed and memory of the default MUSIQ on KonIQ-sized inputs.

    python benchmarks/train_step_bench.py --batch_size=32 --steps=200

Feeds synthetic token batches shaped like KonIQ's 1024x768 photos in the
paper's training setting (224 + 384 scales + at most 512 native tokens:
49 + 144 + 512 = 705 tokens) straight to the jitted optax step (no tf.data,
so it runs where TensorFlow is not installed, e.g. a GPU box). Prints
steps/s, images/s, real tokens/s and peak device memory.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from musiq_jax.models import musiq


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--tokens", type=int, default=705)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = p.parse_args()
  dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  model = musiq.Model(num_scales=3, dropout_rate=0.1, dtype=dtype)
  rng = np.random.default_rng(0)
  b, l = args.batch_size, args.tokens
  mask = np.ones((b, l), np.int32)
  mask[:, 49 - 14:49] = 0  # 224 scale of a 4:3 image: 7x5 real tokens.
  mask[:, 193 - 48:193] = 0  # 384 scale: 12x8 real tokens.
  batch = {
      "patches": jnp.asarray(rng.uniform(-1, 1, (b, l, 3072)), jnp.float32),
      "spatial": jnp.asarray(rng.integers(0, 100, (b, l)), jnp.int32),
      "scale": jnp.asarray(np.repeat([[0] * 49 + [1] * 144 + [2] * (l - 193)],
                                     b, 0), jnp.int32),
      "mask": jnp.asarray(mask),
      "label": jnp.asarray(rng.uniform(0, 100, b), jnp.float32),
  }
  params = jax.jit(model.init)(jax.random.PRNGKey(0),
                               {k: v[:1] for k, v in batch.items()})["params"]
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(2e-3, 0.9))
  opt_state = tx.init(params)

  def step(params, opt_state, batch, rng):
    def loss_fn(p):
      out = model.apply({"params": p}, batch, train=True,
                        rngs={"dropout": rng})[:, 0]
      return jnp.mean((out - batch["label"])**2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  t0 = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, batch,
                                 jax.random.PRNGKey(1))
  loss.block_until_ready()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(args.steps):
    params, opt_state, loss = step(params, opt_state, batch,
                                   jax.random.PRNGKey(i))
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
