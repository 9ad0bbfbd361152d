"""Pre-LN transformer encoder with padding mask and CLS token (MUSIQ's).

Submodule names reproduce the auto-generated names of the original `flax.nn`
code, whose counter was shared across module types inside a parent:
`LayerNorm_0`, `MultiHeadDotProductAttention_1` (`nn.SelfAttention` was a
partial of that class), `LayerNorm_2`, `MlpBlock_3/{Dense_0,Dense_1}`.
Defaults match `flax.nn`'s: LayerNorm eps 1e-6, tanh-approximated GELU,
xavier-uniform kernels, MLP biases ~ N(0, 1e-6).
"""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiq_jax.models import scale_embedding
from musiq_jax.models import spatial_embedding


class MlpBlock(nn.Module):
  """Transformer feed-forward block."""
  mlp_dim: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.1
  kernel_init: Callable = nn.initializers.xavier_uniform()
  bias_init: Callable = nn.initializers.normal(stddev=1e-6)

  @nn.compact
  def __call__(self, inputs, *, deterministic: bool):
    dense = lambda f, name: nn.Dense(  # pylint: disable=g-long-lambda
        f, dtype=self.dtype, kernel_init=self.kernel_init,
        bias_init=self.bias_init, name=name)
    x = dense(self.mlp_dim, "Dense_0")(inputs)
    x = nn.gelu(x, approximate=True)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    x = dense(inputs.shape[-1], "Dense_1")(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


def _layer_drop(module: nn.Module, x, rate: float, deterministic: bool):
  """Per-example stochastic-depth keep factor (1 - drop), timm style."""
  if deterministic or not rate:
    return 1.0
  rng = module.make_rng("dropout")
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  return 1.0 - jax.random.bernoulli(rng, rate, shape).astype(x.dtype)


# Keys from which attention is computed in key blocks with an online softmax
# (`blocked_attention`) instead of one [B, H, Q, K] logits array: at 4096
# keys that array is 400 MB per layer for the 6 heads of MUSIQ, at 12,000
# keys (a 12-megapixel photo) 3.4 GB. Below it, inside the whole model, the
# blocked form measured within noise of the exact one (docs/performance.md).
TILED_MIN_KEYS = 4096
# Elements of one [B, H, Q, key block] logits tile (256 MB in float32).
_TILE_ELEMENTS = 1 << 26
# Keys per block at most: 256-512 ran fastest on CPU (single attention
# layer, 6 heads of 64, 1024-4096 keys: 2-2.5x the exact form's speed).
_MAX_BLOCK = 512


def key_block_size(batch: int, heads: int, queries: int, keys: int) -> int:
  """Keys per block: a tile of about `_TILE_ELEMENTS`, a multiple of 128."""
  block = _TILE_ELEMENTS // max(batch * heads * queries, 1)
  block = max(128, min(_MAX_BLOCK, block // 128 * 128))
  return min(block, -(-keys // 128) * 128)


def blocked_attention(query, key, value, mask, *, block: int, stats_dtype):
  """softmax(q k^T + mask) v without the full [B, H, Q, K] logits.

  query [B, Q, H, d] (already scaled), key and value [B, K, H, d], mask
  broadcastable to [B, 1, 1, K] (True = attend) or None. The keys are split
  into blocks of `block` (the last padded and masked); a scan over them
  keeps per-query running maxima `m`, sums `l = sum exp(s - m)` and
  outputs `acc = sum exp(s - m) v`, rescaling both by exp(m_old - m_new)
  when the maximum grows (the online softmax of Milakov & Gimelshein 2018,
  as in FlashAttention, Dao et al. 2022). The result is exact attention up
  to float rounding. Each block is rematerialised in the backward pass, so
  gradients do not store the logits either. Returns [B, Q, H, d] in
  `stats_dtype`.
  """
  b, q_len, h, d = query.shape
  k_len = key.shape[1]
  num_blocks = -(-k_len // block)
  pad = num_blocks * block - k_len
  if mask is None:
    mask = jnp.ones((b, 1, 1, k_len), bool)
  mask = jnp.broadcast_to(mask, (b, 1, 1, k_len))
  if pad:
    key = jnp.pad(key, ((0, 0), (0, pad), (0, 0), (0, 0)))
    value = jnp.pad(value, ((0, 0), (0, pad), (0, 0), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, 0), (0, pad)))
  # Head-major layouts once, outside the loop, so that each step is two
  # plain batched matmuls: query [B, H, Q, d], keys and values
  # [num_blocks, B, H, block, d], masks [num_blocks, B, 1, 1, block].
  query = jnp.transpose(query, (0, 2, 1, 3))
  split = lambda a: jnp.transpose(jnp.reshape(  # pylint: disable=g-long-lambda
      a, (b, num_blocks, block, h, d)), (1, 0, 3, 2, 4))
  keys, values = split(key), split(value)
  masks = jnp.moveaxis(jnp.reshape(mask, (b, 1, 1, num_blocks, block)), 3, 0)
  lowest = jnp.finfo(stats_dtype).min

  @jax.checkpoint
  def step(carry, xs):
    m, l, acc = carry  # [B, H, Q, 1], [B, H, Q, 1], [B, H, Q, d]
    k, v, msk = xs
    s = jnp.einsum("bhqd,bhkd->bhqk", query, k,
                   preferred_element_type=stats_dtype)
    s = jnp.where(msk, s, lowest)
    # A shift for range only (it cancels in acc / l): no gradient, as in the
    # exact form.
    m_new = jax.lax.stop_gradient(
        jnp.maximum(m, jnp.max(s, axis=-1, keepdims=True)))
    p = jnp.exp(s - m_new)
    correction = jnp.exp(m - m_new)
    l = l * correction + jnp.sum(p, axis=-1, keepdims=True)
    acc = acc * correction + jnp.einsum(
        "bhqk,bhkd->bhqd", p.astype(v.dtype), v,
        preferred_element_type=stats_dtype)
    return (m_new, l, acc), None

  init = (jnp.full((b, h, q_len, 1), lowest, stats_dtype),
          jnp.zeros((b, h, q_len, 1), stats_dtype),
          jnp.zeros((b, h, q_len, d), stats_dtype))
  (_, l, acc), _ = jax.lax.scan(step, init, (keys, values, masks))
  return jnp.transpose(acc / l, (0, 2, 1, 3))


class MultiHeadSelfAttention(nn.Module):
  """Multi-head self-attention with flax's `MultiHeadDotProductAttention`
  parameters (`query`, `key`, `value`: [D, H, D/H] kernels, `out`) and math.

  Why not flax's module: on CPU, XLA fuses its softmax into the second
  attention matmul and recomputes it there, which made attention ~2.4x
  slower than its matmuls (68 ms vs 29 ms per layer at 1024 tokens). Here the
  normalisation is deferred: `(exp(s - max) @ v) / sum(exp(s - max))`, the same
  result up to float rounding, with an [L, L] pass fewer. `num_queries` keeps
  only the first queries (MUSIQ's last layer needs the CLS token alone).

  From `tiled_min_keys` keys on (0 = never), `blocked_attention` computes
  the same result without the [B, H, Q, K] logits, unless attention weights
  are sown or attention dropout is active (both need the full map).
  """
  num_heads: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.0
  kernel_init: Callable = nn.initializers.xavier_uniform()
  tiled_min_keys: int = TILED_MIN_KEYS

  @nn.compact
  def __call__(self, x, mask, *, deterministic: bool,
               num_queries: Optional[int] = None, sow_weights: bool = False):
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"Width {width} is not divisible by "
                       f"{self.num_heads} heads.")
    head_dim = width // self.num_heads
    dense = functools.partial(
        nn.DenseGeneral, axis=-1, features=(self.num_heads, head_dim),
        dtype=self.dtype, kernel_init=self.kernel_init)
    x_q = x if num_queries is None else x[:, :num_queries]
    query = dense(name="query")(x_q)
    key = dense(name="key")(x)
    value = dense(name="value")(x)
    query = query / jnp.sqrt(head_dim).astype(query.dtype)
    # [B, H, Q, K] logits; softmax statistics in float32 even for bfloat16
    # (and in float64 for a float64 model: differentiable-metric checks).
    stats = jnp.promote_types(self.dtype, jnp.float32)
    out_dense = nn.DenseGeneral(
        features=width, axis=(-2, -1), dtype=self.dtype,
        kernel_init=self.kernel_init, name="out")
    dropout = not deterministic and self.dropout_rate > 0.0
    k_len = key.shape[1]
    if (self.tiled_min_keys and k_len >= self.tiled_min_keys and
        not sow_weights and not dropout):
      block = key_block_size(x.shape[0], self.num_heads, query.shape[1], k_len)
      out = blocked_attention(query, key, value, mask, block=block,
                              stats_dtype=stats)
      return out_dense(out.astype(self.dtype))
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key,
                        preferred_element_type=stats)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    # The row maximum only keeps exp() in range: it cancels in the result, so
    # its gradient is zero and need not be traced. Without the stop, autodiff
    # builds the max's [B, H, Q, K] one-hot and a product with it: one
    # attention layer's forward + backward at 706 tokens took 103 ms instead
    # of 59 ms on a 2-core CPU.
    row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    unnormalized = jnp.exp(logits - row_max)
    denominator = jnp.sum(unnormalized, axis=-1)[..., None]  # [B, H, Q, 1]
    if sow_weights:
      self.sow("intermediates", "attention_weights",
               (unnormalized / denominator).astype(self.dtype))
    if dropout:
      # Dropping unnormalised weights then dividing by the full sum equals
      # dropout applied to the softmax.
      keep_prob = 1.0 - self.dropout_rate
      keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob,
                                  unnormalized.shape)
      unnormalized = jnp.where(keep, unnormalized / keep_prob, 0.0)
    value = jnp.transpose(value, (0, 2, 1, 3))  # [B, H, K, D/H]
    out = jnp.einsum("bhqk,bhkd->bhqd", unnormalized.astype(self.dtype), value,
                     preferred_element_type=stats)
    out = (out / denominator).astype(self.dtype)
    return out_dense(jnp.transpose(out, (0, 2, 1, 3)))


class Encoder1DBlock(nn.Module):
  """Pre-LN encoder block: x + MHSA(LN(x)), then + MLP(LN(.))."""
  mlp_dim: int
  num_heads: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_drop_p: float = 0.0
  sow_attention: bool = False
  tiled_min_keys: int = TILED_MIN_KEYS

  @nn.compact
  def __call__(self, inputs, attention_mask, *, deterministic: bool,
               num_queries: Optional[int] = None):
    """`num_queries`: output only the first tokens (all keys still attend)."""
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(inputs)
    x = MultiHeadSelfAttention(
        num_heads=self.num_heads,
        dtype=self.dtype,
        dropout_rate=self.attention_dropout_rate,
        tiled_min_keys=self.tiled_min_keys,
        name="MultiHeadDotProductAttention_1")(
            x, attention_mask, deterministic=deterministic,
            num_queries=num_queries, sow_weights=self.sow_attention)
    if num_queries is not None:
      inputs = inputs[:, :num_queries]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    x = x * _layer_drop(self, x, self.layer_drop_p, deterministic) + inputs
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_2")(x)
    y = MlpBlock(self.mlp_dim, dtype=self.dtype, dropout_rate=self.dropout_rate,
                 name="MlpBlock_3")(y, deterministic=deterministic)
    return y * _layer_drop(self, x, self.layer_drop_p, deterministic) + x


class Encoder(nn.Module):
  """HSE + scale embedding, CLS token, `num_layers` blocks, final LayerNorm."""
  num_layers: int
  mlp_dim: int
  num_heads: int
  spatial_pos_grid_size: int
  num_scales: int
  use_scale_emb: bool = True
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  stochastic_layer_drop_rate: float = 0.0
  dtype: Any = jnp.float32
  sow_attention: bool = False
  cls_only: bool = False
  tiled_min_keys: int = TILED_MIN_KEYS

  @nn.compact
  def __call__(self, x, spatial_positions, scale_positions, input_masks, *,
               train: bool = False):
    """[B, L, D] tokens -> [B, L + 1, D] (CLS first), or [B, 1, D] if cls_only.

    `cls_only` skips what cannot reach the CLS output: the last block's
    queries and MLP for the other tokens (~1/14 of the FLOPs, exact math).
    """
    x = spatial_embedding.AddHashSpatialPositionEmbs(
        self.spatial_pos_grid_size, name="posembed_input")(x, spatial_positions)
    if self.use_scale_emb:
      x = scale_embedding.AddScaleEmbs(
          self.num_scales, name="scaleembed_input")(x, scale_positions)
    n, _, c = x.shape
    cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
    x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]).astype(x.dtype), x], axis=1)
    masks = jnp.concatenate(
        [jnp.ones((n, 1), bool), input_masks.astype(bool)], axis=1)
    # Keys that are padding get no attention; padded queries are never read by
    # real tokens, so their values cannot reach the CLS output.
    attention_mask = masks[:, None, None, :]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    for lyr in range(self.num_layers):
      x = Encoder1DBlock(
          mlp_dim=self.mlp_dim,
          num_heads=self.num_heads,
          dtype=self.dtype,
          dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          layer_drop_p=(lyr / max(self.num_layers - 1, 1)) *
          self.stochastic_layer_drop_rate,
          sow_attention=self.sow_attention,
          tiled_min_keys=self.tiled_min_keys,
          name=f"encoderblock_{lyr}")(
              x, attention_mask, deterministic=not train,
              num_queries=(1 if self.cls_only and lyr == self.num_layers - 1
                           else None))
    return nn.LayerNorm(epsilon=1e-6, name="encoder_norm")(x)
