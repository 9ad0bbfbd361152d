"""Ranking head: RankIQA's efficient-Siamese hinge loss over all ordered
pairs of a batch of synthetically distorted images; read-out: the scalar."""

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


def ranking_pair_mask(level: ArrayLike, group: ArrayLike,
                      weight: Optional[ArrayLike] = None) -> Array:
  """The [N, N] mask of ordered pairs (i, j) where i is known to be better.

  M_ij = 1 iff group_i == group_j, level_i < level_j (i is less distorted)
  and both examples are valid (weight > 0). Pairs of equal level, of
  different groups, and the diagonal are excluded.

  Args:
    level: int [N] distortion levels, 0 = pristine.
    group: int [N] group ids (which images may be compared).
    weight: valid mask [N] or None.

  Returns:
    float32 [N, N].
  """
  level = jnp.asarray(level).reshape(-1)
  group = jnp.asarray(group).reshape(-1)
  valid = _weights(weight, level.shape[0]) > 0
  mask = ((group[:, None] == group[None, :])
          & (level[:, None] < level[None, :])
          & valid[:, None] & valid[None, :])
  return mask.astype(jnp.float32)


def pairwise_hinge_loss(scores: ArrayLike, level: ArrayLike,
                        group: ArrayLike, weight: Optional[ArrayLike] = None,
                        margin: float = 10.0,
                        normalize: str = "num_images") -> Array:
  """RankIQA's efficient Siamese hinge loss over all pairs of one batch.

  The batch is forwarded once and every ordered pair (i, j) of the same group
  with level_i < level_j (i is better) contributes the Siamese hinge
    max(0, s_j - s_i + margin)
  (zero once i outscores j by the margin). With M the mask of
  `ranking_pair_mask`:
    L = sum_ij M_ij max(0, s_j - s_i + margin) / Z,
  where Z is
    * "num_images" (default, RankIQA's `netloss_*.py`): the number of valid
      images in the batch, N. Each active pair then adds -1/N to the gradient
      of s_i and +1/N to that of s_j, exactly RankIQA's backward pass.
    * "num_pairs": the number of valid pairs sum_ij M_ij (a mean hinge,
      independent of how many levels and groups the batch holds).
  RankIQA uses margin 10 on unbounded scores. Computed with the [N, N] mask,
  no loop over pairs; O(N^2) memory, fine for batches of a few hundred.

  Args:
    scores: predicted quality [N] or [N, 1]; higher = better.
    level: int [N] distortion levels, 0 = pristine, higher = more distorted.
    group: int [N] group ids; only images of the same group are compared
      (e.g. one id per content x distortion type).
    weight: valid mask [N] or None; invalid images are in no pair.
    margin: the hinge's margin epsilon.
    normalize: "num_images" or "num_pairs".

  Returns:
    A scalar.
  """
  scores = _as_scores(scores).astype(jnp.float32)
  n = scores.shape[0]
  mask = ranking_pair_mask(level, group, weight)
  # hinge[i, j] = max(0, s_j - s_i + margin).
  hinge = jax.nn.relu(scores[None, :] - scores[:, None] + margin)
  total = jnp.sum(jnp.where(mask > 0, hinge, 0.0))
  if normalize == "num_images":
    den = jnp.sum((_weights(weight, n) > 0).astype(jnp.float32))
  elif normalize == "num_pairs":
    den = jnp.sum(mask)
  else:
    raise ValueError(
        f"normalize must be 'num_images' or 'num_pairs', got {normalize!r}.")
  return _safe_divide(total, den)



def loss(outputs, batch, *, level_key="level", group_key="group",
                  weight_key="weight", margin=10.0, normalize="num_images"):
  return pairwise_hinge_loss(outputs, _get(batch, level_key),
                             _get(batch, group_key), batch.get(weight_key),
                             margin=margin, normalize=normalize)





readout = _as_scores
