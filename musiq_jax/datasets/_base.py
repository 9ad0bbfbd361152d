"""Base class of the real-dataset builders (manual download, offline build)."""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Sequence, Tuple

import tensorflow_datasets as tfds

from musiq_jax.datasets import common

# A labelled image before encoding: (image path, label row description,
# split, features other than image/height/width).
Record = Tuple[str, str, str, Dict[str, object]]


class ManualIQABuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Reads the user's downloaded files from `manual_dir`; never downloads.

  Subclasses set `MANUAL_DOWNLOAD_INSTRUCTIONS`, `REQUIRED_FILES` (at least
  one must exist in the dataset folder), `TOP_FOLDERS` (the folder the
  dataset's download unpacks to: manual_dir may be that folder or hold it),
  `_extra_features()` and `_records(root)`, which parses and checks the label
  files of the dataset folder `root` and yields `Record`s.
  """

  REQUIRED_FILES: Sequence[str] = ()
  TOP_FOLDERS: Sequence[str] = ()
  SPLITS: Sequence[str] = ("train", "validation", "test")
  HOMEPAGE = ""
  BUILDER_CONFIGS = [common.IQAConfig(name="default")]

  def _extra_features(self) -> Dict[str, object]:
    return {}

  def _records(self, root: str) -> Iterator[Record]:
    raise NotImplementedError

  def _transform_image(self, data: bytes, path: str) -> bytes:
    """Hook: rewrites an image file's bytes before encoding (e.g. resize)."""
    del path
    return data

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=common.core_features(**self._extra_features()),
        metadata=tfds.core.MetadataDict(),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    common.check_config(self.builder_config)
    root = common.manual_dir(dl_manager, self.MANUAL_DOWNLOAD_INSTRUCTIONS,
                             self.REQUIRED_FILES, self.TOP_FOLDERS)
    # Parse every label file up front, so label errors surface before any
    # image is encoded.
    by_split: Dict[str, List[Record]] = {s: [] for s in self.SPLITS}
    for rec in self._records(root):
      if rec[2] not in by_split:
        raise ValueError(f"{rec[1]}: unknown split {rec[2]!r}; expected one "
                         f"of {list(self.SPLITS)}.")
      by_split[rec[2]].append(rec)
    self._skipped: Dict[str, List[str]] = {}
    return {s: self._generate_examples(s, recs) for s, recs in
            by_split.items()}

  def _generate_examples(self, split, records):
    encode = common.ImageEncoder(self.builder_config.on_bad_image, split,
                                 self._skipped, self._transform_image)
    for path, where, _, features in records:
      image = encode(path, where)
      if image is None:
        continue
      yield features["image_id"], {**features, **image}
    # Runs once a split is fully generated; metadata is written afterwards.
    common.record_skipped(self.info, self._skipped)


def image_path(root: str, folders: Sequence[str], name: str) -> str:
  """`root/folder/name` for the first folder holding it (else the first)."""
  for folder in folders:
    p = os.path.join(root, folder, name)
    if os.path.exists(p):
      return p
  return os.path.join(root, folders[0], name)
