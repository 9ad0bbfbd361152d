"""Correlation head losses: 1 - PLCC and a soft-rank SRCC (scale-free).

Read-out: the scalar output (as regression)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence  # pylint: disable=unused-import

import jax
import jax.numpy as jnp
import numpy as np

from musiq_jax.losses._common import Array
from musiq_jax.losses._common import ArrayLike
from musiq_jax.losses._common import _as_scores  # pylint: disable=unused-import
from musiq_jax.losses._common import _get  # pylint: disable=unused-import
from musiq_jax.losses._common import _safe_divide  # pylint: disable=unused-import
from musiq_jax.losses._common import _safe_root  # pylint: disable=unused-import
from musiq_jax.losses._common import _weights  # pylint: disable=unused-import
from musiq_jax.losses._common import weighted_mean  # pylint: disable=unused-import


def _weighted_pearson(x: Array, y: Array, w: Array, eps: float) -> Array:
  """Pearson correlation of x and y over the examples with weight w."""
  wsum = jnp.maximum(jnp.sum(w), eps)
  xc = x - jnp.sum(w * x) / wsum
  yc = y - jnp.sum(w * y) / wsum
  cov = jnp.sum(w * xc * yc)
  var = jnp.sum(w * xc * xc) * jnp.sum(w * yc * yc)
  return cov / jnp.sqrt(var + eps)


def plcc_loss(pred: ArrayLike, target: ArrayLike,
              weight: Optional[ArrayLike] = None,
              eps: float = 1e-12) -> Array:
  """1 - Pearson linear correlation (PLCC) between predictions and MOS.

  With weights w (the valid mask) and weighted means p̄, ȳ:
    r = sum_n w_n (p_n - p̄)(y_n - ȳ)
        / sqrt(sum_n w_n (p_n - p̄)^2 * sum_n w_n (y_n - ȳ)^2 + eps),
    L = 1 - r.
  Differentiable everywhere; `eps` keeps a constant prediction (the state of a
  zero-initialised head) finite. The loss is invariant to the scale and offset
  of the predictions, so it is usually combined with MSE when absolute scores
  matter. Needs at least two valid examples with different values.

  Args:
    pred: predictions [N] or [N, 1].
    target: MOS [N].
    weight: valid mask [N] or None.
    eps: added to the product of variances.

  Returns:
    A scalar in [0, 2].
  """
  pred = _as_scores(pred).astype(jnp.float32)
  target = jnp.asarray(target, jnp.float32).reshape(pred.shape)
  w = _weights(weight, pred.shape[0])
  return 1.0 - _weighted_pearson(pred, target, w, eps)


def soft_rank(x: ArrayLike, weight: Optional[ArrayLike] = None,
              temperature: float = 0.1) -> Array:
  """Sigmoid-relaxed ranks: rank_i = sum_{j valid} sigmoid((x_i - x_j) / T).

  As T -> 0 this tends to the number of valid x_j below x_i plus half of
  those equal to it (x_i itself counts 1/2): the average rank minus 1/2. So
  the Pearson correlation of soft ranks tends to the Spearman correlation.

  Args:
    x: values [N].
    weight: valid mask [N] or None; invalid entries neither rank nor count.
    temperature: T, in the units of x.

  Returns:
    Soft ranks [N] (entries of invalid examples are meaningless).
  """
  x = jnp.asarray(x, jnp.float32)
  w = _weights(weight, x.shape[0])
  diff = (x[:, None] - x[None, :]) / temperature
  return jnp.sum(jax.nn.sigmoid(diff) * w[None, :], axis=1)


def _hard_rank(x: Array, w: Array) -> Array:
  """The T -> 0 limit of `soft_rank` (average rank - 1/2), no gradient."""
  x = jax.lax.stop_gradient(x)
  below = (x[None, :] < x[:, None]).astype(jnp.float32)
  ties = (x[None, :] == x[:, None]).astype(jnp.float32)
  return jnp.sum((below + 0.5 * ties) * w[None, :], axis=1)


def srcc_loss(pred: ArrayLike, target: ArrayLike,
              weight: Optional[ArrayLike] = None,
              temperature: float = 0.1, eps: float = 1e-12) -> Array:
  """Rank-aware loss: 1 - Pearson(soft_rank(pred), rank(target)).

  A differentiable surrogate of 1 - SRCC. The predictions are ranked with the
  sigmoid relaxation of `soft_rank` (every pair contributes
  sigmoid((p_i - p_j) / T), i.e. a soft pairwise comparison); the MOS ranks are
  exact (average ranks for ties). As T -> 0 the loss tends to 1 - Spearman's
  rho; T sets how far apart two predictions must be to count as ordered, so
  choose it in the units of the predictions (e.g. 1% of the MOS range).

  Args:
    pred: predictions [N] or [N, 1].
    target: MOS [N].
    weight: valid mask [N] or None.
    temperature: T of the sigmoid relaxation.
    eps: added to the product of variances.

  Returns:
    A scalar in [0, 2].
  """
  pred = _as_scores(pred).astype(jnp.float32)
  target = jnp.asarray(target, jnp.float32).reshape(pred.shape)
  w = _weights(weight, pred.shape[0])
  rp = soft_rank(pred, w, temperature)
  rt = _hard_rank(target, w)
  return 1.0 - _weighted_pearson(rp, rt, w, eps)



def loss(outputs, batch, *, mos_key="mos", weight_key="weight",
         plcc_weight=1.0, srcc_weight=0.0, temperature=0.1):
  """plcc_weight * (1 - PLCC) + srcc_weight * (1 - soft SRCC) on MOS."""
  target = _get(batch, mos_key)
  weight = batch.get(weight_key)
  out = jnp.zeros((), jnp.float32)
  if plcc_weight:
    out = out + plcc_weight * plcc_loss(outputs, target, weight)
  if srcc_weight:
    out = out + srcc_weight * srcc_loss(outputs, target, weight,
                                        temperature=temperature)
  return out


readout = _as_scores
