r"""How each part of MUSIQ's forward pass uses the CPU's cores.

Runs the same programs in child processes pinned to one core
(`os.sched_setaffinity`) and to all of this process's cores, and prints
each part's time on both and the speed-up. A part near 1.0x leaves the other
cores idle: on the project's 2-core machine that is the patch ResNet, whose
per-chunk convolutions XLA:CPU runs on one core (docs/performance.md,
"2026-12-08, second session").

Parts, at the real tokens of one photo (the default 3-scale MUSIQ, the
benchmark's random checkpoint): the patch ResNet with the `embedding`
Dense (the model with no encoder layers), the whole forward pass, and two
of the ResNet's convolutions alone on one 32-patch chunk
(`Model.patch_chunk_size`): the 7x7/2 root conv and a 3x3 conv at 8x8x64.
Each is compiled twice: with XLA's default options, and with the options
the scorer compiles with on CPU (`scorer.CPU_COMPILER_OPTIONS`: no
YNNPACK fusions).

Usage:
  python benchmarks/core_scaling_bench.py [--sizes=512x384,1024x768]
      [--repeats=7]
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

_CHILD = "--child"


def _min_time(fn, repeats: int) -> float:
  """One warm call, then the fastest of `repeats` (`common.times`)."""
  import jax  # pylint: disable=g-import-not-at-top
  run = lambda: jax.block_until_ready(fn())
  run()
  return min(common.times(run, repeats))


def child(sizes, repeats: int) -> dict:
  """Times every part in this process (its affinity set by the parent)."""
  import inference_bench  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
  from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top
  scorer = scorer_lib.load_scorer(inference_bench.CKPT)
  model, params = scorer.model, scorer.params
  embed_only = model.clone(num_layers=0)
  # XLA's defaults, and the options the scorer compiles with on CPU.
  option_sets = [("XLA defaults", None)]
  if scorer.compiler_options:
    option_sets.append(("scorer's options", scorer.compiler_options))
  out = {}
  for w, h in sizes:
    feats = preprocessing.drop_padding_tokens(preprocessing.preprocess_image(
        common.photo(w, h, 0), scorer.pp_config))
    length = scorer_lib.length_bucket(feats["mask"].shape[0])
    batch = jax.tree.map(jnp.asarray, preprocessing.pad_batch([feats], length))
    for name, m in (("ResNet + embedding", embed_only), ("forward", model)):
      for label, options in option_sets:
        f = jax.jit(lambda p, b, m=m: m.apply({"params": p}, b),
                    compiler_options=options)
        out[f"{w}x{h} ({length} tokens): {name}, {label}"] = _min_time(
            lambda f=f, b=batch: f(params, b), repeats)
  conv = lambda x, k, s: jax.lax.conv_general_dilated(  # pylint: disable=g-long-lambda
      x, k, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  key = jax.random.PRNGKey(0)
  for name, xs, ks, s in (("root conv 7x7/2, 32 patches", (32, 32, 32, 3),
                           (7, 7, 3, 64), 2),
                          ("3x3 conv, 32 patches", (32, 8, 8, 64),
                           (3, 3, 64, 64), 1)):
    x, k = jax.random.normal(key, xs), jax.random.normal(key, ks)
    for label, options in option_sets:
      f = jax.jit(lambda x, k, s=s: conv(x, k, s), compiler_options=options)
      out[f"{name}, {label}"] = _min_time(lambda f=f, x=x, k=k: f(x, k),
                                          repeats * 5)
  return out


def run_child(cpus, args) -> dict:
  argv = [__file__, _CHILD, f"--sizes={args.sizes}",
          f"--repeats={args.repeats}"]
  code = (f"import os, runpy, sys; os.sched_setaffinity(0, {sorted(cpus)!r}); "
          f"sys.argv = {argv!r}; runpy.run_path({__file__!r}, "
          "run_name='__main__')")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, check=False)
  if proc.returncode:
    sys.exit(f"The child on CPUs {sorted(cpus)} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default="512x384,1024x768",
                      help="Photo sizes WxH, comma-separated.")
  parser.add_argument("--repeats", type=int, default=7,
                      help="Timed calls per part (min reported; the convs "
                           "5x as many).")
  parser.add_argument(_CHILD, action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
  if args.child:
    print(json.dumps(child(sizes, args.repeats)))
    return
  import inference_bench  # pylint: disable=g-import-not-at-top
  common.random_checkpoint(inference_bench.CKPT)
  cpus = os.sched_getaffinity(0)
  if len(cpus) < 2:
    sys.exit("This process may run on one CPU only: nothing to compare.")
  one = run_child({min(cpus)}, args)
  every = run_child(cpus, args)
  print(f"{len(cpus)} CPUs; {common.loadavg()}; min of {args.repeats} calls")
  print()
  print(f"| part | 1 core ms | {len(cpus)} cores ms | speed-up |")
  print("|---|---|---|---|")
  for name in one:
    print(f"| {name} | {one[name] * 1e3:.1f} | {every[name] * 1e3:.1f} | "
          f"{one[name] / every[name]:.2f}x |")


if __name__ == "__main__":
  main()
