"""LIVE In the Wild Image Quality Challenge (Ghadiyaram & Bovik 2016).

1,162 photos (plus 7 training pictures, dropped as is customary), MOS 0..100.
Files, as distributed (`ChallengeDB_release.zip` unpacks to
`ChallengeDB_release/`; evidence in docs/datasets.md): MATLAB files
`Data/AllImages_release.mat` (variable `AllImages_release`, a cell array of
file names: t1.bmp .. t7.bmp, then 100.bmp, ...), `Data/AllMOS_release.mat`
(`AllMOS_release`, 1 x 1169) and `Data/AllStdDev_release.mat`
(`AllStdDev_release`), read with scipy.io. Pictures in `Images/`, the 7
training pictures in `Images/trainingImages/`.

No official split: a seeded random split (`split_seed`, default 0): 20% test,
8% validation, 72% train. Features: `mos` (0..100), `mos_std`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from musiq_jax.datasets import _base
from musiq_jax.datasets import common

NAMES = os.path.join("Data", "AllImages_release.mat")
MOS = os.path.join("Data", "AllMOS_release.mat")
STD = os.path.join("Data", "AllStdDev_release.mat")


@dataclasses.dataclass(eq=False)
class LiveCConfig(common.IQAConfig):
  num_dropped: int = 7  # The leading training pictures, as is customary.


def _load_mat(path: str, key: str) -> np.ndarray:
  try:
    mat = scipy.io.loadmat(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path}: cannot read as a MATLAB file ({e}).") from e
  if key not in mat:
    found = [k for k in mat if not k.startswith("__")]
    raise ValueError(f"{path}: no variable {key!r}; found {found}.")
  return np.asarray(mat[key]).reshape(-1)


class LiveChallenge(_base.ManualIQABuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://live.ece.utexas.edu/research/ChallengeDB/index.html"
  BUILDER_CONFIGS = [LiveCConfig(name="default")]
  REQUIRED_FILES = (NAMES,)
  # The folder the zip unpacks to (some copies nest it twice).
  TOP_FOLDERS = ("ChallengeDB_release",
                 "ChallengeDB_release/ChallengeDB_release")
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download ChallengeDB_release.zip from {HOMEPAGE} and unzip; manual_dir is
  the ChallengeDB_release/ folder (or the folder holding it):
    manual_dir/{NAMES}
    manual_dir/{MOS}
    manual_dir/{STD}
    manual_dir/Images/*.bmp, manual_dir/Images/trainingImages/t1.bmp ...
  """

  def _extra_features(self):
    return {"mos_std": tfds.features.Scalar(np.float32)}

  def _records(self, root):
    paths = [common.find_file(root, [rel], "LIVE-C label file",
                              self.MANUAL_DOWNLOAD_INSTRUCTIONS)
             for rel in (NAMES, MOS, STD)]
    names = _load_mat(paths[0], "AllImages_release")
    mos = _load_mat(paths[1], "AllMOS_release")
    std = _load_mat(paths[2], "AllStdDev_release")
    if not len(names) == len(mos) == len(std):
      raise ValueError(f"LIVE-C label files disagree: {len(names)} names, "
                       f"{len(mos)} MOS, {len(std)} std values.")
    drop = self.builder_config.num_dropped
    names = [str(np.asarray(n).reshape(-1)[0]) for n in names]
    split_of = common.random_split(names[drop:], common.RANDOM_SPLIT,
                                   self.builder_config.split_seed)
    for i in range(drop, len(names)):
      where = f"{paths[1]} entry {i + 1} ({names[i]})"
      yield (_base.image_path(root, ["Images", "Images/trainingImages"],
                              names[i]), where, split_of[names[i]], {
                                  "image_id": names[i],
                                  "mos": common.parse_float(mos[i], paths[1],
                                                            i + 1, "MOS"),
                                  "mos_std": common.parse_float(
                                      std[i], paths[2], i + 1, "std"),
                              })
