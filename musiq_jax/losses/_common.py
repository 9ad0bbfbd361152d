"""Helpers shared by the heads' losses (weights, safe division, keys)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = Union[jax.Array, np.ndarray, float, int]


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


def _get(batch: Mapping[str, Any], key: str) -> Any:
  if key not in batch:
    raise KeyError(
        f"The batch has no {key!r} entry (keys: {sorted(batch)}); set the "
        "loss's key arguments to match the input pipeline.")
  return batch[key]
