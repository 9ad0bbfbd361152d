"""Builds one IQA dataset offline into a TFDS data_dir.

  python -m musiq_jax.datasets.build --dataset=koniq10k \
      --manual_dir=/data/koniq --data_dir=~/tensorflow_datasets
  python -m musiq_jax.datasets.build --dataset=synthetic_iqa/small \
      --data_dir=/tmp/tfds
  python -m musiq_jax.datasets.build --dataset=ava --on_bad_image=skip ...

`--on_bad_image=skip` builds a config named `<config>_skipbad` (its own folder)
that leaves unreadable or missing images out and lists them in
`info.metadata["skipped_images"]`.
"""

import argparse
import dataclasses
import sys

import tensorflow_datasets as tfds

import musiq_jax.datasets  # pylint: disable=unused-import


def build(dataset: str, data_dir: str, manual_dir: str = None,
          on_bad_image: str = "fail"):
  """Builds `dataset` ("name" or "name/config"); returns the builder."""
  name, _, config = dataset.partition("/")
  cls = tfds.builder_cls(name)
  base = (next((c for c in cls.BUILDER_CONFIGS if c.name == config), None)
          if config else cls.BUILDER_CONFIGS[0])
  if base is None:
    raise ValueError(f"{name} has no config {config!r}; choose one of "
                     f"{[c.name for c in cls.BUILDER_CONFIGS]}.")
  if on_bad_image != "fail":
    base = dataclasses.replace(base, name=f"{base.name}_skipbad",
                               on_bad_image=on_bad_image)
  builder = tfds.builder(name, data_dir=data_dir, config=base)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--dataset", required=True)
  p.add_argument("--data_dir", required=True)
  p.add_argument("--manual_dir", default=None)
  p.add_argument("--on_bad_image", default="fail", choices=("fail", "skip"))
  args = p.parse_args(argv)
  try:
    b = build(args.dataset, args.data_dir, args.manual_dir, args.on_bad_image)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{b.info.full_name}: " + ", ".join(
      f"{k} {v.num_examples}" for k, v in b.info.splits.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
