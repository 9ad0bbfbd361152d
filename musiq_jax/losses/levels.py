"""Levels head: Q-Align's five rating levels over the MOS range,
cross-entropy on the level the MOS falls in; read-out: the softmax
expectation of the level values."""

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


# Q-Align's level words, index 0 = worst.
LEVEL_NAMES = ("bad", "poor", "fair", "good", "excellent")


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



def loss(outputs, batch, *, lo, hi, mos_key="mos",
                 weight_key="weight", soft=False, closed="right"):
  return levels_loss(outputs, _get(batch, mos_key), lo, hi,
                     batch.get(weight_key), soft=soft, closed=closed)



readout = levels_score
