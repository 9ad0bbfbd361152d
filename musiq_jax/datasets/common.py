"""Shared pieces of the IQA TFDS builders.

Every builder stores the same core features, so the input pipeline treats all
datasets alike:

* `image`: the encoded image, exactly `image_io.canonical_bytes(file)`, so the
  pixels tf.data decodes equal the pixels prediction sees (`tfds.features.Image`
  stores the bytes unchanged);
* `height`, `width` (int32): the decoded size, used for bucketing without
  decoding;
* `image_id` (text): a stable id (file name relative to the dataset folder);
* `mos` (float32): the label the models train on; the range differs per dataset
  (see each builder's docstring and docs/datasets.md);
* optional: `mos_std`, `distribution` (AVA), `content_id`/`reference`
  (datasets with reference images), `distortion_type`/`distortion_level`.

Bad data never passes silently: label files are checked for the expected
columns, numeric and finite MOS values and existing images, and every error
names the file and row. Unreadable or missing images fail the build by default;
with `on_bad_image="skip"` in the builder config they are skipped, logged one by
one, and listed in `builder.info.metadata["skipped_images"]`.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from musiq_jax import image_io

ON_BAD_IMAGE = ("fail", "skip")


@dataclasses.dataclass(eq=False)
class IQAConfig(tfds.core.BuilderConfig):
  """Builder config shared by the IQA datasets.

  Attributes:
    on_bad_image: "fail" (default): a missing or unreadable image stops the
      build with an error naming it; "skip": such images are left out, logged
      and listed in `info.metadata["skipped_images"]`.
    split_seed: seed of the random split, for datasets without an official one.
  """
  on_bad_image: str = "fail"
  split_seed: int = 0


def check_config(config: IQAConfig):
  if config.on_bad_image not in ON_BAD_IMAGE:
    raise ValueError(f"Builder config {config.name!r}: on_bad_image="
                     f"{config.on_bad_image!r}; use one of {ON_BAD_IMAGE}.")


def core_features(**extra) -> tfds.features.FeaturesDict:
  """The features every IQA builder stores, plus dataset-specific `extra`."""
  features = {
      "image": tfds.features.Image(shape=(None, None, 3)),
      "height": tfds.features.Scalar(np.int32),
      "width": tfds.features.Scalar(np.int32),
      "image_id": tfds.features.Text(),
      "mos": tfds.features.Scalar(np.float32),
  }
  features.update(extra)
  return tfds.features.FeaturesDict(features)


def manual_dir(dl_manager, instructions: str, required: Sequence[str],
               top_folders: Sequence[str] = ()) -> str:
  """The dataset folder: manual_dir, or the folder its download unpacks to.

  The dataset folder is the first of `manual_dir` and `manual_dir/<top>` (for
  `top` in `top_folders`: the folder a dataset's archive unpacks to, so that
  both that folder and the one holding it can be passed) that holds at least
  one of `required` (paths relative to that folder).

  Raises a ValueError carrying the download instructions when the directory is
  missing, empty, or lacks the dataset's label file.
  """
  path = getattr(dl_manager, "_manual_dir", None)
  path = os.fspath(path) if path else ""
  if not path or not os.path.isdir(path) or not os.listdir(path):
    raise ValueError(
        f"manual_dir {path!r} does not exist or is empty. This dataset cannot "
        "be downloaded automatically; put the files there as follows:\n"
        f"{instructions}")
  candidates = [path] + [os.path.join(path, t) for t in top_folders]
  for base in candidates:
    for rel in required:
      if os.path.exists(os.path.join(base, rel)):
        if base != path:
          logging.info("Reading the dataset from %s.", base)
        return base
  tried = [os.path.normpath(os.path.join(os.path.relpath(b, path), r))
           for b in candidates for r in required]
  raise ValueError(
      f"manual_dir {path!r} has none of {tried}. Expected layout:\n"
      f"{instructions}")


def find_file(root: str, candidates: Sequence[str], what: str,
              instructions: str) -> str:
  """First existing `root/candidate`, else a ValueError naming all tried."""
  for rel in candidates:
    p = os.path.join(root, rel)
    if os.path.exists(p):
      return p
  raise ValueError(f"{what} not found in {root!r}; looked for "
                   f"{list(candidates)}. Expected layout:\n{instructions}")


def read_csv(path: str, required: Sequence[str],
             delimiter: str = ",") -> List[Tuple[int, Dict[str, str]]]:
  """Reads a CSV with a header; returns [(line number, row dict)].

  Raises:
    ValueError: naming the file when a required column is missing.
  """
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f, delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing}; found {header}. "
                       "Is this the dataset's original label file?")
    rows = []
    for row in reader:
      row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
      if not any(row.values()):
        continue  # Blank line.
      rows.append((reader.line_num, row))
  if not rows:
    raise ValueError(f"{path}: no data rows.")
  return rows


def parse_float(value, path: str, line: int, column: str) -> float:
  """A finite float, else a ValueError naming file, line and column."""
  try:
    x = float(str(value).strip())
  except (TypeError, ValueError):
    raise ValueError(f"{path} line {line}: column {column!r} is {value!r}, not "
                     "a number. Fix or remove that row.") from None
  if not math.isfinite(x):
    raise ValueError(f"{path} line {line}: column {column!r} is {value!r} "
                     "(not finite). Fix or remove that row.")
  return x


class ImageEncoder:
  """Turns image files into stored features under the on_bad_image policy."""

  def __init__(self, policy: str, split: str, skipped: Dict[str, List[str]],
               transform=None):
    """Args: policy (on_bad_image), split, skipped (collects skipped files),
    transform: optional `fn(bytes, path) -> bytes` run before encoding."""
    self._transform = transform
    self._policy = policy
    self._split = split
    self._skipped = skipped

  def __call__(self, path: str, where: str) -> Optional[Dict[str, object]]:
    """{image, height, width} of `path`, or None if skipped.

    Args:
      path: the image file.
      where: the label row that names it (for the error message).
    """
    try:
      if not os.path.exists(path):
        raise image_io.ImageError(path, f"file not found (listed at {where})")
      with open(path, "rb") as f:
        data = f.read()
      if self._transform is not None:
        data = self._transform(data, path)
      encoded, _ = image_io.canonical_bytes(data, path)
      pixels = image_io.decode_image(encoded, path)
    except image_io.ImageError as e:
      if self._policy == "skip":
        logging.warning("Skipping bad image (%s): %s", where, e)
        self._skipped.setdefault(self._split, []).append(str(e))
        return None
      raise ValueError(f"{where}: {e}. Fix or remove the file, or build with "
                       "on_bad_image='skip' to leave bad images out.") from e
    return {"image": encoded, "height": int(pixels.shape[0]),
            "width": int(pixels.shape[1])}


def record_skipped(info: tfds.core.DatasetInfo, skipped: Dict[str, List[str]]):
  """Stores the skipped images in the dataset metadata and logs a summary."""
  if info.metadata is None:
    return
  info.metadata["skipped_images"] = {k: list(v) for k, v in skipped.items()}
  total = sum(len(v) for v in skipped.values())
  if total:
    logging.warning("%d bad image(s) skipped; see "
                    "info.metadata['skipped_images'].", total)


def random_split(keys: Iterable[str], fractions: Dict[str, float],
                 seed: int) -> Dict[str, str]:
  """Assigns each key to a split with a seeded permutation of the sorted keys.

  Args:
    keys: ids (images, or reference images for content-disjoint splits).
    fractions: split name -> fraction; the last split takes the remainder.
      Every split with a positive fraction gets at least one key when there
      are enough keys.
    seed: numpy seed; the assignment depends only on (sorted keys, seed).

  Returns:
    key -> split name.
  """
  keys = sorted(set(keys))
  order = np.random.default_rng(seed).permutation(len(keys))
  names = list(fractions)
  counts = []
  for name in names[:-1]:
    c = int(round(fractions[name] * len(keys)))
    if fractions[name] > 0 and len(keys) >= len(names):
      c = max(c, 1)
    counts.append(c)
  counts.append(len(keys) - sum(counts))
  if counts[-1] < 0:
    raise ValueError(f"Split fractions {fractions} exceed 1.")
  out, start = {}, 0
  for name, c in zip(names, counts):
    for i in order[start:start + c]:
      out[keys[i]] = name
    start += c
  return out


# Train/validation/test fractions for datasets without an official split. The
# customary protocol is a random 80/20 train/test split; we hold out 10% of the
# training part as validation, so `train+validation` is the customary 80%.
RANDOM_SPLIT = {"test": 0.2, "validation": 0.08, "train": 0.72}
