"""AVA (Murray et al. 2012): ~255,500 photos with 1..10 aesthetic votes.

Files, as distributed (the `AVA_dataset/` folder, e.g. in the
imfing/ava_downloader repository; evidence in docs/datasets.md):
* `AVA.txt`, space-separated, no header (its README.txt): index, image id,
  10 vote counts (for scores 1..10), 2 semantic tag ids, challenge id;
* `aesthetics_image_lists/generic_test.jpgl`: the official test set, one bare
  image id a line (20,000);
* the pictures, `<image id>.jpg`, in `images/` (the torrent's 7z parts
  unpack there, as PaQ-2-PiQ's database_prep.ipynb reads them).
Of the non-test images a seeded 5% (`split_seed`, default 0) is validation.

Features: `image_id` = the bare AVA id (e.g. "953619"), `mos` = mean score
(1..10), `mos_std` = std of the votes, `distribution` = the 10 vote counts
normalised to sum 1 (for the EMD loss), `num_votes`. Real AVA copies miss
some pictures (not every id of AVA.txt can still be downloaded) or hold
corrupt ones: build with `--on_bad_image=skip` to leave them out (they are
listed in `info.metadata["skipped_images"]`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from musiq_jax.datasets import _base
from musiq_jax.datasets import common

LABELS = "AVA.txt"
TEST_LIST = ("aesthetics_image_lists/generic_test.jpgl", "generic_test.jpgl")
VALIDATION_FRACTION = 0.05


class Ava(_base.ManualIQABuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://github.com/imfing/ava_downloader"
  REQUIRED_FILES = (LABELS,)
  TOP_FOLDERS = ("AVA_dataset",)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Get the AVA dataset (e.g. via {HOMEPAGE}: its AVA_dataset/ folder and the
  pictures) and arrange manual_dir (or a folder holding it as AVA_dataset/):
    manual_dir/{LABELS}
    manual_dir/{TEST_LIST[0]}   (or manual_dir/{TEST_LIST[1]})
    manual_dir/images/<image id>.jpg                (or manual_dir/<id>.jpg)
  Most copies miss some pictures: build with --on_bad_image=skip (which
  builds ava/default_skipbad, the dataset name to train on).
  """

  def _extra_features(self):
    return {"mos_std": tfds.features.Scalar(np.float32),
            "distribution": tfds.features.Tensor(shape=(10,),
                                                 dtype=np.float32),
            "num_votes": tfds.features.Scalar(np.int32)}

  def _records(self, root):
    labels = common.find_file(root, [LABELS], "AVA label file",
                              self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    test_path = common.find_file(root, TEST_LIST, "AVA test list",
                                 self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    with open(test_path, encoding="utf-8") as f:
      test_ids = {l.strip() for l in f if l.strip()}
    rows = []
    with open(labels, encoding="utf-8") as f:
      for line, text in enumerate(f, start=1):
        fields = text.split()
        if not fields:
          continue
        if len(fields) != 15:
          raise ValueError(f"{labels} line {line}: {len(fields)} fields; AVA.txt "
                           "rows have 15 (index, image id, 10 vote counts, 2 "
                           "tags, challenge id).")
        counts = np.array([common.parse_float(v, labels, line,
                                              f"votes for {k + 1}")
                           for k, v in enumerate(fields[2:12])])
        if counts.sum() <= 0 or np.any(counts < 0):
          raise ValueError(f"{labels} line {line}: image {fields[1]} has no "
                           "(or negative) votes.")
        rows.append((line, fields[1], counts))
    rest = [i for _, i, _ in rows if i not in test_ids]
    split_of = common.random_split(
        rest, {"validation": VALIDATION_FRACTION, "train": 1.0},
        self.builder_config.split_seed)
    scores = np.arange(1, 11, dtype=np.float64)
    for line, image_id, counts in rows:
      p = counts / counts.sum()
      mean = float(np.sum(p * scores))
      yield (_base.image_path(root, ["images", ""], f"{image_id}.jpg"),
             f"{labels} line {line}",
             "test" if image_id in test_ids else split_of[image_id], {
                 "image_id": image_id,
                 "mos": mean,
                 "mos_std": float(np.sqrt(np.sum(p * (scores - mean)**2))),
                 "distribution": p.astype(np.float32),
                 "num_votes": int(counts.sum()),
             })
