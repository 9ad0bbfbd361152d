"""Losses and score read-outs for every head type, as pure jnp functions.

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

`get_loss(name)` and `get_score_fn(name)` return closures of ``(outputs,
batch)`` for the trainer. The batch keys they read are listed in
`BATCH_KEYS`; all of them can be renamed through keyword arguments.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = Union[jax.Array, np.ndarray, float, int]
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

# Q-Align's level words, index 0 = worst.
LEVEL_NAMES = ("bad", "poor", "fair", "good", "excellent")


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def _as_scores(x: ArrayLike) -> Array:
  """Returns scalar-head outputs as a [N] vector (accepts [N] or [N, 1])."""
  x = jnp.asarray(x)
  if x.ndim == 2 and x.shape[-1] == 1:
    x = x[:, 0]
  if x.ndim != 1:
    raise ValueError(
        f"Expected one score per example, shape [N] or [N, 1]; got {x.shape}.")
  return x


def _weights(weight: Optional[ArrayLike], n: int) -> Array:
  """Returns the per-example weights as float32 [n] (None = all ones)."""
  if weight is None:
    return jnp.ones((n,), jnp.float32)
  weight = jnp.asarray(weight, jnp.float32).reshape(-1)
  if weight.shape[0] != n:
    raise ValueError(
        f"weight has {weight.shape[0]} entries for a batch of {n} examples.")
  return weight


def _safe_divide(num: Array, den: Array) -> Array:
  """num / den, and 0 where den == 0 (an all-padding batch), NaN-free grads."""
  # The double `where` keeps the unused branch's gradient finite as well.
  safe_den = jnp.where(den > 0, den, 1.0)
  return jnp.where(den > 0, num / safe_den, 0.0)


def weighted_mean(values: ArrayLike, weight: Optional[ArrayLike]) -> Array:
  """Mean of per-example `values` [N] over the examples with weight > 0.

  Computes sum_n w_n v_n / sum_n w_n (0 when every weight is 0).

  Args:
    values: per-example values [N].
    weight: per-example weights [N] or None (all ones).

  Returns:
    A scalar.
  """
  values = jnp.asarray(values)
  w = _weights(weight, values.shape[0])
  # `where` rather than a product so that a NaN/inf in a padded example (e.g.
  # a log of a zero-filled label) cannot leak into the mean.
  total = jnp.sum(jnp.where(w > 0, w * values, 0.0))
  return _safe_divide(total, jnp.sum(w))


def _safe_root(x: Array, r: float) -> Array:
  """x ** (1 / r) with a finite gradient at x == 0 (where it is set to 0)."""
  pos = x > 0
  return jnp.where(pos, jnp.where(pos, x, 1.0) ** (1.0 / r), 0.0)


# ---------------------------------------------------------------------------
# Regression.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Correlation losses.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# AVA score distributions.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Q-Align rating levels.
# ---------------------------------------------------------------------------


def _check_range(lo: Any, hi: Any):
  if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
    if not hi > lo:
      raise ValueError(f"The MOS range needs lo < hi; got lo={lo}, hi={hi}.")


def level_boundaries(lo: float, hi: float, num_levels: int = 5) -> Array:
  """The inner boundaries lo + k (hi - lo) / L, k = 1..L-1, as float32.

  They are computed in float64 and then rounded once, so a MOS given as the
  float32 of the same Python expression lands exactly on a boundary.

  Args:
    lo: lowest MOS of the dataset's scale.
    hi: highest MOS of the dataset's scale.
    num_levels: L.

  Returns:
    float32 [L - 1].
  """
  _check_range(lo, hi)
  k = np.arange(1, num_levels)
  if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
    return jnp.asarray(lo + k * (hi - lo) / num_levels, jnp.float32)
  lo = jnp.asarray(lo, jnp.float32)
  hi = jnp.asarray(hi, jnp.float32)
  return lo + jnp.asarray(k, jnp.float32) * (hi - lo) / num_levels


def mos_to_level(mos: ArrayLike, lo: float, hi: float, num_levels: int = 5,
                 closed: str = "right") -> Array:
  """Maps MOS to Q-Align's rating level 0..L-1 (0 = bad, L-1 = excellent).

  The range [lo, hi] is cut into L equal intervals. With the default
  ``closed="right"`` (Q-Align's definition), level i (0-based) is
    lo + i (hi - lo) / L < mos <= lo + (i + 1) (hi - lo) / L,
  so a MOS exactly on a boundary lo + k (hi - lo) / L gets the lower level
  k - 1, hi gets the top level and lo the bottom one. ``closed="left"`` uses
  lo + i (hi - lo) / L <= mos < lo + (i + 1) (hi - lo) / L instead (a boundary
  gets the upper level k; hi still gets the top level). Values outside
  [lo, hi] are clipped to the end levels. `lo` and `hi` are the dataset's
  scale (or the training set's min and max MOS, as in Q-Align).

  Args:
    mos: MOS, any shape.
    lo: lower end of the MOS range.
    hi: upper end of the MOS range.
    num_levels: L.
    closed: "right" (Q-Align) or "left", the closed side of each interval.

  Returns:
    int32 levels with the shape of `mos`.
  """
  if closed not in ("right", "left"):
    raise ValueError(f"closed must be 'right' or 'left', got {closed!r}.")
  mos = jnp.asarray(mos, jnp.float32)
  bounds = level_boundaries(lo, hi, num_levels)
  if closed == "right":
    above = mos[..., None] > bounds
  else:
    above = mos[..., None] >= bounds
  # Counting passed boundaries clips out-of-range values for free.
  return jnp.sum(above, axis=-1).astype(jnp.int32)


def level_values(lo: float = 0.0, hi: float = 1.0, num_levels: int = 5,
                 weighting: str = "centre") -> Array:
  """The MOS value that each level stands for, float32 [L].

  Args:
    lo: lower end of the MOS range.
    hi: upper end of the MOS range.
    num_levels: L.
    weighting: how a level is read back as a score:
      * "centre" (default): the centre of the level's interval,
        lo + (i + 0.5) (hi - lo) / L. The expectation then lives on the
        dataset's MOS scale, and a one-hot prediction of the level a MOS falls
        in is off by at most (hi - lo) / (2 L), the quantisation error.
      * "ends": lo + i (hi - lo) / (L - 1), i.e. Q-Align's scorer weights
        [0, 0.25, 0.5, 0.75, 1] stretched onto [lo, hi].
      * "qalign": 1..L regardless of lo and hi, Q-Align's `wa5` read-out (a
        1-5 score; correlations are unchanged, only the scale differs).

  Returns:
    float32 [L].
  """
  _check_range(lo, hi)
  i = jnp.arange(num_levels, dtype=jnp.float32)
  lo = jnp.asarray(lo, jnp.float32)
  hi = jnp.asarray(hi, jnp.float32)
  if weighting == "centre":
    return lo + (i + 0.5) * (hi - lo) / num_levels
  if weighting == "ends":
    return lo + i * (hi - lo) / (num_levels - 1)
  if weighting == "qalign":
    return i + 1.0
  raise ValueError(
      f"Unknown weighting {weighting!r}; use 'centre', 'ends' or 'qalign'.")


def level_to_mos(level: ArrayLike, lo: float, hi: float, num_levels: int = 5,
                 weighting: str = "centre") -> Array:
  """Inverse of `mos_to_level` for hard levels: the level's value.

  With the default weighting, level i maps to the centre of its interval,
  lo + (i + 0.5) (hi - lo) / L, so mos_to_level(level_to_mos(i)) == i.

  Args:
    level: integer levels 0..L-1, any shape.
    lo: lower end of the MOS range.
    hi: upper end of the MOS range.
    num_levels: L.
    weighting: see `level_values`.

  Returns:
    float32 MOS with the shape of `level`.
  """
  values = level_values(lo, hi, num_levels, weighting)
  return values[jnp.clip(jnp.asarray(level, jnp.int32), 0, num_levels - 1)]


def level_probs_to_mos(probs: ArrayLike, lo: float, hi: float,
                       weighting: str = "centre") -> Array:
  """Expectation-based inverse: sum_i probs_i * value_i over the L levels.

  Args:
    probs: [..., L] level probabilities (or soft labels).
    lo: lower end of the MOS range.
    hi: upper end of the MOS range.
    weighting: see `level_values`.

  Returns:
    float32 [...].
  """
  probs = jnp.asarray(probs, jnp.float32)
  values = level_values(lo, hi, probs.shape[-1], weighting)
  return jnp.sum(probs * values, axis=-1)


def levels_score(logits: ArrayLike, lo: float, hi: float,
                 weighting: str = "centre") -> Array:
  """Q-Align's read-out: S = sum_i softmax(logits)_i * value_i.

  By default value_i = lo + (i + 0.5) (hi - lo) / L, the centre of level i on
  the dataset's MOS scale (see `level_values` for Q-Align's own weightings).
  S increases with the logit of any level above the current score and is
  bounded by the first and last level values.

  Args:
    logits: [N, L] level logits (index 0 = bad).
    lo: lower end of the MOS range.
    hi: upper end of the MOS range.
    weighting: "centre", "ends" or "qalign", see `level_values`.

  Returns:
    Scores [N].
  """
  probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  return level_probs_to_mos(probs, lo, hi, weighting)


def soft_level_labels(mos: ArrayLike, lo: float, hi: float,
                      num_levels: int = 5) -> Array:
  """Soft level labels by linear interpolation between level centres.

  With centres c_i = lo + (i + 0.5) (hi - lo) / L, a MOS between c_i and
  c_{i+1} gets weight (c_{i+1} - mos) / (c_{i+1} - c_i) on level i and the
  rest on level i + 1; below c_0 (above c_{L-1}) it is all on the end level.
  So the label's expected centre equals the MOS wherever the centres can
  reach it: no quantisation error, unlike the hard level.

  Args:
    mos: MOS [...].
    lo: lower end of the MOS range.
    hi: upper end of the MOS range.
    num_levels: L.

  Returns:
    float32 [..., L], rows summing to 1.
  """
  _check_range(lo, hi)
  mos = jnp.asarray(mos, jnp.float32)
  lo = jnp.asarray(lo, jnp.float32)
  hi = jnp.asarray(hi, jnp.float32)
  # Position in units of levels, measured from the centre of level 0.
  t = jnp.clip((mos - lo) * num_levels / (hi - lo) - 0.5, 0.0, num_levels - 1)
  lower = jnp.clip(jnp.floor(t), 0, num_levels - 2).astype(jnp.int32)
  frac = t - lower
  return (jax.nn.one_hot(lower, num_levels) * (1.0 - frac)[..., None]
          + jax.nn.one_hot(lower + 1, num_levels) * frac[..., None])


def levels_loss(logits: ArrayLike, mos: ArrayLike, lo: float, hi: float,
                weight: Optional[ArrayLike] = None, soft: bool = False,
                closed: str = "right") -> Array:
  """Cross-entropy between predicted levels and the level of the MOS.

  L = sum_n w_n CE(softmax(logits_n), y_n) / sum_n w_n, where y_n is the
  one-hot `mos_to_level(mos_n)` (Q-Align) or, with ``soft=True``, the
  interpolated `soft_level_labels(mos_n)`.

  Args:
    logits: [N, L] level logits (index 0 = bad).
    mos: MOS [N].
    lo: lower end of the MOS range.
    hi: upper end of the MOS range.
    weight: valid mask [N] or None.
    soft: use soft labels instead of the hard level.
    closed: boundary convention of the hard levels, see `mos_to_level`.

  Returns:
    A scalar.
  """
  logits = jnp.asarray(logits, jnp.float32)
  num_levels = logits.shape[-1]
  mos = jnp.asarray(mos, jnp.float32).reshape(logits.shape[:-1])
  if soft:
    labels = soft_level_labels(mos, lo, hi, num_levels)
  else:
    labels = jax.nn.one_hot(
        mos_to_level(mos, lo, hi, num_levels, closed), num_levels)
  ce = -jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  return weighted_mean(ce, weight)


# ---------------------------------------------------------------------------
# RankIQA ranking.
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Registry for the trainer.
# ---------------------------------------------------------------------------


def _get(batch: Mapping[str, Any], key: str) -> Any:
  if key not in batch:
    raise KeyError(
        f"The batch has no {key!r} entry (keys: {sorted(batch)}); set the "
        "loss's key arguments to match the input pipeline.")
  return batch[key]


def _regression_loss(outputs, batch, *, kind="mse", mos_key="mos",
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


def _distribution_loss(outputs, batch, *, dist_key="dist",
                       weight_key="weight", r=2.0):
  return emd_loss(outputs, _get(batch, dist_key), batch.get(weight_key), r=r)


def _levels_loss(outputs, batch, *, lo, hi, mos_key="mos",
                 weight_key="weight", soft=False, closed="right"):
  return levels_loss(outputs, _get(batch, mos_key), lo, hi,
                     batch.get(weight_key), soft=soft, closed=closed)


def _ranking_loss(outputs, batch, *, level_key="level", group_key="group",
                  weight_key="weight", margin=10.0, normalize="num_images"):
  return pairwise_hinge_loss(outputs, _get(batch, level_key),
                             _get(batch, group_key), batch.get(weight_key),
                             margin=margin, normalize=normalize)


_LOSSES: Dict[str, Callable[..., Array]] = {
    "regression": _regression_loss,
    "distribution": _distribution_loss,
    "levels": _levels_loss,
    "ranking": _ranking_loss,
}


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
