"""SPAQ (Fang et al. 2020): 11,125 smartphone photos, MOS 0..100.

Files, as distributed (h4nwei/SPAQ; evidence in docs/datasets.md): the
download folder `SPAQ/` holds `Annotations/MOS and Image attribute
scores.xlsx` (columns Image name, MOS, Brightness, Colorfulness, Contrast,
Noisiness, Sharpness; first sheet) and the split archive SPAQ.zip (.z01..),
which unpacks to `TestImage/00001.jpg, ...`. Reading .xlsx needs `openpyxl`
(a dependency of this package); a CSV export of that sheet with the same
header (`Annotations/MOS and Image attribute scores.csv`) is accepted too and
preferred when both exist.

No official split: a seeded random split of the images (`split_seed`, default
0): 20% test, 8% validation, 72% train; `train+validation` is the customary 80%.

Configs: `default` keeps the original full-size photos; `512` resizes each
photo so its shorter side is 512 (Pillow Lanczos, stored as JPEG quality 95),
as MUSIQ did for SPAQ.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Optional

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from musiq_jax import image_io
from musiq_jax.datasets import _base
from musiq_jax.datasets import common

XLSX = os.path.join("Annotations", "MOS and Image attribute scores.xlsx")
CSV = os.path.join("Annotations", "MOS and Image attribute scores.csv")
ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness",
              "Sharpness")


@dataclasses.dataclass(eq=False)
class SPAQConfig(common.IQAConfig):
  shorter_side: Optional[int] = None


def read_xlsx(path: str):
  """[(row number, {header: text})] of the first sheet of an .xlsx file."""
  try:
    import openpyxl  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError(f"Reading {path} needs openpyxl (`pip install openpyxl`); "
                     f"or save the sheet as CSV next to it: {CSV}.") from None
  wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
  rows = list(wb.worksheets[0].iter_rows(values_only=True))
  wb.close()
  if not rows:
    raise ValueError(f"{path}: empty sheet.")
  header = [str(h).strip() if h is not None else "" for h in rows[0]]
  out = []
  for i, row in enumerate(rows[1:], start=2):
    if row is None or all(v is None for v in row):
      continue
    out.append((i, {h: "" if v is None else str(v).strip()
                    for h, v in zip(header, row)}))
  return header, out


class Spaq(_base.ManualIQABuilder):
  __doc__ = __doc__
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = "https://github.com/h4nwei/SPAQ"
  BUILDER_CONFIGS = [SPAQConfig(name="default"),
                     SPAQConfig(name="512", shorter_side=512)]
  REQUIRED_FILES = (XLSX, CSV)
  TOP_FOLDERS = ("SPAQ",)
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download the SPAQ folder linked from {HOMEPAGE} (Annotations/ and the
  split SPAQ.zip; join the parts with `zip -FF SPAQ.zip --out
  SPAQ_fixed.zip`, as that repository's README_SPAQ_unzip_problem_and_
  solution.md says) and unzip the images next to Annotations/:
    manual_dir/{XLSX}   (or a CSV export: {CSV})
    manual_dir/TestImage/00001.jpg, ...     (what SPAQ.zip unpacks to)
  (manual_dir may also be the folder holding the downloaded SPAQ/).
  Copies with damaged pictures (that README) build with
  --on_bad_image=skip.
  """

  def _extra_features(self):
    return {a.lower(): tfds.features.Scalar(np.float32) for a in ATTRIBUTES}

  def _records(self, root):
    required = ["Image name", "MOS"] + list(ATTRIBUTES)
    if os.path.exists(os.path.join(root, CSV)):
      path = os.path.join(root, CSV)
      rows = common.read_csv(path, required)
    else:
      path = os.path.join(root, XLSX)
      header, rows = read_xlsx(path)
      missing = [c for c in required if c not in header]
      if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found "
                         f"{header}. Is this SPAQ's original sheet?")
    split_of = common.random_split([r["Image name"] for _, r in rows],
                                   common.RANDOM_SPLIT,
                                   self.builder_config.split_seed)
    for line, row in rows:
      name = row["Image name"]
      feats = {"image_id": name,
               "mos": common.parse_float(row["MOS"], path, line, "MOS")}
      for a in ATTRIBUTES:
        feats[a.lower()] = common.parse_float(row[a], path, line, a)
      yield (_base.image_path(root, ["TestImage", ""], name),
             f"{path} line {line}", split_of[name], feats)

  def _transform_image(self, data, path):
    side = self.builder_config.shorter_side
    return resize_shorter_side(data, side, path) if side else data


def resize_shorter_side(data: bytes, side: int, source: str) -> bytes:
  """Lanczos resize to a shorter side of `side` px, as JPEG quality 95."""
  pixels = image_io.decode_image(data, source)
  h, w = pixels.shape[:2]
  scale = side / min(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  buf = io.BytesIO()
  Image.fromarray(pixels).resize(size, Image.LANCZOS).save(
      buf, format="JPEG", quality=95)
  return buf.getvalue()
