"""MUSIQ as a named metric, shaped like pyiqa's `create_metric`.

    import musiq_jax
    musiq_jax.list_models()          # ['musiq', 'musiq-ava', 'musiq-koniq', ...]
    metric = musiq_jax.create_metric("musiq-koniq", ckpt_path="koniq_ckpt.npz")
    metric("photo.jpg")              # -> array([score])
    metric(["a.jpg", "photos/", uint8_hwc, float_nhwc_in_0_1])
    metric.score_range, metric.lower_better   # (0.0, 100.0), False

The names are pyiqa's for the released checkpoints (`musiq`, `musiq-koniq`,
`musiq-spaq`, `musiq-paq2piq`, `musiq-ava`: chaofengc/IQA-PyTorch
`pyiqa/default_model_configs.py`, where `musiq` is the KonIQ model, none is
`lower_better` and `score_range` is '~0, ~100', or '1, 10' for AVA; its
`pyiqa/archs/musiq_arch.py` gives AVA 10 classes and the others 1), plus
`-single` variants for the MUSIQ-single checkpoints in
`full_size_single_scale/` (google-research `musiq/README.md`: "checkpoints
for the MUSIQ-single model trained with only the native resolution input").
A name fixes the scales and head size that `load_scorer` checks the file
against, so a file of another model is an error, not wrong scores.

Nothing is downloaded: pass the `.npz` you downloaded from
gs://gresearch/musiq (google-research `musiq/README.md`) as `ckpt_path`,
or the folder holding it under its released name.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from musiq_jax import collection


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """A released MUSIQ checkpoint: what it is and how it scores."""
  dataset: str
  file: str  # The released name, relative to gs://gresearch/musiq/.
  num_classes: int
  single_scale: bool
  score_range: Tuple[float, float]  # Approximate, as pyiqa's.


def _released() -> Dict[str, ModelInfo]:
  out = {}
  # Dataset -> (file stem, head outputs, approximate score range). pyiqa:
  # musiq/koniq/spaq/paq2piq '~0, ~100' (1 output), ava '1, 10' (10).
  for name, (stem, classes, lo_hi) in {
      "koniq": ("koniq", 1, (0.0, 100.0)),
      "spaq": ("spaq", 1, (0.0, 100.0)),
      "paq2piq": ("paq2piq", 1, (0.0, 100.0)),
      "ava": ("ava", 10, (1.0, 10.0))}.items():
    out[f"musiq-{name}"] = ModelInfo(name, f"{stem}_ckpt.npz", classes, False,
                                     lo_hi)
    out[f"musiq-{name}-single"] = ModelInfo(
        name, f"full_size_single_scale/{stem}_ckpt.npz", classes, True, lo_hi)
  out["musiq"] = out["musiq-koniq"]  # pyiqa's default `musiq` is KonIQ's.
  return out


MODELS: Dict[str, ModelInfo] = _released()


def list_models() -> List[str]:
  """The metric names `create_metric` knows, sorted."""
  return sorted(MODELS)


class Metric:
  """A loaded MUSIQ scorer under a metric's name (see `create_metric`).

  Call it on a path, a directory (its image files), encoded bytes, a uint8
  array ([H, W, 3] or [N, H, W, 3]), a float array in [0, 1] ([H, W, 3] or
  [N, H, W, 3], NHWC RGB), or a list mixing these (of any sizes); it returns
  one score per image as a float64 array, in input order. A file that
  cannot be scored raises `ValueError` naming it.
  """

  lower_better = False

  def __init__(self, name: str, info: Optional[ModelInfo], scorer: Any):
    self.name = name
    self.info = info
    self.scorer = scorer
    self.score_range = (info.score_range if info else (float("-inf"),
                                                       float("inf")))

  def __repr__(self):
    return (f"Metric({self.name!r}, source={self.scorer.source!r}, "
            f"score_range={self.score_range}, lower_better=False)")

  def _expand(self, x, out: List[Any], names: List[str]) -> None:
    """Appends (kind, image) items: "file" (path, bytes, uint8 [H, W, 3]
    array) for the scorer, "float" ([n, H, W, 3] in [0, 1]) for its
    float path (`Scorer.as_loss`: no rounding to uint8)."""
    if isinstance(x, (str, os.PathLike)) and os.path.isdir(x):
      for p in collection.iter_paths([os.fspath(x)]):
        out.append(("file", p))
        names.append(p)
    elif isinstance(x, (str, os.PathLike)):
      out.append(("file", x))
      names.append(os.fspath(x))
    elif isinstance(x, (bytes, bytearray)):
      out.append(("file", bytes(x)))
      names.append(f"<bytes {len(names)}>")
    elif isinstance(x, (list, tuple)):
      for item in x:
        self._expand(item, out, names)
    elif hasattr(x, "shape") and hasattr(x, "dtype"):
      self._expand_array(np.asarray(x), out, names)
    else:
      raise TypeError(f"cannot score a {type(x).__name__}: pass paths, "
                      "directories, bytes, or uint8 / float [0, 1] arrays")

  @staticmethod
  def _expand_array(a: np.ndarray, out, names) -> None:
    name = f"<image {len(names)}>"
    if a.ndim not in (3, 4) or a.shape[-1] != 3 or min(a.shape) < 1:
      hint = (" (channels first? transpose to NHWC)"
              if a.ndim in (3, 4) and a.shape[-3] == 3 else "")
      raise ValueError(f"{name}: expected an RGB image [H, W, 3] or a batch "
                       f"[N, H, W, 3] (NHWC), got shape {a.shape}{hint}")
    if a.dtype == np.uint8:
      for img in (a if a.ndim == 4 else [a]):
        out.append(("file", img))
        names.append(f"<image {len(names)}>")
      return
    if not np.issubdtype(a.dtype, np.floating):
      raise ValueError(f"{name}: expected uint8 or float pixels in [0, 1], "
                       f"got {a.dtype}")
    if not np.isfinite(a).all():
      raise ValueError(f"{name}: NaN or infinite pixels")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
      raise ValueError(f"{name}: float pixels must be in [0, 1], got "
                       f"[{lo:.3g}, {hi:.3g}] (uint8 data: pass it as uint8, "
                       "or divide by 255)")
    batch = (a if a.ndim == 4 else a[None]).astype(np.float32)
    out.append(("float", batch))
    names.extend(f"<image {len(names) + i}>" for i in range(len(batch)))

  def __call__(self, x) -> np.ndarray:
    """Scores, one per image, in input order (float64 [n])."""
    items, names = [], []
    self._expand(x, items, names)
    files = [v for kind, v in items if kind == "file"]
    file_names, pos = [], 0
    for kind, v in items:
      if kind == "file":
        file_names.append(names[pos])
        pos += 1
      else:
        pos += len(v)
    file_scores = iter(self._score_files(files, file_names))
    musiq = None
    scores = []
    for kind, v in items:
      if kind == "file":
        scores.append(next(file_scores))
      else:
        musiq = musiq or self.scorer.as_loss()
        scores.extend(np.asarray(musiq(v), np.float64).tolist())
    return np.asarray(scores, np.float64)

  def _score_files(self, files, names):
    for r in self.scorer.score_iter(files, names):
      if r.error is not None:
        raise ValueError(f"{r.image}: {r.error}")
      yield r.score

  def as_loss(self):
    """The differentiable form (`Scorer.as_loss`): float [N, H, W, 3] in
    [0, 1] -> scores; for a loss use `-metric.as_loss()(x).mean()`."""
    return self.scorer.as_loss()


def _resolve_path(name: str, info: ModelInfo, ckpt_path) -> str:
  if ckpt_path is None:
    raise ValueError(
        f"{name}: pass ckpt_path= (nothing is downloaded); the released file "
        f"is gs://gresearch/musiq/{info.file} (google-research "
        "musiq/README.md)")
  path = os.fspath(ckpt_path)
  if os.path.isdir(path):
    for candidate in (os.path.join(path, info.file),
                      os.path.join(path, os.path.basename(info.file))):
      if os.path.isfile(candidate) and (
          info.single_scale or "full_size_single_scale" not in candidate):
        return candidate
    raise ValueError(f"{name}: {path} has no {info.file}")
  return path


def create_metric(name: str, ckpt_path=None, *, batch_size: int = 1,
                  **load_kwargs) -> Metric:
  """A MUSIQ metric by name, from a checkpoint file you have.

  Args:
    name: one of `list_models()` (`musiq-koniq`, `musiq-spaq`,
      `musiq-paq2piq`, `musiq-ava`, their `-single` variants; `musiq` is
      `musiq-koniq`), or `musiq-custom` for any other checkpoint (e.g. a
      training export `WORKDIR/best.npz`: scales and head read from it).
    ckpt_path: the `.npz`, or a folder holding it under its released name
      (`koniq_ckpt.npz`, `full_size_single_scale/koniq_ckpt.npz`, ...).
    batch_size: images per forward pass.
    **load_kwargs: passed to `musiq_jax.load_scorer` (dtype,
      max_native_tokens, max_seq_len_from_original_res, workdir).

  Returns:
    A callable `Metric` with `score_range` and `lower_better` (False).
  """
  from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top
  if name == "musiq-custom":
    scorer = scorer_lib.load_scorer(
        None if ckpt_path is None else os.fspath(ckpt_path),
        batch_size=batch_size, **load_kwargs)
    return Metric(name, None, scorer)
  if name not in MODELS:
    raise ValueError(f"unknown metric {name!r}; known: {list_models()} and "
                     "musiq-custom")
  info = MODELS[name]
  for key in ("num_classes", "single_scale"):
    if key in load_kwargs:
      raise ValueError(f"{name} sets {key}; use musiq-custom to choose it")
  scorer = scorer_lib.load_scorer(
      _resolve_path(name, info, ckpt_path), num_classes=info.num_classes,
      single_scale=info.single_scale, batch_size=batch_size, **load_kwargs)
  return Metric(name, info, scorer)
