"""Hash-based 2-D spatial embedding (HSE) of MUSIQ.

A learnable G x G table (stored as `pos_embedding` [1, G*G, D]); every token
adds the row picked by its hashed spatial index `t_i * G + t_j`, computed in
preprocessing (`musiq_jax.preprocessing.hashed_spatial_index`).
"""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp


class AddHashSpatialPositionEmbs(nn.Module):
  """Adds learnable hash-based spatial embeddings to `[B, L, D]` tokens."""
  grid_size: int
  posemb_init: Callable = nn.initializers.normal(stddev=0.02)  # from BERT.

  @nn.compact
  def __call__(self, inputs, spatial_positions):
    if inputs.ndim != 3:
      raise ValueError(f"Expected [batch, len, emb] inputs, got {inputs.shape}")
    table = self.param("pos_embedding", self.posemb_init,
                       (1, self.grid_size * self.grid_size, inputs.shape[-1]))
    return inputs + jnp.take(table[0], spatial_positions, axis=0).astype(
        inputs.dtype)
