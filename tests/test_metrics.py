"""The clu IQA metrics agree with scipy.stats and ignore padding examples."""

import numpy as np
import pytest
import scipy.stats

from musiq_jax import metrics


def _collect(batches):
  m = metrics.IQAMetrics.empty()
  for pred, label, valid in batches:
    m = m.merge(metrics.IQAMetrics.single_from_model_output(
        prediction=pred, label=label, valid=valid))
  return m.compute()


def _split(n, rng, sizes=(1, 7, 1, 13)):
  """Index ranges of batches of the given sizes (incl. size 1), then the rest."""
  edges, start = [], 0
  for s in sizes:
    edges.append((start, min(start + s, n)))
    start = min(start + s, n)
  edges.append((start, n))
  return [(a, b) for a, b in edges if b > a]


@pytest.mark.parametrize("with_ties", [False, True])
def test_clu_metrics_match_scipy(with_ties):
  rng = np.random.default_rng(0)
  n = 60
  label = rng.uniform(1, 5, n)
  pred = 2 * label + rng.normal(0, 1.5, n)
  if with_ties:
    label = np.round(label)  # Many ties in the labels...
    pred = np.round(pred)  # ... and in the predictions.
  batches = [(pred[a:b], label[a:b], np.ones(b - a)) for a, b in
             _split(n, rng)]
  out = _collect(batches)
  assert out["srcc"] == pytest.approx(scipy.stats.spearmanr(pred, label)[0],
                                      abs=1e-12)
  assert out["krcc"] == pytest.approx(scipy.stats.kendalltau(pred, label)[0],
                                      abs=1e-12)
  assert out["plcc"] == pytest.approx(scipy.stats.pearsonr(pred, label)[0],
                                      abs=1e-12)
  assert out["rmse"] == pytest.approx(np.sqrt(np.mean((pred - label)**2)),
                                      rel=1e-12)
  # The logistic fit can only help a monotone relation.
  assert out["plcc_fitted"] >= out["plcc"] - 1e-6


def test_invalid_examples_are_ignored():
  rng = np.random.default_rng(1)
  n = 40
  label = rng.uniform(0, 100, n)
  pred = label + rng.normal(0, 20, n)
  valid = (rng.uniform(size=n) > 0.3).astype(np.float32)
  # Garbage in the padded slots must not change anything.
  pred_padded = np.where(valid > 0, pred, 1e6)
  out = _collect([(pred_padded[:1], label[:1], valid[:1]),
                  (pred_padded[1:], label[1:], valid[1:])])
  keep = valid > 0
  assert out["srcc"] == pytest.approx(
      scipy.stats.spearmanr(pred[keep], label[keep])[0], abs=1e-12)
  assert out["rmse"] == pytest.approx(
      np.sqrt(np.mean((pred[keep] - label[keep])**2)), rel=1e-12)
  assert np.isfinite(out["plcc_fitted"])


def test_logistic_fit_recovers_nonlinear_relation():
  x = np.linspace(-3, 3, 200)
  y = metrics.logistic_4(x, 90.0, 10.0, 0.5, 0.4)
  assert metrics.plcc(x, y) < 0.95
  assert metrics.plcc_fitted(x, y) == pytest.approx(1.0, abs=1e-6)


def test_logistic_fit_falls_back_to_raw():
  x = np.array([1.0, 2.0, 3.0])  # Too few points to fit 4 parameters.
  y = np.array([2.0, 1.0, 5.0])
  assert metrics.plcc_fitted(x, y) == pytest.approx(metrics.plcc(x, y))


def test_degenerate_inputs_give_nan():
  assert np.isnan(metrics.srcc([1.0], [2.0]))
  assert np.isnan(metrics.plcc([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
  assert np.isnan(metrics.IQAMetrics.empty().compute()["srcc"])


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="one prediction per example"):
    metrics.srcc([1.0, 2.0], [1.0, 2.0, 3.0])
