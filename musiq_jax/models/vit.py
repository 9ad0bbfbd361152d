"""A plain ViT image encoder that returns the hidden states of chosen blocks.

Conv patch embedding (kernel = stride = patch size) -> learned CLS token ->
learned position embedding over CLS + the patch grid -> a stack of the
project's pre-LN `transformer.Encoder1DBlock`s. It is GlintIQA's global
branch (VGFE): the caller reads the token maps after selected blocks rather
than a CLS output, so blocks after the last selected one are not built at all
(they would get no gradient and only cost compute).

Parameter names follow vit_jax (`embedding`, `cls`,
`Transformer/posembed_input/pos_embedding`, `Transformer/encoderblock_{i}`),
and the blocks are named exactly as in a MUSIQ checkpoint, so MUSIQ's
transformer blocks load into this encoder by name (`checkpoint.load_vit_from_musiq`).
"""

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from musiq_jax.models import transformer


class AddPositionEmbs(nn.Module):
  """Adds a learned [1, L, D] position embedding (ViT's, std 0.02 init)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                     (1,) + tuple(x.shape[1:]))
    return x + pos.astype(self.dtype)


class Encoder(nn.Module):
  """Position embedding + blocks 0..max(feature_layers); the `Transformer`."""
  feature_layers: Sequence[int]
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool) -> Tuple[jnp.ndarray, ...]:
    x = AddPositionEmbs(dtype=self.dtype, name="posembed_input")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    # All tokens are real: the mask lets every query see every key.
    mask = jnp.ones((x.shape[0], 1, 1, x.shape[1]), bool)
    outputs = []
    for i in range(max(self.feature_layers) + 1):
      x = transformer.Encoder1DBlock(
          mlp_dim=self.mlp_dim,
          num_heads=self.num_heads,
          dtype=self.dtype,
          dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          name=f"encoderblock_{i}")(x, mask, deterministic=not train)
      outputs.append(x)
    return tuple(outputs[i] for i in self.feature_layers)


class VisionTransformer(nn.Module):
  """ViT encoder returning the token maps after `feature_layers`.

  Attributes:
    patch_size: side of the square patches (the conv kernel and stride).
    hidden_size: token width D.
    num_layers: depth of the full encoder (documentation of the source
      architecture; only blocks 0..max(feature_layers) are built).
    num_heads: attention heads per block.
    mlp_dim: hidden width of each block's MLP.
    feature_layers: indices of the blocks whose outputs are returned; None
      means the last block only.
    dropout_rate: dropout after the embedding and inside the blocks.
    attention_dropout_rate: dropout on the attention weights.
    dtype: computation dtype.
  """
  patch_size: int = 16
  hidden_size: int = 384
  num_layers: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  feature_layers: Optional[Sequence[int]] = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  def returned_layers(self) -> Tuple[int, ...]:
    """The validated block indices whose outputs are returned."""
    if self.feature_layers is None:
      return (self.num_layers - 1,)
    layers = tuple(int(i) for i in self.feature_layers)
    if not layers or any(not 0 <= i < self.num_layers for i in layers):
      raise ValueError(f"feature_layers={layers} must be non-empty block "
                       f"indices in [0, {self.num_layers}).")
    return layers

  @nn.compact
  def __call__(self, images, *, train: bool = False) -> Tuple[jnp.ndarray, ...]:
    """Encodes images.

    Args:
      images: [B, H, W, 3], H and W multiples of `patch_size`.
      train: enables dropout.

    Returns:
      A tuple with one [B, 1 + (H/p)*(W/p), D] array (CLS first) per entry
      of `feature_layers`, in that order.
    """
    p = self.patch_size
    if images.shape[1] % p or images.shape[2] % p:
      raise ValueError(f"Image size {images.shape[1:3]} is not a multiple of "
                       f"the patch size {p}.")
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID",
                dtype=self.dtype, name="embedding")(images)
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
    x = jnp.concatenate([jnp.tile(cls, [b, 1, 1]).astype(x.dtype), x], axis=1)
    return Encoder(
        feature_layers=self.returned_layers(),
        num_heads=self.num_heads,
        mlp_dim=self.mlp_dim,
        dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        dtype=self.dtype,
        name="Transformer")(x, train=train)
