r"""Scores images with a MUSIQ checkpoint.

    python -m musiq_jax.predict --ckpt_path=koniq_ckpt.npz --image_path=a.jpg
    python -m musiq_jax.predict --ckpt_path=ava_ckpt.npz --num_classes=10 \
        --image_path=photos/ --image_path='more/*.png' --format=json
    python -m musiq_jax.predict --workdir=WORKDIR --image_path=a.jpg

Needs no TensorFlow (`pip install musiq-jax` is enough): images are decoded
on the host and everything after decoding runs on the accelerator with the
model. Keeps the original `run_predict_image` flags (`--ckpt_path`, `--image_path`,
`--num_classes`) and accepts several images, directories and globs. Output is
a table (default) or one JSON object per line: `{"image": ..., "score": ...}`
or `{"image": ..., "error": ...}` for a file that cannot be scored; the other
files are still scored and the exit code is 1 if any failed.
"""

import glob
import json
import os
import sys
from typing import List, Sequence

from absl import app
from absl import flags

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
flags.DEFINE_enum("format", "table", ["table", "json"],
                  "table: aligned text; json: one JSON object per line.")
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

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                    ".webp")


def expand_paths(args: Sequence[str], recursive: bool = False) -> List[str]:
  """Files named by paths, directories and globs, in the order given.

  A path that does not exist is kept, so that it is reported as missing.
  """
  out = []
  for arg in args:
    if os.path.isdir(arg):
      walker = (os.walk(arg) if recursive else
                [(arg, [], sorted(os.listdir(arg)))])
      for root, _, files in walker:
        out += [os.path.join(root, f) for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS)]
    elif glob.has_magic(arg):
      matches = sorted(glob.glob(arg, recursive=recursive))
      out += matches if matches else [arg]
    else:
      out.append(arg)
  return out


def format_table(results) -> str:
  width = max([len("image")] + [len(r.image) for r in results])
  lines = [f"{'image':<{width}}  score"]
  for r in results:
    value = f"{r.score:.4f}" if r.error is None else f"ERROR: {r.error}"
    lines.append(f"{r.image:<{width}}  {value}")
  return "\n".join(lines)


def save_attention(scorer, results, out_dir: str) -> None:
  """One `<image stem>.png` of attention overlays per scored image."""
  from musiq_jax import visualize  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  used = set()
  for i, r in enumerate(results):
    if r.error is not None:
      continue
    stem = os.path.splitext(os.path.basename(r.image))[0] or f"image_{i}"
    name = stem if stem not in used else f"{stem}_{i}"
    used.add(name)
    path = os.path.join(out_dir, name + ".png")
    visualize.save_attention_png(scorer, r.image, path, score=r.score)
    print(f"attention: {path}", file=sys.stderr)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.ckpt_path and not FLAGS.workdir:
    raise app.UsageError("Give --ckpt_path (or --workdir).")
  paths = expand_paths(FLAGS.image_path, FLAGS.recursive)
  if not paths:
    raise app.UsageError("Give at least one --image_path (file, dir or glob).")
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
  results = scorer.score(paths)
  if FLAGS.format == "json":
    for r in results:
      print(json.dumps(r.to_dict()))
  else:
    print(format_table(results))
  if FLAGS.save_attention:
    try:
      import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      print("error: --save_attention draws with matplotlib, which is not "
            "installed: pip install 'musiq-jax[viz]'", file=sys.stderr)
      return 2
    save_attention(scorer, results, FLAGS.save_attention)
  failed = [r for r in results if r.error is not None]
  if failed:
    print(f"{len(failed)} of {len(results)} image(s) could not be scored.",
          file=sys.stderr)
  return 1 if failed else 0


def run():
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
