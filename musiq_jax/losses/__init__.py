"""Losses and score read-outs, one module per head, as pure jnp functions.

Nothing here lives inside a flax module: each function maps model outputs (and
labels) to a scalar loss or to per-example scores, so the trainer can combine
any backbone with any head type. Four head types are covered:

* ``"regression"``: one output per image, trained on MOS with MSE or L1.
* ``"distribution"``: AVA's 10 vote bins, trained with the (squared) EMD loss
  of NIMA/MUSIQ; the score is the softmax-weighted mean of 1..10.
* ``"levels"``: Q-Align's five rating levels (bad, poor, fair, good,
  excellent), trained with cross-entropy on the level that the MOS falls in;
  the score is the softmax expectation of the level values.
* ``"ranking"``: RankIQA's efficient Siamese hinge loss over all ordered
  pairs of a batch of synthetically distorted images.

Every loss takes an optional per-example ``weight`` (the valid mask that an
evaluation pipeline carries for padded batches; ``None`` = all valid) and
averages over the valid examples only, so padding never changes a loss.

Modules: `regression`, `correlation`, `distribution`, `levels`, `ranking`,
`fidelity` (LIQE / CLIP-IQA+); each gives `loss(outputs, batch, **opts)` and
`readout(outputs)`, and its functions are re-exported here.
`get_loss(name)` and `get_score_fn(name)` return closures of ``(outputs,
batch)`` for the trainer. The batch keys they read are listed in
`BATCH_KEYS`; all of them can be renamed through keyword arguments.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from musiq_jax.losses import correlation
from musiq_jax.losses import distribution
from musiq_jax.losses import fidelity
from musiq_jax.losses import levels
from musiq_jax.losses import ranking
from musiq_jax.losses import regression
from musiq_jax.losses._common import Array
from musiq_jax.losses._common import ArrayLike  # pylint: disable=unused-import
from musiq_jax.losses._common import weighted_mean  # pylint: disable=unused-import
from musiq_jax.losses.correlation import plcc_loss  # pylint: disable=unused-import
from musiq_jax.losses.correlation import soft_rank  # pylint: disable=unused-import
from musiq_jax.losses.correlation import srcc_loss  # pylint: disable=unused-import
from musiq_jax.losses.distribution import distribution_score
from musiq_jax.losses.distribution import emd_loss  # pylint: disable=unused-import
from musiq_jax.losses.fidelity import clipiqa_loss  # pylint: disable=unused-import
from musiq_jax.losses.fidelity import cross_entropy_loss  # pylint: disable=unused-import
from musiq_jax.losses.fidelity import fidelity as fidelity_fn  # pylint: disable=unused-import
from musiq_jax.losses.fidelity import liqe_loss  # pylint: disable=unused-import
from musiq_jax.losses.fidelity import multiclass_fidelity_loss  # pylint: disable=unused-import
from musiq_jax.losses.fidelity import pairwise_fidelity_loss  # pylint: disable=unused-import
from musiq_jax.losses.levels import _check_range
from musiq_jax.losses.levels import LEVEL_NAMES  # pylint: disable=unused-import
from musiq_jax.losses.levels import level_boundaries  # pylint: disable=unused-import
from musiq_jax.losses.levels import level_probs_to_mos  # pylint: disable=unused-import
from musiq_jax.losses.levels import level_to_mos  # pylint: disable=unused-import
from musiq_jax.losses.levels import level_values  # pylint: disable=unused-import
from musiq_jax.losses.levels import levels_loss  # pylint: disable=unused-import
from musiq_jax.losses.levels import levels_score
from musiq_jax.losses.levels import mos_to_level  # pylint: disable=unused-import
from musiq_jax.losses.levels import soft_level_labels  # pylint: disable=unused-import
from musiq_jax.losses.ranking import pairwise_hinge_loss  # pylint: disable=unused-import
from musiq_jax.losses.ranking import ranking_pair_mask  # pylint: disable=unused-import
from musiq_jax.losses.regression import l1_loss  # pylint: disable=unused-import
from musiq_jax.losses.regression import mse_loss  # pylint: disable=unused-import

LossFn = Callable[[Any, Mapping[str, Any]], Array]
ScoreFn = Callable[[Any], Array]

# Default batch keys read by the `get_loss` closures (all overridable).
BATCH_KEYS = {
    "mos": "mos",        # float [N]: MOS (regression, levels, correlation).
    "dist": "dist",      # float [N, K]: vote histogram (distribution).
    "level": "level",    # int [N]: distortion level, 0 = pristine (ranking).
    "group": "group",    # int [N]: pair group id (ranking).
    "weight": "weight",  # float [N]: 1 = real example, 0 = padding.
}


# The heads the trainer selects by name (`config.head`, a task's loss).
_LOSSES: Dict[str, Callable[..., Array]] = {
    "regression": regression.loss,
    "distribution": distribution.loss,
    "levels": levels.loss,
    "ranking": ranking.loss,
}
# All heads, with their modules (loss and read-out).
HEADS = {"regression": regression, "correlation": correlation,
         "distribution": distribution, "levels": levels, "ranking": ranking,
         "fidelity": fidelity}
_as_scores = regression.readout


def get_loss(name: str, **kwargs) -> LossFn:
  """Returns the loss of a head type as a pure function of (outputs, batch).

  Options per head type (keyword arguments, typically from the config):
    * "regression": kind="mse"|"l1"|"none", plcc_weight=0., srcc_weight=0.,
      temperature=0.1, mos_key="mos".
    * "distribution": r=2., dist_key="dist" (AVA's EMD loss).
    * "levels": lo, hi (required: the MOS range), soft=False,
      closed="right", mos_key="mos".
    * "ranking": margin=10., normalize="num_images"|"num_pairs",
      level_key="level", group_key="group".
  All take weight_key="weight"; a batch without that key counts every
  example as valid.

  Args:
    name: the head type.
    **kwargs: options, see above.

  Returns:
    loss_fn(outputs, batch) -> scalar.
  """
  if name not in _LOSSES:
    raise ValueError(f"Unknown head type {name!r}; known: {sorted(_LOSSES)}.")
  if name == "levels" and ("lo" not in kwargs or "hi" not in kwargs):
    raise ValueError("The 'levels' loss needs the MOS range: lo=..., hi=...")
  return functools.partial(_LOSSES[name], **kwargs)


def get_score_fn(name: str, **kwargs) -> ScoreFn:
  """Returns the read-out that turns head outputs into one score per image.

  * "regression" and "ranking": the scalar output, [N, 1] -> [N].
  * "distribution": `distribution_score` (mean of 1..K).
  * "levels": `levels_score`; needs lo and hi, takes weighting="centre".

  Args:
    name: the head type.
    **kwargs: options of the read-out.

  Returns:
    score_fn(outputs) -> [N].
  """
  if name in ("regression", "ranking"):
    if kwargs:
      raise ValueError(f"The {name!r} read-out takes no options: {kwargs}.")
    return _as_scores
  if name == "distribution":
    return distribution_score
  if name == "levels":
    if "lo" not in kwargs or "hi" not in kwargs:
      raise ValueError("The 'levels' read-out needs the MOS range: lo, hi.")
    return functools.partial(levels_score, **kwargs)
  raise ValueError(f"Unknown head type {name!r}; known: {sorted(_LOSSES)}.")


def readout_for(head: Optional[str], num_classes: int,
                mos_range: Optional[Sequence[float]] = None) -> ScoreFn:
  """The read-out a model trained with `head` scores images with.

  One place for everything that scores a trained model outside its training
  loop (`musiq_jax.scorer.load_scorer` from `best.json`; baselines): the same
  `get_score_fn` closure as the trainer's, with the same options.

  Args:
    head: the training config's `head` ("regression", "distribution",
      "levels", "ranking"), or None when unknown (a released checkpoint
      without a `best.json`): then the original `run_predict_image.py`'s
      read-out by head size -- the logit for 1 output, the softmax-weighted
      mean of 1..K otherwise (AVA's 10 bins).
    num_classes: number of head outputs (checked against the head).
    mos_range: (lo, hi) of the labels; required by "levels".

  Returns:
    score_fn(outputs [N, K]) -> [N].

  Raises:
    ValueError: an unknown head, a missing MOS range, or a head size that
      does not fit the head.
  """
  if head is None:
    head = "regression" if num_classes == 1 else "distribution"
  if head in ("regression", "ranking"):
    if num_classes != 1:
      raise ValueError(f"A {head!r} head has 1 output; this model has "
                       f"{num_classes}.")
    return get_score_fn(head)
  if head == "distribution":
    return get_score_fn("distribution")
  if head == "levels":
    if mos_range is None or len(mos_range) != 2:
      raise ValueError("The 'levels' read-out needs the MOS range (lo, hi) "
                       f"the model trained with; got {mos_range!r}.")
    lo, hi = (float(v) for v in mos_range)
    _check_range(lo, hi)
    return get_score_fn("levels", lo=lo, hi=hi)
  raise ValueError(f"Unknown head type {head!r}; known: {sorted(_LOSSES)}.")


def loss_names() -> Sequence[str]:
  """The registered head types."""
  return tuple(sorted(_LOSSES))
