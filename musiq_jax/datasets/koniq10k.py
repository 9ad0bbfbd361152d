"""KonIQ-10k (Hosu et al. 2020): 10,073 in-the-wild photos, MOS 0..100.

Files, as distributed (the evidence for each is in docs/datasets.md):
* `koniq10k_scores_and_distributions.csv` (from
  `koniq10k_scores_and_distributions.zip` on the database page): columns
  image_name, c1..c5, c_total, MOS (1..5), SD, MOS_zscore (0..100);
* `koniq10k_distributions_sets.csv`: the official split, column `set`
  (training / validation / test: 7058 / 1000 / 2015 images). It is not on
  the database page but in the subpic/koniq repository, `metadata/`;
* `1024x768/<image_name>` (`koniq10k_1024x768.zip` unpacks to `1024x768/`),
  `512x384/` likewise.

Features: `mos` = MOS_zscore (0..100, the scale MUSIQ reports); `mos_1to5` =
MOS; `mos_std` = SD (on the 1..5 scale of `mos_1to5`; from the split file
when the score file has no SD column).
Configs: `1024x768` (default, the resolution MUSIQ uses) and `512x384`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from musiq_jax.datasets import _base
from musiq_jax.datasets import common

SCORES = "koniq10k_scores_and_distributions.csv"
SETS = "koniq10k_distributions_sets.csv"
SETS_URL = ("https://github.com/subpic/koniq/blob/master/metadata/"
            "koniq10k_distributions_sets.csv")
_SET_TO_SPLIT = {"training": "train", "train": "train",
                 "validation": "validation", "test": "test"}


@dataclasses.dataclass(eq=False)
class KonIQConfig(common.IQAConfig):
  resolution: str = "1024x768"


class Koniq10k(_base.ManualIQABuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://database.mmsp-kn.de/koniq-10k-database.html"
  BUILDER_CONFIGS = [KonIQConfig(name="1024x768", resolution="1024x768"),
                     KonIQConfig(name="512x384", resolution="512x384")]
  REQUIRED_FILES = (SCORES,)
  TOP_FOLDERS = ("koniq10k",)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  From {HOMEPAGE} download koniq10k_scores_and_distributions.zip and
  koniq10k_1024x768.zip (or koniq10k_512x384.zip for the 512x384 config);
  the split file is not on that page: get it from the subpic/koniq
  repository, {SETS_URL}. Unzip into manual_dir:
    manual_dir/{SCORES}
    manual_dir/{SETS}         (or manual_dir/metadata/{SETS}, as in the
                                repository)
    manual_dir/1024x768/*.jpg  (the folder koniq10k_1024x768.zip unpacks to)
    manual_dir/512x384/*.jpg   (koniq10k_512x384.zip; the 512x384 config)
  (a folder koniq10k/ holding these is also accepted).
  """

  def _extra_features(self):
    return {"mos_1to5": tfds.features.Scalar(np.float32),
            "mos_std": tfds.features.Scalar(np.float32)}

  def _records(self, root):
    scores = common.find_file(root, [SCORES], "KonIQ score file",
                              self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    sets = common.find_file(root, [SETS, os.path.join("metadata", SETS)],
                            f"KonIQ split file (from {SETS_URL})",
                            self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    split_of, sd_of = {}, {}
    set_rows = common.read_csv(sets, ["image_name", "set"])
    for line, row in set_rows:
      s = row["set"].lower()
      if s not in _SET_TO_SPLIT:
        raise ValueError(f"{sets} line {line}: set {row['set']!r} is not one "
                         "of training/validation/test.")
      split_of[row["image_name"]] = _SET_TO_SPLIT[s]
      if "SD" in row:
        sd_of[row["image_name"]] = (row["SD"], sets, line)
    folder = self.builder_config.resolution
    for line, row in common.read_csv(scores, ["image_name", "MOS",
                                              "MOS_zscore"]):
      name, where = row["image_name"], f"{scores} line {line}"
      if name not in split_of:
        raise ValueError(f"{where}: image {name!r} has no row in {sets}, so "
                         "its split is unknown.")
      sd, sd_file, sd_line = ((row["SD"], scores, line) if "SD" in row else
                              sd_of.get(name, ("", sets, "?")))
      yield (_base.image_path(root, [folder], name), where, split_of[name], {
          "image_id": name,
          "mos": common.parse_float(row["MOS_zscore"], scores, line,
                                    "MOS_zscore"),
          "mos_1to5": common.parse_float(row["MOS"], scores, line, "MOS"),
          "mos_std": common.parse_float(sd, sd_file, sd_line, "SD"),
      })
