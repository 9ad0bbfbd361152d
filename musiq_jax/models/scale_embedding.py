"""Learnable scale embedding of MUSIQ: one vector per scale (K resized + native)."""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp


class AddScaleEmbs(nn.Module):
  """Adds learnable scale embeddings (`scale_embedding` [1, S, D])."""
  num_scales: int
  scale_emb_init: Callable = nn.initializers.normal(stddev=0.02)

  @nn.compact
  def __call__(self, inputs, scale_positions):
    if inputs.ndim != 3:
      raise ValueError(f"Expected [batch, len, emb] inputs, got {inputs.shape}")
    table = self.param("scale_embedding", self.scale_emb_init,
                       (1, self.num_scales, inputs.shape[-1]))
    return inputs + jnp.take(table[0], scale_positions, axis=0).astype(
        inputs.dtype)
