"""CLIP (ViT image tower + causal text transformer) in Flax.

Parameter names mirror OpenAI's CLIP state dict (`visual/conv1`, `ln_pre`,
`transformer/resblocks_{i}/attn/in_proj`, `ln_final`, `text_projection`, ...),
so importing released weights is a small explicit name map (`weights.py`) rather
than a pile of special cases. Attention keeps OpenAI's fused q/k/v projection
(`in_proj`) for the same reason; Hugging Face's split q/k/v are concatenated at
load time.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

Array = jax.Array
Dtype = Any

# Torch's LayerNorm default, which every released CLIP was trained with.
_LN_EPS = 1e-5


def quick_gelu(x: Array) -> Array:
  """OpenAI CLIP's activation: x * sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(1.702 * x)


def _activation(name: str):
  if name == "quick_gelu":
    return quick_gelu
  if name == "gelu":
    # open_clip's non-"quickgelu" models use torch.nn.GELU, the exact erf form.
    return lambda x: nn.gelu(x, approximate=False)
  raise ValueError(f"Unknown activation {name!r}; use 'quick_gelu' or 'gelu'.")


class MultiHeadAttention(nn.Module):
  """Self-attention with a fused q/k/v projection, as in `torch.nn.MultiheadAttention`."""
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> Array:
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"Width {width} is not divisible by {self.num_heads} heads.")
    head_dim = width // self.num_heads
    qkv = nn.Dense(3 * width, dtype=self.dtype, name="in_proj")(x)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    split = lambda t: t.reshape(*t.shape[:-1], self.num_heads, head_dim)
    q, k, v = split(q), split(k), split(v)
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    # Softmax in float32 so a bfloat16 run does not lose the small probabilities.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("...hqk,...khd->...qhd", weights, v)
    out = out.reshape(*out.shape[:-2], width)
    return nn.Dense(width, dtype=self.dtype, name="out_proj")(out)


class Mlp(nn.Module):
  """CLIP's 4x-wide feed-forward block (`c_fc` -> activation -> `c_proj`)."""
  act: str = "quick_gelu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    y = nn.Dense(4 * width, dtype=self.dtype, name="c_fc")(x)
    y = _activation(self.act)(y)
    return nn.Dense(width, dtype=self.dtype, name="c_proj")(y)


class ResidualAttentionBlock(nn.Module):
  """Pre-LayerNorm transformer block."""
  num_heads: int
  act: str = "quick_gelu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> Array:
    y = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="ln_1")(x)
    x = x + MultiHeadAttention(self.num_heads, dtype=self.dtype, name="attn")(y, mask)
    y = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="ln_2")(x)
    return x + Mlp(act=self.act, dtype=self.dtype, name="mlp")(y)


class Transformer(nn.Module):
  """A stack of `num_layers` residual attention blocks named `resblocks_{i}`."""
  num_layers: int
  num_heads: int
  act: str = "quick_gelu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> Array:
    for i in range(self.num_layers):
      x = ResidualAttentionBlock(self.num_heads, act=self.act, dtype=self.dtype,
                                 name=f"resblocks_{i}")(x, mask)
    return x


class VisionTransformer(nn.Module):
  """CLIP's ViT image tower: patches + class token -> transformer -> projection.

  Input is NHWC, already CLIP-normalised (see `preprocess.py`).
  """
  image_size: int
  patch_size: int
  width: int
  num_layers: int
  num_heads: int
  output_dim: int
  act: str = "quick_gelu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Array) -> Array:
    if images.shape[-3:] != (self.image_size, self.image_size, 3):
      raise ValueError(
          f"Expected [..., {self.image_size}, {self.image_size}, 3] images, got "
          f"{images.shape}: crop or resize first (preprocess.py).")
    batch = images.shape[0]
    x = nn.Conv(self.width, (self.patch_size,) * 2, strides=(self.patch_size,) * 2,
                padding="VALID", use_bias=False, dtype=self.dtype, name="conv1")(images)
    x = x.reshape(batch, -1, self.width)
    scale = self.width ** -0.5
    cls = self.param("class_embedding", nn.initializers.normal(scale), (self.width,))
    num_tokens = (self.image_size // self.patch_size) ** 2 + 1
    pos = self.param("positional_embedding", nn.initializers.normal(scale),
                     (num_tokens, self.width))
    cls = jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, self.width))
    x = jnp.concatenate([cls, x], axis=1) + pos.astype(x.dtype)
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="ln_pre")(x)
    x = Transformer(self.num_layers, self.num_heads, act=self.act, dtype=self.dtype,
                    name="transformer")(x)
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="ln_post")(x[:, 0])
    proj = self.param("proj", nn.initializers.normal(scale), (self.width, self.output_dim))
    return x @ proj.astype(x.dtype)


class TextTransformer(nn.Module):
  """CLIP's causal text tower, pooled at the end-of-text token.

  The end-of-text token has the largest id in CLIP's vocabulary, so its position
  is `argmax(ids)`, as in OpenAI's code.
  """
  context_length: int
  vocab_size: int
  width: int
  num_layers: int
  num_heads: int
  output_dim: int
  act: str = "quick_gelu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, ids: Array, context: Optional[Array] = None) -> Array:
    """Encodes token ids [B, L] (L <= context_length) to [B, output_dim].

    Args:
      ids: int token ids, start-of-text first, zero padded.
      context: optional learnable prompt vectors [n_ctx, width] or
        [B, n_ctx, width] (CoOp) that replace the embeddings of the tokens at
        positions 1..n_ctx (placeholder words right after start-of-text).
    """
    if ids.shape[-1] > self.context_length:
      raise ValueError(f"Token sequence of length {ids.shape[-1]} exceeds the "
                       f"context length {self.context_length}.")
    length = ids.shape[-1]
    x = nn.Embed(self.vocab_size, self.width, dtype=self.dtype,
                 embedding_init=nn.initializers.normal(0.02),
                 name="token_embedding")(ids)
    if context is not None:
      n_ctx = context.shape[-2]
      context = jnp.broadcast_to(context.astype(x.dtype), (x.shape[0], n_ctx, self.width))
      x = jnp.concatenate([x[:, :1], context, x[:, 1 + n_ctx:]], axis=1)
    pos = self.param("positional_embedding", nn.initializers.normal(0.01),
                     (self.context_length, self.width))
    x = x + pos[:length].astype(x.dtype)
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    x = Transformer(self.num_layers, self.num_heads, act=self.act, dtype=self.dtype,
                    name="transformer")(x, causal)
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="ln_final")(x)
    pooled = x[jnp.arange(x.shape[0]), jnp.argmax(ids, axis=-1)]
    proj = self.param("text_projection", nn.initializers.normal(self.width ** -0.5),
                      (self.width, self.output_dim))
    return pooled @ proj.astype(x.dtype)


class CLIP(nn.Module):
  """Image and text towers plus CLIP's learnable logit scale.

  Attributes:
    spec: a size from `model_sizes.get_clip_size` (or a matching ConfigDict).
    dtype: computation dtype of every submodule.
  """
  spec: ml_collections.ConfigDict
  dtype: Dtype = jnp.float32

  def setup(self):
    # setup() (not @compact) because CLIP has several entry points that share
    # the towers: encode_image, encode_text and __call__.
    s = self.spec
    self.visual = VisionTransformer(
        image_size=s.image_size, patch_size=s.patch_size, width=s.vision_width,
        num_layers=s.vision_layers, num_heads=s.vision_heads,
        output_dim=s.embed_dim, act=s.act, dtype=self.dtype)
    self.text = TextTransformer(
        context_length=s.context_length, vocab_size=s.vocab_size,
        width=s.text_width, num_layers=s.text_layers, num_heads=s.text_heads,
        output_dim=s.embed_dim, act=s.act, dtype=self.dtype)
    # log(1 / 0.07), CLIP's initial temperature.
    self.logit_scale = self.param(
        "logit_scale", nn.initializers.constant(jnp.log(1 / 0.07)), ())

  def encode_image(self, images: Array) -> Array:
    """Projected (not normalised) image embeddings [B, embed_dim]."""
    return self.visual(images)

  def encode_text(self, ids: Array, context: Optional[Array] = None) -> Array:
    """Projected (not normalised) text embeddings [B, embed_dim]."""
    return self.text(ids, context)

  def __call__(self, images: Array, ids: Array):
    """Returns (logits_per_image [B_img, B_txt], image_emb, text_emb)."""
    img = l2_normalize(self.encode_image(images))
    txt = l2_normalize(self.encode_text(ids))
    return jnp.exp(self.logit_scale) * img @ txt.T, img, txt


def l2_normalize(x: Array, axis: int = -1) -> Array:
  """x / ||x||, as CLIP normalises embeddings before the cosine similarity."""
  return x / jnp.linalg.norm(x, axis=axis, keepdims=True)
