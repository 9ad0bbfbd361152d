r"""One MUSIQ train step, ours (JAX) next to the same step in PyTorch.

Same run, same weights (the default 3-scale MUSIQ, random weights in the
original `.npz` layout, mapped into pyiqa's state dict), same batch of
tokens: a 1024x768 photo preprocessed as the paper trains on KonIQ (224 and
384 scales plus at most 512 native tokens: 705 tokens), squared error to a
label, plain SGD. Ours is `musiq_jax.trainer.train_step` (jitted, state
donated); PyTorch's is pyiqa's `musiq_arch.py` MUSIQ with autograd and
`torch.optim.SGD`, 2 threads (`--torch_compile` also times it under
`torch.compile`). Before timing, it checks that both give the same loss and
the same gradients (every parameter, relative to the largest gradient of
that parameter); pyiqa runs with the original's tanh GELU for that check
and for the timing (the erf GELU costs the same).

The two steps are timed in turn (ours, torch, ours, ...) and the speed-up
is the median of the per-round ratios, as in `inference_bench.py`; the
float32 2048^3 matmul is timed in the same rounds for the FLOP/s ratio
(step FLOPs = 3x the forward's formula count: forward + two backward
matmuls per forward matmul).

Usage:
  python benchmarks/train_vs_pytorch_bench.py [--repeats=5] [--torch_compile]
      [--batch_size=1]
"""

import argparse
import functools
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import inference_bench  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position
from flax import traverse_util  # pylint: disable=g-import-not-at-top,wrong-import-position

from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top,wrong-import-position
from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from musiq_jax import trainer as train_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

CKPT = inference_bench.CKPT
LR = 1e-3


def koniq_tokens(batch_size: int):
  """[batch] 1024x768 photos as the paper's KonIQ training sees them."""
  cfg = preprocessing.PreprocessConfig(max_seq_len_from_original_res=512)
  feats = [preprocessing.preprocess_image(common.photo(1024, 768, i), cfg)
           for i in range(batch_size)]
  batch = preprocessing.pad_batch(feats)
  batch["label"] = np.linspace(0.2, 0.8, batch_size).astype(np.float32)
  return batch


def mse(outputs, batch):
  return jnp.mean((outputs[:, 0] - batch["label"])**2)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--batch_size", type=int, default=1)
  ap.add_argument("--torch_compile", action="store_true",
                  help="Also time pyiqa's step under torch.compile.")
  args = ap.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)
  print(f"# MUSIQ train step, ours vs PyTorch ({common.loadavg()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads)")

  flat = common.random_checkpoint(CKPT)
  scorer = scorer_lib.load_scorer(CKPT)
  model, params = scorer.model, scorer.params
  batch = koniq_tokens(args.batch_size)
  n_tok = batch["mask"].shape[1]
  real = int(batch["mask"].sum())
  print(f"batch {args.batch_size} x {n_tok} tokens ({real} real), squared "
        f"error, SGD lr {LR}")

  # -- Ours. -----------------------------------------------------------------
  tx = optax.sgd(LR)
  # The trainer's own step, with a task of this model, loss and weights
  # (what `tasks.MusiqTask` gives the trainer for a regression config).
  task = types.SimpleNamespace(
      apply=lambda p, b, train, rng=None: model.apply(
          {"params": p}, b, train=train, rngs={"dropout": rng}),
      loss=lambda outputs, b: (mse(outputs, b), {}))
  step_fn = jax.jit(functools.partial(train_lib.train_step, task=task,
                                      tx=tx),
                    donate_argnums=(0,))
  jbatch = jax.tree.map(jnp.asarray, batch)
  grad_fn = jax.jit(jax.value_and_grad(lambda p, b: mse(
      model.apply({"params": p}, b, train=True), b)))
  loss_ours, grads_ours = grad_fn(params, jbatch)

  def fresh_state():
    p = jax.tree.map(jnp.array, params)  # A copy: the step donates it.
    return train_lib.TrainState(step=jnp.zeros([], jnp.int32), params=p,
                                opt_state=tx.init(p))

  state = [fresh_state()]
  rng = jax.random.PRNGKey(0)

  def ours():
    state[0], metrics = step_fn(state[0], jbatch, rng)
    return float(metrics["loss"])

  t = time.perf_counter()
  ours()
  t_first = time.perf_counter() - t

  # -- PyTorch (pyiqa's module). ---------------------------------------------
  net, origin = common.build_pyiqa(flat, tanh_gelu=True)
  opt = torch.optim.SGD(net.parameters(), lr=LR)
  tokens = common.pyiqa_tokens(batch)
  label = torch.from_numpy(batch["label"])

  def torch_step(module):
    def run():
      opt.zero_grad(set_to_none=True)
      loss = ((module(tokens)[:, 0] - label)**2).mean()
      loss.backward()
      opt.step()
      return loss.item()
    return run

  # Gradients at the same weights, before any step.
  opt.zero_grad(set_to_none=True)
  loss_ref = ((net(tokens)[:, 0] - label)**2).mean()
  loss_ref.backward()
  grads_ref = {k: v.grad.numpy() for k, v in net.named_parameters()}
  mapped = common.pyiqa_state_dict(
      traverse_util.flatten_dict(jax.device_get(grads_ours), sep="/"))
  # The attention key biases' gradient is exactly zero (a softmax does not
  # change when every logit of a query moves by the same q.b): both sides
  # hold rounding noise there, checked against the largest gradient overall.
  zero = [k for k in grads_ref if k.endswith("attention.key.bias")]
  scale = max(float(np.abs(g).max()) for g in grads_ref.values())
  rel = {k: float(np.abs(mapped[k].numpy() - g).max() /
                  (scale if k in zero else max(np.abs(g).max(), 1e-30)))
         for k, g in grads_ref.items()}
  worst_key = max((k for k in rel if k not in zero), key=rel.get)
  worst, worst_zero = rel[worst_key], max(rel[k] for k in zero)
  # Relative L2 error per tensor (less noisy than the max entry).
  l2 = {k: float(np.linalg.norm(mapped[k].numpy() - g) /
                 max(np.linalg.norm(g), 1e-30))
        for k, g in grads_ref.items() if k not in zero}
  l2_key = max(l2, key=l2.get)
  print(f"PyTorch reference: {origin}")
  print(f"loss ours {float(loss_ours):.7f}, PyTorch {loss_ref.item():.7f} "
        f"(|Δ| {abs(float(loss_ours) - loss_ref.item()):.1e}); gradients of "
        f"{len(grads_ref)} tensors: worst max|Δ| / max|g| {worst:.1e} "
        f"({worst_key}), worst |Δ|_2 / |g|_2 {l2[l2_key]:.1e} ({l2_key}); "
        f"key biases (exactly 0): max|Δ| / max|g| overall {worst_zero:.1e}")
  if (abs(float(loss_ours) - loss_ref.item()) > 1e-4 * max(
      1.0, abs(loss_ref.item())) or worst > 1e-2 or l2[l2_key] > 1e-3 or
      worst_zero > 1e-4):
    raise SystemExit("ours and PyTorch disagree: not timing different math")

  steps = {"PyTorch (eager)": torch_step(net)}
  if args.torch_compile:
    steps["PyTorch (torch.compile)"] = torch_step(torch.compile(net))
  first = {}
  for name, fn in steps.items():
    t = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - t
    fn()  # One more warm call.

  a = jnp.asarray(np.random.default_rng(0).random((2048, 2048), np.float32))
  mm = jax.jit(lambda x: x @ x)
  mm_once = lambda: mm(a).block_until_ready()
  mm_once()
  ours()
  rounds = {name: [] for name in steps}
  t_ours, t_mm = [], []
  for _ in range(args.repeats):
    t_ours += common.times(ours, 1)
    t_mm += common.times(mm_once, 2)
    for name, fn in steps.items():
      rounds[name].append(common.times(fn, 1)[0] / t_ours[-1])
  times_ref = {name: [r * o for r, o in zip(rounds[name], t_ours)]
               for name in steps}

  print(f"\n## Train step (median of {args.repeats} rounds, timed in turn; "
        "seconds)")
  print("| implementation | 1st step (compile + run) | steady s/step | "
        "steps/s | ours speed-up |")
  print("|---|---|---|---|---|")
  t_o = float(np.median(t_ours))
  print(f"| ours (JAX, train_step) | {t_first:.1f} | {t_o:.3f} | "
        f"{1 / t_o:.2f} | |")
  for name in steps:
    t_r = float(np.median(times_ref[name]))
    print(f"| {name} | {first[name]:.1f} | {t_r:.3f} | {1 / t_r:.2f} | "
          f"**{float(np.median(rounds[name])):.2f}x** |")
  flops = 3 * inference_bench.formula_gflops(real // args.batch_size) * (
      args.batch_size)
  mm_best = 2 * 2048**3 / min(t_mm) / 1e9
  mm_median = 2 * 2048**3 / float(np.median(t_mm)) / 1e9
  print(f"\nFLOP/s: ~{flops:.0f} GFLOP per step (3x the forward formula, "
        f"{real} real tokens): best {flops / min(t_ours):.0f} GFLOP/s = "
        f"{100 * flops / min(t_ours) / mm_best:.0f}% of the matmul's best "
        f"({mm_best:.0f} GFLOP/s); median/median "
        f"{100 * flops / t_o / mm_median:.0f}%")
  print(f"({common.loadavg()} at the end)")


if __name__ == "__main__":
  main()
