"""Distribution head: AVA's vote bins, the (squared) EMD loss of NIMA and
MUSIQ; read-out: the softmax-weighted mean of 1..K."""

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


def emd_loss(logits: ArrayLike, target_dist: ArrayLike,
             weight: Optional[ArrayLike] = None, r: float = 2.0) -> Array:
  """Earth mover's distance between predicted and voted score histograms.

  As in NIMA and MUSIQ (AVA), with p = softmax(logits) and q the target
  histogram normalised to sum to 1 (so raw vote counts may be passed):
    EMD_n = ( (1/K) sum_{k=1..K} |CDF_p(k) - CDF_q(k)|^r )^(1/r),
    L = sum_n w_n EMD_n / sum_n w_n.
  r = 2 is the "squared EMD" of NIMA (a root mean square of CDF differences).
  The gradient at EMD_n = 0 is set to 0 rather than inf.

  Args:
    logits: [N, K] logits over the K ordered bins.
    target_dist: [N, K] non-negative histogram (probabilities or counts).
    weight: valid mask [N] or None.
    r: the norm's exponent.

  Returns:
    A scalar.
  """
  logits = jnp.asarray(logits, jnp.float32)
  q = jnp.asarray(target_dist, jnp.float32)
  if logits.shape != q.shape:
    raise ValueError(
        f"logits {logits.shape} and target_dist {q.shape} must match.")
  p = jax.nn.softmax(logits, axis=-1)
  q = q / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), 1e-12)
  cdf_diff = jnp.cumsum(p, axis=-1) - jnp.cumsum(q, axis=-1)
  per_example = _safe_root(jnp.mean(jnp.abs(cdf_diff) ** r, axis=-1), r)
  return weighted_mean(per_example, weight)


def distribution_score(logits: ArrayLike) -> Array:
  """Mean score of the predicted histogram: sum_k k * softmax(logits)_k.

  The bins are scored 1..K (1..10 for AVA), as in MUSIQ's AVA read-out.

  Args:
    logits: [N, K] logits.

  Returns:
    Scores [N] in [1, K].
  """
  logits = jnp.asarray(logits, jnp.float32)
  bins = jnp.arange(1, logits.shape[-1] + 1, dtype=jnp.float32)
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * bins, axis=-1)



def loss(outputs, batch, *, dist_key="dist",
                       weight_key="weight", r=2.0):
  return emd_loss(outputs, _get(batch, dist_key), batch.get(weight_key), r=r)



readout = distribution_score
