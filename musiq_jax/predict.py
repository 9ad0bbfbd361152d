r"""Scores images, folders and dataset splits with a MUSIQ checkpoint.

    python -m musiq_jax.predict --ckpt_path=koniq_ckpt.npz --image_path=a.jpg
    python -m musiq_jax.predict --ckpt_path=ava_ckpt.npz --num_classes=10 \
        --image_path=photos/ --image_path='more/*.png' --format=json
    python -m musiq_jax.predict --workdir=WORKDIR --image_path=a.jpg

A large collection, streamed to a file, resumable, in shards:

    python -m musiq_jax.predict --ckpt_path=koniq_ckpt.npz --recursive \
        --image_path=photos/ --batch_size=8 --output=scores.csv --format=csv
    python -m musiq_jax.predict ... --output=scores.csv --resume   # after a kill
    python -m musiq_jax.predict ... --output=s.json --num_shards=4 --shard_index=I
    python -m musiq_jax.predict --merge --output=s.json --format=json

A dataset split, with SRCC/PLCC/KRCC/RMSE against its MOS:

    python -m musiq_jax.predict --ckpt_path=koniq_ckpt.npz \
        --dataset=koniq10k --split=test --data_dir=~/tensorflow_datasets

Needs no TensorFlow (`pip install musiq-jax` is enough) except for
`--dataset`: images are decoded on the host and everything after decoding
runs on the accelerator with the model. Keeps the original
`run_predict_image` flags (`--ckpt_path`, `--image_path`, `--num_classes`)
and accepts several images, directories and globs. Output is a table
(default), one JSON object per line (`{"image": ..., "score": ...}` or
`{"image": ..., "error": ...}` for a file that cannot be scored), or CSV
with a header (image,score,error), written as each batch is scored, in the
input order; the other files are still scored and the exit code is 1 if
any failed. File lists are walked lazily (constant memory in the number of
files). A progress bar (tqdm) goes to stderr when it is a terminal, and a
summary line (scored, failed, wall time) always.
"""

import collections
import itertools
import json
import os
import sys
import time
from typing import Iterator, List, Sequence, Tuple

from absl import app
from absl import flags

from musiq_jax import collection
from musiq_jax import compilation_cache

FLAGS = flags.FLAGS

flags.DEFINE_string("ckpt_path", None,
                    "MUSIQ checkpoint in the original .npz layout (released "
                    "koniq/spaq/paq2piq/ava checkpoints, or WORKDIR/best.npz).")
# musiq_jax.main defines --workdir too; both mean a training workdir, so a
# process importing both (tests, notebooks) shares one flag.
if "workdir" not in FLAGS:
  flags.DEFINE_string("workdir", None,
                      "Training workdir; scores with WORKDIR/best.npz when "
                      "--ckpt_path is not given.")
flags.DEFINE_multi_string(
    "image_path", [], "Image file, directory (its image files) or glob; "
    "repeat the flag for several.")
flags.DEFINE_integer(
    "num_classes", None,
    "Number of head outputs, checked against the checkpoint: 10 for AVA, 1 "
    "for the other datasets. Default: read from the checkpoint. The score "
    "is the read-out the model trained with (the `head` and `mos_range` of "
    "its best.json); without a best.json, as the released models: the "
    "output for 1, the softmax-weighted mean of 1..10 for 10 outputs.")
flags.DEFINE_bool(
    "single_scale", None,
    "Use only the full-size image (for the full_size_single_scale "
    "checkpoints). Default: decided from the checkpoint.")
flags.DEFINE_integer("batch_size", 1,
                     "Images per forward pass; images of different sizes are "
                     "padded and give the same scores as one at a time.")
flags.DEFINE_enum("format", "table", ["table", "json", "csv"],
                  "table: aligned text; json: one JSON object per line; "
                  "csv: a header (image,score,error) and one row per image.")
flags.DEFINE_bool("recursive", False,
                  "Descend into sub-directories of directory arguments.")
flags.DEFINE_integer(
    "max_seq_len_from_original_res", None,
    "Tokens taken from the full-size image. Default: every patch (-1, the "
    "released models' setting), whatever cap the model trained with; N cuts "
    "or pads to N (in raster order, as the original).")
flags.DEFINE_integer(
    "max_native_tokens", None,
    "Refuse images whose full-size scale needs more tokens than this, with "
    "an error for that image instead of running out of memory (default "
    "24576, a 24-megapixel photo such as 6000x4000).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                  "Computation dtype; float32 reproduces the original scores.")
flags.DEFINE_string(
    "save_attention", None,
    "Directory to write one PNG per scored image: the CLS token's attention "
    "on each scale (last layer and rollout), see musiq_jax/visualize.py.")

flags.DEFINE_string(
    "output", None, "Write the results to this file instead of stdout, "
    "flushed after every batch (a killed run leaves whole lines). With "
    "--num_shards=N > 1 each shard writes OUTPUT-0000I-of-0000N.")
flags.DEFINE_bool(
    "resume", False, "With --output (json or csv): keep the images already "
    "in the file (a torn last line is dropped), score only the others and "
    "append them. The file then holds every image exactly once.")
flags.DEFINE_bool(
    "progress", None, "Progress bar on stderr (done/total, images/s, time "
    "left). Default: only when stderr is a terminal.")
flags.DEFINE_integer(
    "num_shards", None, "Split the sorted input into N round-robin shards "
    "(image I, I+N, ...); default: jax.process_count() (1 unless "
    "jax.distributed is initialised).")
flags.DEFINE_integer(
    "shard_index", None, "Which shard this process scores, 0..N-1; "
    "default: jax.process_index().")
flags.DEFINE_bool(
    "merge", False, "Join the shard files OUTPUT-*-of-N (json or csv, "
    "--format) into --output, in the single-process order, and exit.")
flags.DEFINE_string(
    "dataset", None, "Score a TFDS split of one of our builders instead of "
    "files (koniq10k, spaq, paq2piq, ava, live_challenge, kadid10k, "
    "synthetic_iqa[/config]; built with musiq_jax.datasets.build) and "
    "print SRCC/PLCC/KRCC/RMSE against its MOS. Rows carry the \"mos\".")
flags.DEFINE_string("split", "test", "The --dataset split to score.")
flags.DEFINE_string("data_dir", None,
                    "TFDS data_dir holding --dataset (default: TFDS's).")

IMAGE_EXTENSIONS = collection.IMAGE_EXTENSIONS


def expand_paths(args: Sequence[str], recursive: bool = False) -> List[str]:
  """Files named by paths, directories and globs, in the order given.

  A path that does not exist is kept, so that it is reported as missing.
  (A list; `collection.iter_paths` is the lazy walk that predict uses.)
  """
  return list(collection.iter_paths(args, recursive))


def save_attention(scorer, results, out_dir: str, used=None,
                   start: int = 0) -> None:
  """One `<image stem>.png` of attention overlays per scored image."""
  from musiq_jax import visualize  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  used = set() if used is None else used
  for i, r in enumerate(results, start):
    if r.error is not None:
      continue
    stem = os.path.splitext(os.path.basename(r.image))[0] or f"image_{i}"
    name = stem if stem not in used else f"{stem}_{i}"
    used.add(name)
    path = os.path.join(out_dir, name + ".png")
    visualize.save_attention_png(scorer, r.image, path, score=r.score)
    print(f"attention: {path}", file=sys.stderr)


def _dataset_source(name: str, split: str, data_dir, num_shards: int,
                    index: int):
  """(total, iterator of (image_id, encoded bytes, mos)) of a TFDS split."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import musiq_jax.datasets  # pylint: disable=g-import-not-at-top,unused-import
  tf.config.set_visible_devices([], "GPU")  # The model runs in JAX.
  builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  if not builder.is_prepared():
    raise ValueError(
        f"dataset {name!r} is not built in {builder.data_dir}; build it "
        f"with: python -m musiq_jax.datasets.build --dataset={name} "
        "--data_dir=DIR [--manual_dir=YOUR_DOWNLOAD] and pass "
        "--data_dir=DIR")
  if split not in builder.info.splits:
    raise ValueError(f"{name} has no split {split!r}; it has "
                     f"{sorted(builder.info.splits)}")
  n = builder.info.splits[split].num_examples
  total = len(range(index, n, num_shards))
  ds = builder.as_dataset(split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()})

  def examples():
    for e in collection.shard(tfds.as_numpy(ds), num_shards, index):
      yield e["image_id"].decode(), e["image"], float(e["mos"])

  return total, examples()


def _file_source(args, recursive: bool, num_shards: int, index: int):
  """(total, longest name, iterator of (path, path, None)) of the files."""
  total = width = 0
  for p in collection.shard(collection.iter_paths(args, recursive),
                            num_shards, index):
    total += 1
    width = max(width, len(p))
  items = ((p, p, None) for p in collection.shard(
      collection.iter_paths(args, recursive), num_shards, index))
  return total, width, items


def _unscored(items: Iterator[Tuple[str, object, object]], done, labels):
  """(images, names) of the items not in `done`, two lazy views of one
  stream; each item's label is appended to `labels` as it is read (results
  come back in input order, so they pop in step)."""

  def pending():
    for name, image, label in items:
      if name not in done:
        labels.append(label)
        yield image, name

  a, b = itertools.tee(pending())
  return (image for image, _ in a), (name for _, name in b)


def _progress(total: int, initial: int):
  """A tqdm bar on stderr (None when quiet)."""
  show = FLAGS.progress
  if show is None:
    show = sys.stderr.isatty()
  if not show:
    return None
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, initial=initial, unit="img", file=sys.stderr,
                   dynamic_ncols=True, smoothing=0.1)


def _print_metrics(scores, labels, where: str) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from musiq_jax import metrics  # pylint: disable=g-import-not-at-top
  if len(scores) < 2:
    print(f"metrics: {len(scores)} scored image(s) in {where}, too few for "
          "correlations", file=sys.stderr)
    return
  m = metrics.all_metrics(np.asarray(scores, np.float64),
                          np.asarray(labels, np.float64))
  print(f"{where}: {len(scores)} images: SRCC {m['srcc']:.4f}  PLCC "
        f"{m['plcc']:.4f}  KRCC {m['krcc']:.4f}  RMSE {m['rmse']:.4f}",
        file=sys.stderr)
  print("metrics: " + json.dumps({"num_images": len(scores), **m}),
        file=sys.stderr)


def _merge() -> int:
  if not FLAGS.output:
    raise app.UsageError("--merge needs --output=FILE (the shards are "
                         "FILE-*-of-N).")
  try:
    n = collection.merge(FLAGS.output, FLAGS.format)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"merged {n} rows into {FLAGS.output}", file=sys.stderr)
  if FLAGS.format in collection.RESUMABLE:
    rows = collection.resume_rows(FLAGS.output, FLAGS.format)
    pairs = [(r["score"], r["mos"]) for r in rows
             if r.get("score") is not None and r.get("mos") is not None]
    if pairs:
      _print_metrics(*zip(*pairs), where=FLAGS.output)
  return 0


def _shards() -> Tuple[int, int]:
  """--num_shards/--shard_index, by default jax.distributed's processes."""
  import jax  # pylint: disable=g-import-not-at-top
  n = FLAGS.num_shards or jax.process_count()
  i = FLAGS.shard_index if FLAGS.shard_index is not None else (
      jax.process_index() if FLAGS.num_shards is None else 0)
  if FLAGS.num_shards and FLAGS.num_shards > 1 and FLAGS.shard_index is None:
    raise app.UsageError("--num_shards > 1 needs --shard_index (0..N-1).")
  if not 0 <= i < n:
    raise app.UsageError(f"--shard_index={i} is not in [0, {n}).")
  return n, i


def score_collection(scorer, shards=None) -> int:
  """Scores the flags' images or dataset split; returns the exit code.

  `shards`: (num_shards, shard_index), default from the flags (`_shards`).
  """
  num_shards, index = shards or _shards()
  fmt = FLAGS.format
  output = FLAGS.output
  if output and num_shards > 1:
    output = collection.shard_path(output, num_shards, index)
  extra = ("mos",) if FLAGS.dataset else ()
  try:
    if FLAGS.dataset:
      total, items = _dataset_source(FLAGS.dataset, FLAGS.split,
                                     FLAGS.data_dir, num_shards, index)
      width = 0
    else:
      total, width, items = _file_source(FLAGS.image_path, FLAGS.recursive,
                                         num_shards, index)
    previous = (collection.resume_rows(output, fmt) if FLAGS.resume else [])
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  done = {r["image"] for r in previous}
  labels = collections.deque()
  metric_pairs = [(r["score"], r["mos"]) for r in previous
                  if r.get("score") is not None and r.get("mos") is not None]
  failed = sum(r.get("error") is not None for r in previous)
  append = FLAGS.resume and os.path.exists(output) and os.path.getsize(
      output) > 0
  out = (open(output, "a" if append else "w", newline="", encoding="utf-8")
         if output else sys.stdout)
  writer = collection.make_writer(fmt, out, extra, width)
  bar = _progress(total, min(len(done), total))
  start = time.time()
  new = new_failed = 0
  used = set()
  try:
    if not append:
      writer.write_header()
    images, names = _unscored(items, done, labels)
    for results in scorer.score_batches(images, names):
      rows = []
      for r in results:
        row = r.to_dict()
        if FLAGS.dataset:
          row["mos"] = labels.popleft()
          if r.error is None:
            metric_pairs.append((r.score, row["mos"]))
        rows.append(row)
      writer.write(rows)
      if FLAGS.save_attention:
        save_attention(scorer, results, FLAGS.save_attention, used, new)
      new += len(results)
      new_failed += sum(r.error is not None for r in results)
      if bar is not None:
        bar.update(len(results))
  finally:
    if bar is not None:
      bar.close()
    if out is not sys.stdout:
      out.close()
  wall = time.time() - start
  failed += new_failed
  rate = new / wall if wall > 0 else 0.0
  kept = f", {len(done)} kept from {output}" if done else ""
  shard_note = f" (shard {index} of {num_shards})" if num_shards > 1 else ""
  devices = (f" on {scorer.num_devices} devices"
             if scorer.num_devices > 1 else "")
  print(f"scored {new - new_failed}, failed {new_failed}{kept}{shard_note}"
        f"{devices}; wall time {wall:.1f} s ({rate:.1f} images/s)",
        file=sys.stderr)
  if FLAGS.dataset and metric_pairs:
    _print_metrics(*zip(*metric_pairs),
                   where=f"{FLAGS.dataset}/{FLAGS.split}{shard_note}")
  if failed:
    print(f"{failed} of {new + len(done)} image(s) could not be scored.",
          file=sys.stderr)
  return 1 if failed else 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.merge:
    return _merge()
  if not FLAGS.ckpt_path and not FLAGS.workdir:
    raise app.UsageError("Give --ckpt_path (or --workdir).")
  if FLAGS.dataset and FLAGS.image_path:
    raise app.UsageError("Give --image_path or --dataset, not both.")
  if not FLAGS.dataset and not next(
      collection.iter_paths(FLAGS.image_path, FLAGS.recursive), None):
    raise app.UsageError("Give at least one --image_path (file, dir or glob).")
  if FLAGS.resume and not FLAGS.output:
    raise app.UsageError("--resume needs --output=FILE.")
  shards = _shards()  # Flag errors before the checkpoint loads.
  if FLAGS.save_attention:
    try:
      import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      print("error: --save_attention draws with matplotlib, which is not "
            "installed: pip install 'musiq-jax[viz]'", file=sys.stderr)
      return 2
  compilation_cache.enable()  # --nocompilation_cache turns it off.
  # Imported late so that --help is instant.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from musiq_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top

  try:
    scorer = scorer_lib.load_scorer(
        FLAGS.ckpt_path,
        workdir=FLAGS.workdir,
        num_classes=FLAGS.num_classes,
        single_scale=FLAGS.single_scale,
        batch_size=FLAGS.batch_size,
        max_seq_len_from_original_res=FLAGS.max_seq_len_from_original_res,
        max_native_tokens=(FLAGS.max_native_tokens or
                           scorer_lib.DEFAULT_MAX_NATIVE_TOKENS),
        dtype=jnp.bfloat16 if FLAGS.dtype == "bfloat16" else jnp.float32)
  except (checkpoint.CheckpointError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return score_collection(scorer, shards)


def run():
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
