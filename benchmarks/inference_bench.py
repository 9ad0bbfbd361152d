r"""Inference speed of MUSIQ (ours, JAX) next to pyiqa's PyTorch MUSIQ.

Same run, same photos, same weights (the default 3-scale MUSIQ with random
weights in the original `.npz` layout, mapped into pyiqa's state dict), same
preprocessed tokens. Prints tables:

1. per photo size at batch 1: tokens, preprocessing time, our first call
   (compile + run) and steady-state time, pyiqa's steady-state time (the
   two timed in turn), the speed ratio, and the score difference (pyiqa
   with the original's tanh GELU: float tolerance; pyiqa as shipped uses
   the exact erf GELU);
   With `--torch_compile`, pyiqa under `torch.compile` (a user's best
   PyTorch option) is timed too, in turn with ours, in its own columns;
2. batched: 4 photos per forward pass, both models;
3. a stream of mixed-size photos through `Scorer.score` (decode-free uint8
   arrays, preprocessing included): images/s and compilations after warm-up;
4. achieved FLOP/s of our forward pass (XLA's cost analysis of the compiled
   program, and a formula count of the real tokens' FLOPs) as a percentage of
   the float32 2048x2048 matmul FLOP/s, the two timed in alternation;
5. opt-in bfloat16 compute: time and score change;
6. peak resident memory of scoring one 1024x768 photo in a fresh process;
7. preprocessing on the host and end-to-end images/s from JPEG files (at
   512x384 and 1024x768), before and after moving the preprocessing onto the
   device (`--e2e_only` runs just this): "before" is the old path, kept here
   for comparison (TF's JPEG decoder, the original's TF ops on the host in a
   worker thread, then the model on tokens); "after" is `Scorer.score`
   (simplejpeg decode and a canvas on the host; tokens and model in one
   jitted program). The two are timed in alternation.

Usage:
  python benchmarks/inference_bench.py [--repeats=5] [--skip_pyiqa]
      [--sizes=1024x768,512x384] [--batch_size=4] [--no_rss] [--e2e_only]
      [--torch_compile] [--no_e2e]

pyiqa is run from its wheel (see benchmarks/common.py for why and how); the
first run downloads it with `pip download pyiqa==0.1.16 --no-deps`.
"""

import argparse
import concurrent.futures
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from PIL import Image  # pylint: disable=g-import-not-at-top,wrong-import-position

from musiq_jax import image_io  # pylint: disable=g-import-not-at-top,wrong-import-position
from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top,wrong-import-position
from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

CKPT = os.path.join(common.CACHE_DIR, "musiq_random_seed0.npz")


def formula_gflops(num_tokens: int, width: int = 64, d: int = 384,
                   layers: int = 14, mlp: int = 1152) -> float:
  """Multiply-add FLOPs (x2) of the forward pass over `num_tokens` tokens.

  Patch ResNet per token: root 7x7/2 conv (16x16 outputs), then on 8x8:
  conv_proj and conv3 (w -> 4w, 1x1), conv1 (1x1), conv2 (3x3); embedding
  Dense; per block: QKV + out projections, QK^T and PV over all tokens, MLP.
  (The last block's CLS-only shortcut is not subtracted: this counts the
  work a plain implementation does.)
  """
  resnet = 16 * 16 * 7 * 7 * 3 * width + 8 * 8 * (
      2 * width * 4 * width + width * width + 9 * width * width)
  embed = 8 * 8 * 4 * width * d
  block = 4 * d * d + 2 * d * mlp + 2 * num_tokens * d
  return 2.0 * num_tokens * (resnet + embed + layers * block) / 1e9


def xla_gflops(scorer, batch) -> float:
  """FLOPs of the compiled forward pass by XLA's cost analysis.

  Counted on the model with the patch ResNet unrolled (patch_chunk_size=0):
  XLA counts a loop body once, so the chunked program under-reports.
  """
  flat = scorer_lib.Scorer(scorer.model.clone(patch_chunk_size=0),
                           scorer.params, scorer.pp_config)
  compiled = flat._predict.lower(flat.params, batch).compile()  # pylint: disable=protected-access
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / 1e9


def steady(fn, repeats):
  fn()  # One more warm call, then the timed ones.
  return float(np.median(common.times(fn, repeats)))


def alternating(ours, ref, repeats):
  """(median ours, median ref, median of the per-round ref/ours ratios).

  The two are timed in turn (ours, ref, ours, ref, ...): this 2-core VM
  switches between speed states for seconds to minutes (the same forward
  runs 0.62 s or 0.74 s), and timing one model's repeats and then the
  other's can put them in different states; each round's ratio compares
  two calls made moments apart.
  """
  ours(), ref()  # One more warm call each.
  rounds = [(common.times(ours, 1)[0], common.times(ref, 1)[0])
            for _ in range(repeats)]
  t_ours = float(np.median([a for a, _ in rounds]))
  t_ref = float(np.median([b for _, b in rounds]))
  return t_ours, t_ref, float(np.median([b / a for a, b in rounds]))


def _jpeg(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def old_path_score(scorer, jpegs, prefetch=2):
  """The scorer before preprocessing moved to the device: a worker thread
  decodes with Pillow (probe) and TF and runs the original's TF ops on the
  host (tests/tf_reference.py), the main thread runs the model on tokens."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_reference  # pylint: disable=g-import-not-at-top

  def host(data):
    image_io.probe(data)  # The old decode_image loaded with Pillow first.
    pixels = tf.io.decode_image(data, channels=3).numpy()
    return tf_reference.preprocess_image(pixels, scorer.pp_config)

  out = []
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    futures = [pool.submit(host, d) for d in jpegs[:1 + prefetch]]
    for i in range(len(jpegs)):
      feats = futures[i].result()
      if i + 1 + prefetch < len(jpegs):
        futures.append(pool.submit(host, jpegs[i + 1 + prefetch]))
      out.append(float(scorer.score_features([feats])[0]))
  return out


def host_times(scorer, data: bytes, repeats: int):
  """(before, after) host seconds per image: decode + preprocessing."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_reference  # pylint: disable=g-import-not-at-top

  def before_decode():
    image_io.probe(data)
    return tf.io.decode_image(data, channels=3).numpy()

  pixels = before_decode()
  cfg = scorer.pp_config
  parts = {
      "before decode (Pillow probe + TF)": before_decode,
      "before tokens (TF ops)": lambda: tf_reference.preprocess_image(
          pixels, cfg),
      "after decode (simplejpeg)": lambda: image_io.decode_image(data),
      "after canvas + plan": lambda: scorer.canvas_batch([pixels]),
  }
  for fn in parts.values():
    fn()
  rounds = {k: [] for k in parts}
  for _ in range(max(repeats, 3)):
    for k, fn in parts.items():
      rounds[k] += common.times(fn, 1)
  return {k: float(np.median(v)) for k, v in rounds.items()}


def preprocessing_and_end_to_end(args) -> None:
  """Section 7: host preprocessing and end-to-end images/s, before/after."""
  scorer = scorer_lib.load_scorer(CKPT)
  print("\n## Preprocessing on the host and end to end from JPEG files "
        f"(batch 1; medians of {max(args.repeats, 3)} rounds, before and "
        "after timed in alternation; seconds per image)")
  print("| photo | host before: decode + TF tokens | host after: decode + "
        "canvas | before img/s | after img/s | after/before | "
        "max |Δscore| |")
  print("|---|---|---|---|---|---|---|")
  for w, h in ((512, 384), (1024, 768)):
    jpegs = [_jpeg(common.photo(w, h, i)) for i in range(4)]
    t = host_times(scorer, jpegs[0], args.repeats)
    before_host = (t["before decode (Pillow probe + TF)"] +
                   t["before tokens (TF ops)"])
    after_host = t["after decode (simplejpeg)"] + t["after canvas + plan"]
    old = old_path_score(scorer, jpegs)  # Warm-up (compiles) and scores.
    new = [r.score for r in scorer.score(jpegs)]
    rounds = []
    for _ in range(max(args.repeats // 2, 2)):
      t_old = common.times(lambda: old_path_score(scorer, jpegs), 1)[0]  # pylint: disable=cell-var-from-loop
      t_new = common.times(lambda: scorer.score(jpegs), 1)[0]  # pylint: disable=cell-var-from-loop
      rounds.append((len(jpegs) / t_old, len(jpegs) / t_new))
    ips_old = float(np.median([a for a, _ in rounds]))
    ips_new = float(np.median([b for _, b in rounds]))
    ratio = float(np.median([b / a for a, b in rounds]))
    print(f"| {w}x{h} | {before_host:.3f} ({t['before decode (Pillow probe + TF)']:.3f}"
          f" + {t['before tokens (TF ops)']:.3f}) | {after_host:.4f} "
          f"({t['after decode (simplejpeg)']:.4f} + "
          f"{t['after canvas + plan']:.4f}) | {ips_old:.2f} | {ips_new:.2f} "
          f"| {ratio:.2f}x | {np.abs(np.subtract(old, new)).max():.1e} |",
          flush=True)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--batch_size", type=int, default=4)
  ap.add_argument("--sizes", default=",".join(
      n.split()[0] for n, _, _ in common.PHOTO_SIZES))
  ap.add_argument("--skip_pyiqa", action="store_true")
  ap.add_argument("--no_rss", action="store_true")
  ap.add_argument("--no_bf16", action="store_true")
  ap.add_argument("--no_e2e", action="store_true",
                  help="Skip section 7 (preprocessing and end to end).")
  ap.add_argument("--torch_compile", action="store_true",
                  help="Also time pyiqa under torch.compile.")
  ap.add_argument("--e2e_only", action="store_true",
                  help="Only section 7 (preprocessing and end to end).")
  args = ap.parse_args()

  print(f"# MUSIQ inference benchmark  ({common.loadavg()}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")
  mm_np, mm_jax = common.matmul_gflops()
  print(f"float32 2048^3 matmul: numpy {mm_np:.0f} GFLOP/s, jax {mm_jax:.0f} "
        "GFLOP/s (best of 5)")

  flat = common.random_checkpoint(CKPT)
  if args.e2e_only:
    preprocessing_and_end_to_end(args)
    return
  scorer = scorer_lib.load_scorer(CKPT)
  photos = {n.split()[0]: (n, common.photo(w, h, i))
            for i, (n, w, h) in enumerate(common.PHOTO_SIZES)}
  wanted = [s for s in args.sizes.split(",") if s]

  torch = pyiqa = pyiqa_tanh = None
  if not args.skip_pyiqa:
    import torch  # pylint: disable=g-import-not-at-top,redefined-outer-name
    torch.set_num_threads(2)
    pyiqa, origin = common.build_pyiqa(flat)
    pyiqa_tanh, _ = common.build_pyiqa(flat, tanh_gelu=True)
    print(f"PyTorch reference: {origin}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
  compiled = None
  if pyiqa is not None and args.torch_compile:
    compiled = torch.compile(pyiqa)

  def run_pyiqa(model, batch):
    with torch.inference_mode():
      return model(common.pyiqa_tokens(batch)).numpy().reshape(-1)

  # -- 1. Per size, batch 1. -------------------------------------------------
  print("\n## Batch 1 (steady state = median of "
        f"{args.repeats}, ours and pyiqa timed in turn; speed-up = median of "
        "the per-round ratios; times in seconds)")
  extra = (" torch.compile 1st call | torch.compile | speed-up vs compiled |"
           if compiled is not None else "")
  print("| photo | tokens, real (ours: bucket) | host tokens (NumPy) | "
        "ours 1st call | ours | "
        "ours img/s | pyiqa | pyiqa img/s | speed-up | |Δscore| tanh / erf |"
        + extra)
  print("|---|---|---|---|---|---|---|---|---|---|" +
        "---|---|---|" * (compiled is not None))
  feats_1024 = None
  for key in wanted:
    name, image = photos[key]
    t = time.perf_counter()
    feats = scorer.preprocess(image)
    t_pp = min([time.perf_counter() - t] + common.times(
        lambda: scorer.preprocess(image), 2))  # pylint: disable=cell-var-from-loop
    n = int(feats["mask"].shape[0])
    # Ours runs on the real tokens only, as `Scorer` does (the resized
    # scales' padding dropped: same score); pyiqa on the original layout.
    real = preprocessing.drop_padding_tokens(feats)
    bucket = scorer_lib.length_bucket(int(real["mask"].shape[0]))
    batch = preprocessing.pad_batch([real], bucket)
    run = lambda: np.asarray(scorer._predict(scorer.params, batch))  # pylint: disable=protected-access,cell-var-from-loop
    t = time.perf_counter()
    ours = run()
    t_first = time.perf_counter() - t
    if pyiqa is not None:
      exact = preprocessing.pad_batch([feats])  # pyiqa: no padding needed.
      ref = run_pyiqa(pyiqa, exact)
      ref_tanh = run_pyiqa(pyiqa_tanh, exact)
      t_ours, t_ref, ratio = alternating(
          run, lambda: run_pyiqa(pyiqa, exact), args.repeats)  # pylint: disable=cell-var-from-loop
    else:
      t_ours = steady(run, args.repeats)
    row = (f"| {name} | {n}, {real['mask'].shape[0]} real ({bucket}) | "
           f"{t_pp:.3f} | {t_first:.2f} | "
           f"{t_ours:.3f} | {1 / t_ours:.2f} |")
    if pyiqa is not None:
      row += (f" {t_ref:.3f} | {1 / t_ref:.2f} | {ratio:.2f}x | "
              f"{abs(ours[0] - ref_tanh[0]):.1e} / {abs(ours[0] - ref[0]):.1e}"
              " |")
    else:
      row += " - | - | - | - |"
    if compiled is not None:
      t = time.perf_counter()
      ref_c = run_pyiqa(compiled, exact)
      t_cfirst = time.perf_counter() - t
      assert abs(ref_c[0] - ref[0]) < 1e-4, (ref_c, ref)
      _, t_c, ratio_c = alternating(
          run, lambda: run_pyiqa(compiled, exact), args.repeats)  # pylint: disable=cell-var-from-loop
      row += f" {t_cfirst:.1f} | {t_c:.3f} | {ratio_c:.2f}x |"
    print(row, flush=True)
    if key == "1024x768":
      feats_1024 = feats

  # -- 2. Batched. -----------------------------------------------------------
  bs = args.batch_size
  batched = scorer_lib.load_scorer(CKPT, batch_size=bs)
  group = [batched.preprocess(common.photo(1024, 768, i)) for i in range(bs)]
  real = [preprocessing.drop_padding_tokens(f) for f in group]
  bucket = scorer_lib.length_bucket(max(f["mask"].shape[0] for f in real))
  batch = preprocessing.pad_batch(real, bucket)
  run = lambda: np.asarray(batched._predict(batched.params, batch))  # pylint: disable=protected-access
  t = time.perf_counter()
  ours = run()
  t_first = time.perf_counter() - t
  exact = preprocessing.pad_batch(group)
  if pyiqa is not None:
    t_ours, t_ref, ratio = alternating(
        run, lambda: run_pyiqa(pyiqa, exact), max(2, args.repeats // 2))
  else:
    t_ours = steady(run, max(2, args.repeats // 2))
  print(f"\n## Batch {bs} ({bs} different 1024x768 photos per call; seconds "
        "per call)")
  print("| model | 1st call | steady | img/s | max |Δscore| vs pyiqa(tanh) |")
  print("|---|---|---|---|---|")
  print(f"| ours | {t_first:.2f} | {t_ours:.3f} | {bs / t_ours:.2f} | |")
  if pyiqa is not None:
    ref = run_pyiqa(pyiqa_tanh, exact)
    print(f"| pyiqa | | {t_ref:.3f} | {bs / t_ref:.2f} | "
          f"{np.abs(ours - ref).max():.1e} |")
    print(f"speed-up at batch {bs}: {ratio:.2f}x (median of the per-round "
          "ratios)")
  if compiled is not None:
    run_pyiqa(compiled, exact)  # Compiles for this shape.
    _, t_c, ratio_c = alternating(
        run, lambda: run_pyiqa(compiled, exact), max(2, args.repeats // 2))
    print(f"pyiqa under torch.compile: {t_c:.3f} s per call = "
          f"{bs / t_c:.2f} img/s; ours {ratio_c:.2f}x")

  # -- 3. Mixed-size stream through the public API. --------------------------
  stream = [photos[k][1] for k in wanted] * 2
  fresh = scorer_lib.load_scorer(CKPT)
  t = time.perf_counter()
  fresh.score(stream)
  t_warm = time.perf_counter() - t
  compiled = fresh.num_compilations()
  t = time.perf_counter()
  fresh.score(stream)
  t_stream = time.perf_counter() - t
  print(f"\n## Mixed stream ({len(stream)} photos of {len(wanted)} sizes, "
        "Scorer.score on uint8 arrays, preprocessing included)")
  print(f"warm-up pass {t_warm:.1f} s, {compiled} programs compiled; second "
        f"pass {t_stream:.1f} s = {len(stream) / t_stream:.2f} img/s, "
        f"compilations after warm-up: {fresh.num_compilations() - compiled}")

  # -- 4. FLOP/s. ------------------------------------------------------------
  if feats_1024 is not None:
    n = int(feats_1024["mask"].shape[0])
    kept = preprocessing.drop_padding_tokens(feats_1024)
    n_real = int(kept["mask"].shape[0])
    batch = preprocessing.pad_batch([kept], scorer_lib.length_bucket(n_real))
    xla = xla_gflops(scorer, batch)
    # The forward pass and the 2048^3 matmul are timed in alternation
    # (forward, matmul, forward, ...), so a shared machine's drifting load
    # hits both alike; the percentage compares like with like: best forward
    # against best matmul, and median against median.
    run = lambda: np.asarray(scorer._predict(scorer.params, batch))  # pylint: disable=protected-access
    a = jnp.asarray(np.random.default_rng(0).random((2048, 2048), np.float32))
    mm = jax.jit(lambda x: x @ x)
    mm_once = lambda: mm(a).block_until_ready()
    run(), mm_once()
    t_fwd, t_mm = [], []
    for _ in range(max(3, args.repeats)):
      t_fwd += common.times(run, 1)
      t_mm += common.times(mm_once, 2)
    mm_best = 2 * 2048**3 / min(t_mm) / 1e9
    mm_median = 2 * 2048**3 / float(np.median(t_mm)) / 1e9
    t_best, t_median = min(t_fwd), float(np.median(t_fwd))
    print("\n## Achieved FLOP/s at 1024x768 (batch 1)")
    print(f"forward best {t_best:.3f} s, median {t_median:.3f} s; jax "
          f"matmul timed in alternation: best {mm_best:.0f}, median "
          f"{mm_median:.0f} GFLOP/s")
    print("| FLOP count | GFLOP | GFLOP/s (best) | % of matmul (best/best) "
          "| % of matmul (median/median) |")
    print("|---|---|---|---|---|")
    # XLA's count is the work the program does (its bucket of real tokens);
    # the formula at the real tokens is the useful part of it; the formula
    # at the original's layout (the resized scales padded) is the work of a
    # plain implementation such as pyiqa's for the same score.
    for label, g in (
        (f"XLA cost_analysis, the program run ({batch['mask'].shape[1]} "
         "tokens)", xla),
        (f"formula, the {n_real} real tokens", formula_gflops(n_real)),
        (f"formula, the original's {n} tokens (padding included)",
         formula_gflops(n))):
      print(f"| {label} | {g:.1f} | {g / t_best:.0f} | "
            f"{100 * g / t_best / mm_best:.0f}% | "
            f"{100 * g / t_median / mm_median:.0f}% |")

    # -- 5. bfloat16 (opt-in). -----------------------------------------------
    if not args.no_bf16:
      bf16 = scorer_lib.load_scorer(CKPT, dtype=jnp.bfloat16)
      run = lambda: np.asarray(bf16._predict(bf16.params, batch))  # pylint: disable=protected-access
      s16 = run()
      t16 = steady(run, args.repeats)
      s32 = np.asarray(scorer._predict(scorer.params, batch))  # pylint: disable=protected-access
      print(f"\nbfloat16 compute (opt-in --dtype=bfloat16): {t16:.3f} s vs "
            f"float32 {t_median:.3f} s; score {s16[0]:.4f} vs {s32[0]:.4f} "
            f"(|Δ| {abs(s16[0] - s32[0]):.1e})")

  # -- 6. Peak RSS. ----------------------------------------------------------
  if not args.no_rss:
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import common\n"
            "from musiq_jax import scorer as scorer_lib\n"
            f"s = scorer_lib.load_scorer({CKPT!r})\n"
            "r = s.score([common.photo(1024, 768)])[0]\n"
            "assert r.error is None, r.error\n")
    print(f"\nPeak RSS (VmHWM), fresh process scoring one 1024x768 photo: "
          f"{common.rss_of(code):.2f} GB")
  if not args.no_e2e:
    preprocessing_and_end_to_end(args)
  print(f"\n({common.loadavg()} at the end)")


if __name__ == "__main__":
  main()
