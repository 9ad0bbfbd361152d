"""KADID-10k (Lin et al. 2019): 81 references x 25 distortions x 5 levels.

Files, as distributed (`kadid10k.zip` unpacks to `kadid10k/`; evidence in
docs/datasets.md): `dmos.csv` (header dist_img, ref_img, dmos, var) and
`images/` with the references `I01.png` .. and the distorted
`I{ref}_{type}_{level}.png`, from which `content_id`, `distortion_type`
(1..25) and `distortion_level` (1..5) come. Despite the name `dmos` is a MOS
on 1..5, higher is better.

Split by reference image (no content in two splits): a seeded permutation of
the 81 references (`split_seed`, default 0) into 20% test, 8% validation, 72%
train (17 / 6 / 58 references).

Features: `mos` (1..5), `mos_std` = sqrt(var), `reference`, `content_id`,
`distortion_type`, `distortion_level`.
"""

from __future__ import annotations

import math
import re

import numpy as np
import tensorflow_datasets as tfds

from musiq_jax.datasets import _base
from musiq_jax.datasets import common

LABELS = "dmos.csv"
_NAME = re.compile(r"^I(\d+)_(\d+)_(\d+)\.\w+$")


class Kadid10k(_base.ManualIQABuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "http://database.mmsp-kn.de/kadid-10k-database.html"
  REQUIRED_FILES = (LABELS,)
  TOP_FOLDERS = ("kadid10k",)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download kadid10k.zip from {HOMEPAGE} and unzip; manual_dir is the
  kadid10k/ folder it unpacks to (or the folder holding it):
    manual_dir/{LABELS}
    manual_dir/images/I01.png, I01_01_01.png, ...
  """

  def _extra_features(self):
    return {"mos_std": tfds.features.Scalar(np.float32),
            "reference": tfds.features.Text(),
            "content_id": tfds.features.Scalar(np.int32),
            "distortion_type": tfds.features.Scalar(np.int32),
            "distortion_level": tfds.features.Scalar(np.int32)}

  def _records(self, root):
    labels = common.find_file(root, self.REQUIRED_FILES, "KADID label file",
                              self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    rows = common.read_csv(labels, ["dist_img", "ref_img", "dmos", "var"])
    split_of = common.random_split([r["ref_img"] for _, r in rows],
                                   common.RANDOM_SPLIT,
                                   self.builder_config.split_seed)
    for line, row in rows:
      name, where = row["dist_img"], f"{labels} line {line}"
      m = _NAME.match(name)
      if not m:
        raise ValueError(f"{where}: dist_img {name!r} is not named "
                         "I<ref>_<type>_<level>.png as in KADID-10k.")
      var = common.parse_float(row["var"], labels, line, "var")
      yield (_base.image_path(root, ["images", ""], name), where,
             split_of[row["ref_img"]], {
                 "image_id": name,
                 "mos": common.parse_float(row["dmos"], labels, line, "dmos"),
                 "mos_std": math.sqrt(max(var, 0.0)),
                 "reference": row["ref_img"],
                 "content_id": int(m.group(1)),
                 "distortion_type": int(m.group(2)),
                 "distortion_level": int(m.group(3)),
             })
