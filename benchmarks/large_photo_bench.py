r"""Scoring a 12-megapixel photo: peak memory and time, blocked vs exact.

A 4000x3000 photo has 11,750 native tokens (11,943 with the two resized
scales). Exact attention holds a [6, L, L] float32 map per layer (3.4 GB
at that size) and the patch ResNet a [L, 8, 8, 256] output (800 MB); from
4096 tokens the default model computes attention over key blocks with an
online softmax and applies the embedding inside the ResNet's chunk loop
(`musiq_jax.models.musiq.Model`), exact math either way.

Each path runs in a fresh process under `/usr/bin/time -v` (whole-process
peak RSS; the child's own VmHWM from /proc/self/status is printed next to
it), scoring the same uint8 photo twice through `Scorer.score`: the first
call compiles, the second is steady state. Prints a Markdown table and the
score difference between the two paths.

Usage:
  python benchmarks/large_photo_bench.py [--sizes=4000x3000] [--no_exact]

`--no_exact` skips the exact-attention process (it needs ~10 GB and
several times longer). The random-weight checkpoint is the one
`inference_bench.py` uses (written on first use).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

CKPT = os.path.join(common.CACHE_DIR, "musiq_random_seed0.npz")

_CHILD = r"""
import json, sys, time
sys.path.insert(0, "benchmarks")
import common
from musiq_jax import preprocessing
from musiq_jax import scorer as scorer_lib
width, height, exact, ckpt = (int(sys.argv[1]), int(sys.argv[2]),
                              sys.argv[3] == "exact", sys.argv[4])
image = common.photo(width, height)
s = scorer_lib.load_scorer(ckpt)
if exact:  # The same weights and tokens through the exact paths.
  s = scorer_lib.Scorer(
      s.model.clone(attention_tiled_min_keys=0, embed_in_chunks_from=0),
      s.params, s.pp_config, max_native_tokens=s.max_native_tokens,
      score_fn=s.score_fn)
times, scores = [], []
for _ in range(2):
  t = time.perf_counter()
  r = s.score([image])[0]
  times.append(time.perf_counter() - t)
  assert r.error is None, r.error
  scores.append(float(r.score))
hwm = [l.split()[1] for l in open("/proc/self/status")
       if l.startswith("VmHWM")][0]
print("RESULT", json.dumps({
    "tokens": preprocessing.seq_len(height, width, s.pp_config),
    "native": preprocessing.num_patches(height, width,
                                        s.pp_config.patch_stride),
    "times": times, "scores": scores, "vmhwm_gb": int(hwm) / 1024**2}))
"""


def run_child(width: int, height: int, mode: str):
  cmd = [sys.executable, "-c", _CHILD, str(width), str(height), mode, CKPT]
  timer = shutil.which("time") or ("/usr/bin/time"
                                    if os.path.exists("/usr/bin/time")
                                    else None)
  if timer:
    cmd = [timer, "-v"] + cmd
  out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                       cwd=common._ROOT)  # pylint: disable=protected-access
  result = None
  for line in out.stdout.splitlines():
    if line.startswith("RESULT "):
      result = json.loads(line[len("RESULT "):])
  if result is None:
    raise RuntimeError(f"{mode} child failed:\n{out.stderr[-4000:]}")
  m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
  result["time_v_gb"] = int(m.group(1)) / 1024**2 if m else None
  return result


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sizes", default="4000x3000",
                  help="Comma-separated WIDTHxHEIGHT photo sizes.")
  ap.add_argument("--no_exact", action="store_true",
                  help="Skip the exact-attention process.")
  args = ap.parse_args()
  common.random_checkpoint(CKPT)
  print(f"# Large-photo benchmark ({common.loadavg()}, {os.cpu_count()} "
        "CPUs; each row a fresh process scoring the photo twice)")
  print("| photo | tokens (native) | path | 1st call s | 2nd call s | score "
        "| peak RSS, time -v | VmHWM |")
  print("|---|---|---|---|---|---|---|---|")
  for size in args.sizes.split(","):
    width, height = map(int, size.split("x"))
    scores = {}
    for mode in ("blocked",) + (() if args.no_exact else ("exact",)):
      r = run_child(width, height, mode)
      scores[mode] = r["scores"][-1]
      rss = f"{r['time_v_gb']:.2f} GB" if r["time_v_gb"] else "n/a"
      print(f"| {width}x{height} | {r['tokens']} ({r['native']}) | {mode} | "
            f"{r['times'][0]:.1f} | {r['times'][1]:.1f} | "
            f"{r['scores'][-1]:.6f} | {rss} | {r['vmhwm_gb']:.2f} GB |",
            flush=True)
    if "exact" in scores:
      print(f"\n{width}x{height}: |score(blocked) - score(exact)| = "
            f"{abs(scores['blocked'] - scores['exact']):.1e}")
  print(f"\n({common.loadavg()} at the end)")


if __name__ == "__main__":
  main()
