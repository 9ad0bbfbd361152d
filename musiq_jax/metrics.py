"""IQA evaluation metrics: SRCC, PLCC (raw and 4-parameter-logistic fitted),
KRCC and RMSE, as clu metrics that accumulate over batches.

Correlations are rank/moment statistics of the *whole* evaluation set, so they
cannot be averaged per batch: the metrics here collect `(prediction, label,
valid)` on the host (clu's `CollectingMetric`; call `.merge()` in the Python
eval loop, not inside `jit`) and compute once at the end with scipy, so the
numbers agree with `scipy.stats` exactly. Examples with `valid == 0` (the dummy
examples that pad the last evaluation batch) are dropped before computing.

The fitted PLCC follows the VQEG practice used by IQA papers: predictions are
mapped through the 4-parameter logistic

    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2

fitted to the labels with `scipy.optimize.curve_fit`, and PLCC is computed
between `f(prediction)` and the labels. If the fit fails (too few points,
constant inputs, no convergence, non-finite output) the identity mapping is
used, so the fitted PLCC falls back to the raw PLCC (PLCC is invariant to any
linear mapping, so this is the best monotone-linear fit).

Degenerate inputs (fewer than 2 valid examples, or constant predictions or
labels) give NaN, as scipy does, instead of raising.
"""

# No `from __future__ import annotations`: clu.Collection reads the field
# annotations as classes.

import warnings
from typing import Dict, Tuple

from clu import metrics as clu_metrics
import flax
import jax
import numpy as np
import scipy.optimize
import scipy.stats


def _as_valid(prediction, label, valid=None) -> Tuple[np.ndarray, np.ndarray]:
  """Flattens to float64 and keeps the examples whose valid weight is > 0."""
  prediction = np.asarray(prediction, np.float64).reshape(-1)
  label = np.asarray(label, np.float64).reshape(-1)
  if prediction.shape != label.shape:
    raise ValueError(f"prediction has {prediction.size} values but label has "
                     f"{label.size}; pass one prediction per example.")
  if valid is not None:
    keep = np.asarray(valid, np.float64).reshape(-1) > 0
    if keep.shape != prediction.shape:
      raise ValueError(f"valid has {keep.size} values for {prediction.size} "
                       "predictions; pass one weight per example.")
    prediction, label = prediction[keep], label[keep]
  return prediction, label


def _degenerate(x, y) -> bool:
  return x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0


def srcc(prediction, label, valid=None) -> float:
  """Spearman rank-order correlation (average ranks for ties)."""
  x, y = _as_valid(prediction, label, valid)
  if _degenerate(x, y):
    return float("nan")
  return float(scipy.stats.spearmanr(x, y)[0])


def krcc(prediction, label, valid=None) -> float:
  """Kendall rank correlation (tau-b, which accounts for ties)."""
  x, y = _as_valid(prediction, label, valid)
  if _degenerate(x, y):
    return float("nan")
  return float(scipy.stats.kendalltau(x, y)[0])


def plcc(prediction, label, valid=None) -> float:
  """Pearson linear correlation of the raw predictions."""
  x, y = _as_valid(prediction, label, valid)
  if _degenerate(x, y):
    return float("nan")
  return float(scipy.stats.pearsonr(x, y)[0])


def rmse(prediction, label, valid=None) -> float:
  """Root-mean-square error of the raw predictions (label units)."""
  x, y = _as_valid(prediction, label, valid)
  if x.size == 0:
    return float("nan")
  return float(np.sqrt(np.mean((x - y)**2)))


def logistic_4(x, b1, b2, b3, b4):
  """The 4-parameter logistic used to map predictions before PLCC."""
  z = np.clip(-(x - b3) / (np.abs(b4) + 1e-12), -500.0, 500.0)
  return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic(prediction, label, valid=None) -> np.ndarray:
  """Maps predictions through the fitted 4-parameter logistic.

  Returns `prediction` unchanged (float64, valid examples only) when the fit
  fails; see the module docstring.
  """
  x, y = _as_valid(prediction, label, valid)
  if x.size < 4 or _degenerate(x, y):
    return x
  # Start from a logistic spanning the label range, centred on the
  # predictions, with a slope matching their spread; the sign of the raw
  # correlation picks an increasing or decreasing start.
  sign = 1.0 if np.corrcoef(x, y)[0, 1] >= 0 else -1.0
  lo, hi = (np.min(y), np.max(y)) if sign > 0 else (np.max(y), np.min(y))
  p0 = [hi, lo, float(np.mean(x)), float(np.std(x)) or 1.0]
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      params, _ = scipy.optimize.curve_fit(logistic_4, x, y, p0=p0,
                                           maxfev=10000)
    fitted = logistic_4(x, *params)
  except (RuntimeError, ValueError, TypeError, scipy.optimize.OptimizeWarning):
    return x
  if not np.all(np.isfinite(fitted)) or np.ptp(fitted) == 0:
    return x
  return fitted


def plcc_fitted(prediction, label, valid=None) -> float:
  """Pearson correlation after the 4-parameter logistic fit."""
  x, y = _as_valid(prediction, label, valid)
  return plcc(fit_logistic(x, y), y)


def all_metrics(prediction, label, valid=None) -> Dict[str, float]:
  """Every metric at once, keyed as in `IQAMetrics`."""
  x, y = _as_valid(prediction, label, valid)
  return {"srcc": srcc(x, y), "plcc": plcc(x, y),
          "plcc_fitted": plcc_fitted(x, y), "krcc": krcc(x, y),
          "rmse": rmse(x, y)}


# ----------------------------------------------------------------------------
# clu metrics. Each one collects (prediction, label, valid) on the host.
# ----------------------------------------------------------------------------
@flax.struct.dataclass
class _Collect(clu_metrics.CollectingMetric):
  """Collects (prediction, label, valid) as host numpy arrays.

  Unlike `CollectingMetric.from_outputs`, values are not routed through
  `jnp.array`, which would round float64 labels to float32 (jax's default) and
  could create ties that the data does not have.
  """

  @classmethod
  def from_model_output(cls, *, prediction, label, valid=None, **_):
    prediction = np.asarray(jax.device_get(prediction)).reshape(-1)
    label = np.asarray(jax.device_get(label)).reshape(-1)
    if valid is None:
      valid = np.ones(prediction.shape, np.float32)
    valid = np.asarray(jax.device_get(valid), np.float32).reshape(-1)
    return cls({"prediction": (prediction,), "label": (label,),
                "valid": (valid,)})


def _make_metric(name: str, fn):
  """A clu CollectingMetric class whose compute() is `fn` on the valid data."""

  @flax.struct.dataclass
  class _Metric(_Collect):  # pylint: disable=missing-class-docstring

    def compute(self) -> float:
      if not self.values:
        return float("nan")
      v = super().compute()
      return fn(v["prediction"], v["label"], v["valid"])

  _Metric.__name__ = _Metric.__qualname__ = name
  _Metric.__doc__ = (f"clu metric: `{fn.__name__}` over all merged batches. "
                     "Update with `from_model_output(prediction=, label=, "
                     "valid=)`.")
  return _Metric


SRCC = _make_metric("SRCC", srcc)
PLCC = _make_metric("PLCC", plcc)
PLCCFitted = _make_metric("PLCCFitted", plcc_fitted)
KRCC = _make_metric("KRCC", krcc)
RMSE = _make_metric("RMSE", rmse)


@flax.struct.dataclass
class IQAMetrics(clu_metrics.Collection):
  """All IQA metrics. Usage in an eval loop (host side)::

      m = IQAMetrics.empty()
      for batch in eval_ds:
        pred = eval_step(params, batch)
        m = m.merge(IQAMetrics.single_from_model_output(
            prediction=pred, label=batch["label"], valid=batch["valid"]))
      results = m.compute()  # {"srcc": ..., "plcc": ..., ...}
  """
  srcc: SRCC
  plcc: PLCC
  plcc_fitted: PLCCFitted
  krcc: KRCC
  rmse: RMSE
