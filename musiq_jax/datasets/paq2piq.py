"""PaQ-2-PiQ / FLIVE (Ying et al. 2020): 39,810 pictures, MOS 0..100.

Label files, as in the `database/` folder of the baidut/PaQ-2-PiQ
repository (evidence in docs/datasets.md):
* `labels_image.csv`: header `name,mos`; every picture's path relative to
  `database/` (e.g. `voc_emotic_ava/AVA__129332.jpg`,
  `blur_dataset/motion0044.jpg`, `EE371R/rq59.jpg`) and its MOS;
* `labels=640_padded.csv`: the pictures of at most 640 px, columns
  `name_image`, ..., `is_valid`: True marks the official validation set,
  False training;
* `labels640.csv`: the official test set (the pictures larger than 640 px;
  columns include `name_image`, `mos_image`). The repository's fastiqa code
  calls this file `labels>640.csv`; that name is accepted too.

A picture of `labels_image.csv` in neither split file goes to train, as
pyiqa's `scripts/process_flive.py` does (the split files list validation
and test pictures; everything else is training); the build logs how many.
Pictures are read at their listed paths relative to `database/` (or its
`images/` subfolder, fastiqa's layout). Features: `mos` (0..100).
"""

from __future__ import annotations

import logging

import tensorflow_datasets as tfds

from musiq_jax.datasets import _base
from musiq_jax.datasets import common

LABELS = "labels_image.csv"
TRAIN_VALID = "labels=640_padded.csv"
TEST = ("labels640.csv", "labels>640.csv")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class Paq2piq(_base.ManualIQABuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://github.com/baidut/PaQ-2-PiQ"
  REQUIRED_FILES = (LABELS,)
  # The repository's label folder; pyiqa's copy of niu-haoran/FLIVE_Database.
  TOP_FOLDERS = ("database", "FLIVE_Database/database")
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Get the label files of the `database/` folder of {HOMEPAGE} and the
  pictures (its database_prep.ipynb downloads and renames them) into one
  folder, manual_dir (or a folder holding it as database/):
    manual_dir/{LABELS}              (header: name,mos)
    manual_dir/{TRAIN_VALID}       (name_image, ..., is_valid)
    manual_dir/{TEST[0]}                (test pictures; or {TEST[1]})
    manual_dir/<name>                 (as listed: voc_emotic_ava/...,
                                       blur_dataset/..., EE371R/...;
                                       or under manual_dir/images/)
  Pictures in {LABELS} but in neither split file are training pictures.
  """

  def _records(self, root):
    labels = common.find_file(root, [LABELS], "PaQ-2-PiQ label file",
                              self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    tv = common.find_file(root, [TRAIN_VALID], "PaQ-2-PiQ train/valid file",
                          self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    test = common.find_file(root, TEST, "PaQ-2-PiQ test file",
                            self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    split_of = {}
    for line, row in common.read_csv(tv, ["name_image", "is_valid"]):
      v = row["is_valid"].lower()
      if v not in _TRUE | _FALSE:
        raise ValueError(f"{tv} line {line}: is_valid is {row['is_valid']!r}; "
                         "expected True or False.")
      split_of[row["name_image"]] = "validation" if v in _TRUE else "train"
    for _, row in common.read_csv(test, ["name_image"]):
      split_of[row["name_image"]] = "test"
    unlisted = []
    for line, row in common.read_csv(labels, ["name", "mos"]):
      name, where = row["name"], f"{labels} line {line}"
      if name not in split_of:
        unlisted.append(name)
      yield (_base.image_path(root, ["", "images"], name), where,
             split_of.get(name, "train"), {
                 "image_id": name,
                 "mos": common.parse_float(row["mos"], labels, line, "mos"),
             })
    if unlisted:
      logging.warning(
          "%d picture(s) of %s are in neither %s nor %s; they go to train "
          "(as pyiqa's split): %s%s", len(unlisted), labels, tv, test,
          ", ".join(unlisted[:5]), ", ..." if len(unlisted) > 5 else "")
