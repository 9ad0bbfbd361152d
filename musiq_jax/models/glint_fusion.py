"""GlintIQA's fusion modules on [B, N, C] token maps laid on an h x w grid.

* `ChannelAttention` (the paper's CWSA): self-attention whose tokens are the
  C channels and whose features are the N spatial positions. Query and key
  are L2-normalised (cosine attention) and scaled by N^-1/2, the output is
  LayerNorm-ed over N and added to the input. It mixes channels, never
  positions, so it commutes with any permutation of the channels.
* `SpatialEnhancement` (the paper's SIEM): a 3x3 convolution on the token
  grid, added to its input; it mixes each position with its 8 neighbours
  only, which is what the channel attention cannot do.
* `FusionStage`: concat(global, running) -> ChannelAttention -> 1x1
  projection to C -> SpatialEnhancement. `LocalFusion` merges the CNN's
  per-stage embeddings the same way, without the spatial step.
* `ProgressiveFusion`: one `FusionStage` per global (ViT) feature map, each
  fusing the next, deeper ViT map with the running fused map.
"""

from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp


def _check_grid(x: jnp.ndarray, grid: Tuple[int, int]):
  if x.ndim != 3 or x.shape[1] != grid[0] * grid[1]:
    raise ValueError(f"Expected [B, {grid[0]}*{grid[1]}, C] tokens for grid "
                     f"{grid}, got shape {x.shape}.")


class ChannelAttention(nn.Module):
  """Channel-wise self-attention (CWSA) over a [B, N, C] token map.

  The q/k/v projections are Dense layers over the N positions (so the
  module is tied to one token count, as in the paper). Attention weights
  are sown as `intermediates/attention_weights` ([B, C, C]).

  Attributes:
    dropout_rate: dropout on the attention output (the paper's 0.5).
    dtype: computation dtype.
  """
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    n = x.shape[1]
    xt = jnp.swapaxes(x, 1, 2)  # [B, C, N]: channels become the tokens.
    dense = lambda name: nn.Dense(n, dtype=self.dtype, name=name)  # pylint: disable=g-long-lambda
    q, k, v = dense("query")(xt), dense("key")(xt), dense("value")(xt)
    # Cosine similarity keeps the logits in [-1/sqrt(N), 1/sqrt(N)] whatever
    # the feature scale, so the channel attention never saturates.
    q = q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    k = k / jnp.maximum(jnp.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    logits = jnp.einsum("bcn,bdn->bcd", q, k) * n**-0.5
    weights = nn.softmax(logits, axis=-1)
    self.sow("intermediates", "attention_weights", weights)
    y = jnp.einsum("bcd,bdn->bcn", weights, v)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
    y = nn.LayerNorm(dtype=self.dtype, name="norm")(y)
    return jnp.swapaxes(y + xt, 1, 2)


class SpatialEnhancement(nn.Module):
  """SIEM: x + Conv3x3(x) on the [B, h, w, C] grid of a [B, N, C] map.

  Attributes:
    grid: (h, w) with h * w = N.
    kernel_init: init of the bias-free 3x3 kernel.
    dtype: computation dtype.
  """
  grid: Tuple[int, int]
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    _check_grid(x, self.grid)
    b, n, c = x.shape
    g = x.reshape(b, *self.grid, c)
    g = nn.Conv(c, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                kernel_init=self.kernel_init, name="conv")(g)
    return x + g.reshape(b, n, c)


class LocalFusion(nn.Module):
  """Merges the CNN's per-stage [B, N, C] embeddings into one [B, N, C] map."""
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], *, train: bool = False):
    c = features[0].shape[-1]
    x = jnp.concatenate(features, axis=-1)
    x = ChannelAttention(self.dropout_rate, dtype=self.dtype,
                         name="attention")(x, train=train)
    return nn.Dense(c, dtype=self.dtype, name="proj")(x)


class FusionStage(nn.Module):
  """Fuses one global map into the running map: CWSA -> proj -> SIEM."""
  grid: Tuple[int, int]
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, global_tokens, running, *, train: bool = False):
    if global_tokens.shape != running.shape:
      raise ValueError(f"Global map {global_tokens.shape} and fused map "
                       f"{running.shape} must have the same shape.")
    x = jnp.concatenate([global_tokens, running], axis=-1)
    x = ChannelAttention(self.dropout_rate, dtype=self.dtype,
                         name="attention")(x, train=train)
    x = nn.Dense(running.shape[-1], dtype=self.dtype, name="proj")(x)
    return SpatialEnhancement(self.grid, dtype=self.dtype, name="spatial")(x)


class ProgressiveFusion(nn.Module):
  """One `FusionStage` per global map, shallow to deep (`stage_{i}`)."""
  grid: Tuple[int, int]
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, global_maps: Sequence[jnp.ndarray], local_map, *,
               train: bool = False):
    x = local_map
    for i, g in enumerate(global_maps):
      x = FusionStage(self.grid, self.dropout_rate, dtype=self.dtype,
                      name=f"stage_{i}")(g, x, train=train)
    return x
