"""Pre-LN transformer encoder with padding mask and CLS token (MUSIQ's).

Submodule names reproduce the auto-generated names of the original `flax.nn`
code, whose counter was shared across module types inside a parent:
`LayerNorm_0`, `MultiHeadDotProductAttention_1` (`nn.SelfAttention` was a
partial of that class), `LayerNorm_2`, `MlpBlock_3/{Dense_0,Dense_1}`.
Defaults match `flax.nn`'s: LayerNorm eps 1e-6, tanh-approximated GELU,
xavier-uniform kernels, MLP biases ~ N(0, 1e-6).
"""

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


class Encoder1DBlock(nn.Module):
  """Pre-LN encoder block: x + MHSA(LN(x)), then + MLP(LN(.))."""
  mlp_dim: int
  num_heads: int
  dtype: Any = jnp.float32
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_drop_p: float = 0.0
  sow_attention: bool = False

  @nn.compact
  def __call__(self, inputs, attention_mask, *, deterministic: bool):
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="LayerNorm_0")(inputs)
    x = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads,
        dtype=self.dtype,
        kernel_init=nn.initializers.xavier_uniform(),
        broadcast_dropout=False,
        dropout_rate=self.attention_dropout_rate,
        name="MultiHeadDotProductAttention_1")(
            x, x, mask=attention_mask, deterministic=deterministic,
            sow_weights=self.sow_attention)
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

  @nn.compact
  def __call__(self, x, spatial_positions, scale_positions, input_masks, *,
               train: bool = False):
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
          name=f"encoderblock_{lyr}")(x, attention_mask, deterministic=not train)
    return nn.LayerNorm(epsilon=1e-6, name="encoder_norm")(x)
