"""PaQ-2-PiQ / FLIVE (Ying et al. 2020): ~39,810 pictures, MOS 0..100.

Labels (from the PaQ-2-PiQ repository's `database/` folder):
* `labels_image.csv`: name_image, mos_image (every picture's MOS);
* `labels=640_padded.csv`: name_image, ..., is_valid: the pictures of at most
  640 px; `is_valid` True marks the official validation set, False training;
* the official test set (the pictures larger than 640 px): `labels>640.csv`
  (`labels640.csv` is accepted as that file's name, as some copies spell it).
A picture in `labels_image.csv` but in none of the split files is an error
(a wrong or partial label folder).

Image paths `name_image` (e.g. `voc_emotic_ava/xxx.jpg`) are relative to
manual_dir (or manual_dir/images). Features: `mos` (0..100).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from musiq_jax.datasets import _base
from musiq_jax.datasets import common

LABELS = "labels_image.csv"
TRAIN_VALID = "labels=640_padded.csv"
TEST = ("labels>640.csv", "labels640.csv")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class Paq2piq(_base.ManualIQABuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://github.com/baidut/PaQ-2-PiQ"
  REQUIRED_FILES = (LABELS,)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download the PaQ-2-PiQ database ({HOMEPAGE}, FLIVE images and the
  `database/` label files) into manual_dir:
    manual_dir/{LABELS}
    manual_dir/{TRAIN_VALID}      (is_valid column: validation vs train)
    manual_dir/{TEST[0]}          (test pictures; or {TEST[1]})
    manual_dir/<name_image>        (image paths as listed, e.g.
                                    voc_emotic_ava/xxx.jpg; or under images/)
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
    for line, row in common.read_csv(labels, ["name_image", "mos_image"]):
      name, where = row["name_image"], f"{labels} line {line}"
      if name not in split_of:
        raise ValueError(f"{where}: picture {name!r} is in neither {tv} nor "
                         f"{test}; its split is unknown.")
      yield (_base.image_path(root, ["", "images"], name), where,
             split_of[name], {
                 "image_id": name,
                 "mos": common.parse_float(row["mos_image"], labels, line,
                                           "mos_image"),
             })
