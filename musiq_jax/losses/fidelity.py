"""Fidelity losses (LIQE, CLIP-IQA+): the CLIP heads' losses.

LIQE's quality loss is the pairwise fidelity loss of its `MNL_Loss.loss_m4`: for
every pair (i, j), i < j, within a group (LIQE groups by source dataset),

  p_ij = Phi(s_i - s_j) = 0.5 * (1 + erf((s_i - s_j) / sqrt(2))),
  g_ij = 1 if mos_i > mos_j, 0.5 if equal, 0 otherwise,
  loss = mean(1 - sqrt(p g + eps) - sqrt((1 - p)(1 - g) + eps)).

Note the released code divides the difference by sqrt(2) *inside* erf, i.e. uses
the standard normal CDF of the raw difference; the paper's Phi((s_i-s_j)/sqrt(2))
would be erf((s_i - s_j) / 2). We follow the code (its weights were trained so).
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp

from musiq_jax.losses._common import _as_scores
from musiq_jax.losses._common import _get

Array = jax.Array

_EPS = 1e-8  # LIQE's `esp`, keeps sqrt differentiable at 0


def fidelity(p: Array, g: Array) -> Array:
  """Elementwise binary fidelity loss 1 - sqrt(p g) - sqrt((1-p)(1-g))."""
  return 1.0 - jnp.sqrt(p * g + _EPS) - jnp.sqrt((1.0 - p) * (1.0 - g) + _EPS)


def pairwise_fidelity_loss(scores: Array, mos: Array,
                           groups: Optional[Array] = None) -> Array:
  """LIQE's ranking loss over all ordered pairs i < j (in the same group).

  Args:
    scores: predicted scores [B].
    mos: target quality [B] (higher = better; negate DMOS first).
    groups: optional int [B]; only pairs within the same group count (LIQE
      compares images of one dataset only, because MOS scales differ).

  Returns:
    The mean fidelity over the valid pairs (0 when there are none).
  """
  n = scores.shape[0]
  diff = scores[:, None] - scores[None, :]
  p = 0.5 * (1.0 + jax.scipy.special.erf(diff / jnp.sqrt(2.0)))
  g = 0.5 * (jnp.sign(mos[:, None] - mos[None, :]) + 1.0)
  valid = jnp.triu(jnp.ones((n, n), bool), k=1)
  if groups is not None:
    valid &= groups[:, None] == groups[None, :]
  valid = valid.astype(scores.dtype)
  return jnp.sum(fidelity(p, g) * valid) / jnp.maximum(valid.sum(), 1.0)


def multiclass_fidelity_loss(probs: Array, labels: Array, num_classes: int,
                             mask: Optional[Array] = None) -> Array:
  """Fidelity between a predicted distribution and one-hot labels, batch mean.

  Per example: 1 - sum_c sqrt(p_c y_c + eps), the multi-class form of `fidelity`
  (zero when the whole mass sits on the labelled class).

  Args:
    probs: [B, C] probabilities (a LIQE marginal).
    labels: int [B] class ids.
    num_classes: C.
    mask: optional [B] weights (0 where an example has no label of this kind).
  """
  onehot = jax.nn.one_hot(labels, num_classes, dtype=probs.dtype)
  per_example = 1.0 - jnp.sum(jnp.sqrt(probs * onehot + _EPS), axis=-1)
  if mask is None:
    return per_example.mean()
  mask = mask.astype(probs.dtype)
  return jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)


def cross_entropy_loss(probs: Array, labels: Array, num_classes: int,
                       mask: Optional[Array] = None) -> Array:
  """Cross-entropy of a (marginal) distribution against class ids, batch mean."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=probs.dtype)
  per_example = -jnp.sum(onehot * jnp.log(probs + 1e-12), axis=-1)
  if mask is None:
    return per_example.mean()
  mask = mask.astype(probs.dtype)
  return jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)


def liqe_loss(logits: Array, batch: Dict[str, Array], *, quality_weight: float = 1.0,
              scene_weight: float = 1.0, distortion_weight: float = 1.0,
              aux_loss: str = "fidelity") -> tuple[Array, Dict[str, Array]]:
  """LIQE's multitask loss from joint logits and a batch of labels.

  Args:
    logits: [B, 495] joint logits from `heads.LIQE`.
    batch: `mos` [B] required; optional `group` [B] (dataset id), `scene` and
      `distortion` int [B] with `scene_mask` / `distortion_mask` [B] (0 = no label).
    quality_weight, scene_weight, distortion_weight: fixed task weights (LIQE
      adapts them with DWA; a trainer can pass per-step weights here).
    aux_loss: "fidelity" (LIQE) or "cross_entropy" for the scene/distortion tasks.

  Returns:
    (total loss, dict of the per-task losses and the mean score).
  """
  from musiq_jax.clip import heads  # pylint: disable=g-import-not-at-top
  out = heads.liqe_marginals(logits)
  terms = {"quality": pairwise_fidelity_loss(out["score"], batch["mos"], batch.get("group"))}
  aux = multiclass_fidelity_loss if aux_loss == "fidelity" else cross_entropy_loss
  if aux_loss not in ("fidelity", "cross_entropy"):
    raise ValueError(f"aux_loss must be 'fidelity' or 'cross_entropy', got {aux_loss!r}.")
  if "scene" in batch:
    terms["scene"] = aux(out["scene"], batch["scene"], heads.NUM_SCENES,
                         batch.get("scene_mask"))
  if "distortion" in batch:
    terms["distortion"] = aux(out["distortion"], batch["distortion"],
                              heads.NUM_DISTORTIONS, batch.get("distortion_mask"))
  weights = {"quality": quality_weight, "scene": scene_weight,
             "distortion": distortion_weight}
  total = sum(weights[k] * v for k, v in terms.items())
  return total, {**terms, "score": out["score"].mean()}


def clipiqa_loss(logits: Array, batch: Dict[str, Array]) -> tuple[Array, Dict[str, Array]]:
  """CLIP-IQA+ fine-tuning: MSE between the "good" probability and MOS in [0, 1].

  `batch["mos"]` must already be scaled to [0, 1] (e.g. (mos - min) / (max - min)).
  """
  from musiq_jax.clip import heads  # pylint: disable=g-import-not-at-top
  score = heads.clipiqa_score(logits)
  loss = jnp.mean((score - batch["mos"]) ** 2)
  return loss, {"mse": loss, "score": score.mean()}


def regression_loss(preds: Array, batch: Dict[str, Array]) -> tuple[Array, Dict[str, Array]]:
  """MSE of a linear probe's MOS prediction."""
  loss = jnp.mean((preds - batch["mos"]) ** 2)
  return loss, {"mse": loss}


def loss(outputs, batch, *, mos_key="mos", group_key="group"):
  """LIQE's pairwise fidelity loss of scalar scores against MOS."""
  return pairwise_fidelity_loss(_as_scores(outputs), _get(batch, mos_key),
                                batch.get(group_key))


readout = _as_scores
