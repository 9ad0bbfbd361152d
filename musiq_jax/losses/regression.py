"""Regression head: one output per image, MSE or L1 on MOS (optionally
plus the correlation terms). Read-out: the scalar output."""

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
from musiq_jax.losses.correlation import plcc_loss
from musiq_jax.losses.correlation import srcc_loss


def mse_loss(pred: ArrayLike, target: ArrayLike,
             weight: Optional[ArrayLike] = None) -> Array:
  """Mean squared error over the valid examples.

  L = sum_n w_n (p_n - y_n)^2 / sum_n w_n. RankIQA fine-tunes with this loss.

  Args:
    pred: predictions [N] or [N, 1].
    target: MOS [N].
    weight: valid mask [N] or None.

  Returns:
    A scalar.
  """
  pred = _as_scores(pred)
  target = jnp.asarray(target, pred.dtype).reshape(pred.shape)
  return weighted_mean(jnp.square(pred - target), weight)


def l1_loss(pred: ArrayLike, target: ArrayLike,
            weight: Optional[ArrayLike] = None) -> Array:
  """Mean absolute error over the valid examples (GlintIQA's loss).

  L = sum_n w_n |p_n - y_n| / sum_n w_n.

  Args:
    pred: predictions [N] or [N, 1].
    target: MOS [N].
    weight: valid mask [N] or None.

  Returns:
    A scalar.
  """
  pred = _as_scores(pred)
  target = jnp.asarray(target, pred.dtype).reshape(pred.shape)
  return weighted_mean(jnp.abs(pred - target), weight)



def loss(outputs, batch, *, kind="mse", mos_key="mos",
                     weight_key="weight", plcc_weight=0.0, srcc_weight=0.0,
                     temperature=0.1):
  """MSE/L1 on MOS, optionally plus weighted PLCC and soft-SRCC losses."""
  target = _get(batch, mos_key)
  weight = batch.get(weight_key)
  fns = {"mse": mse_loss, "l1": l1_loss, "none": None}
  if kind not in fns:
    raise ValueError(f"kind must be one of {sorted(fns)}, got {kind!r}.")
  loss = jnp.zeros((), jnp.float32)
  if fns[kind] is not None:
    loss = fns[kind](outputs, target, weight)
  if plcc_weight:
    loss = loss + plcc_weight * plcc_loss(outputs, target, weight)
  if srcc_weight:
    loss = loss + srcc_weight * srcc_loss(outputs, target, weight,
                                          temperature=temperature)
  return loss



readout = _as_scores
