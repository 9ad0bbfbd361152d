"""KonIQ-10k (Hosu et al. 2020): 10,073 in-the-wild photos, MOS 0..100.

Labels: `koniq10k_scores_and_distributions.csv` (columns image_name, c1..c5,
c_total, MOS (1..5), SD, MOS_zscore (0..100)). Split: the official `set` column
(training / validation / test) of `koniq10k_distributions_sets.csv`.

Features: `mos` = MOS_zscore (0..100, the scale MUSIQ reports); `mos_1to5` =
MOS; `mos_std` = SD (on the 1..5 scale of `mos_1to5`).
Configs: `1024x768` (default, the resolution MUSIQ uses) and `512x384`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from musiq_jax.datasets import _base
from musiq_jax.datasets import common

SCORES = "koniq10k_scores_and_distributions.csv"
SETS = "koniq10k_distributions_sets.csv"
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
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download from {HOMEPAGE} and unzip into manual_dir:
    manual_dir/{SCORES}
    manual_dir/{SETS}          (official split; the `set` column)
    manual_dir/1024x768/*.jpg   (koniq10k_1024x768.zip)
    manual_dir/512x384/*.jpg    (koniq10k_512x384.zip; for the 512x384 config)
  """

  def _extra_features(self):
    return {"mos_1to5": tfds.features.Scalar(np.float32),
            "mos_std": tfds.features.Scalar(np.float32)}

  def _records(self, root):
    scores = common.find_file(root, [SCORES], "KonIQ score file",
                              self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    sets = common.find_file(root, [SETS], "KonIQ split file",
                            self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    split_of = {}
    for line, row in common.read_csv(sets, ["image_name", "set"]):
      s = row["set"].lower()
      if s not in _SET_TO_SPLIT:
        raise ValueError(f"{sets} line {line}: set {row['set']!r} is not one "
                         "of training/validation/test.")
      split_of[row["image_name"]] = _SET_TO_SPLIT[s]
    folder = self.builder_config.resolution
    for line, row in common.read_csv(scores, ["image_name", "MOS", "SD",
                                              "MOS_zscore"]):
      name, where = row["image_name"], f"{scores} line {line}"
      if name not in split_of:
        raise ValueError(f"{where}: image {name!r} has no row in {sets}, so "
                         "its split is unknown.")
      yield (_base.image_path(root, [folder], name), where, split_of[name], {
          "image_id": name,
          "mos": common.parse_float(row["MOS_zscore"], scores, line,
                                    "MOS_zscore"),
          "mos_1to5": common.parse_float(row["MOS"], scores, line, "MOS"),
          "mos_std": common.parse_float(row["SD"], scores, line, "SD"),
      })
