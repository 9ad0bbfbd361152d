"""MUSIQ: multi-scale image quality transformer (Ke et al., ICCV 2021).

Tokens of all scales (from `musiq_jax.preprocessing`) -> [optional MSCN
channels] -> per-patch ResNet ->
Dense `embedding` -> `Transformer` (HSE + scale embedding + CLS + encoder) ->
CLS output -> optional `pre_logits` (Dense + tanh) -> zero-initialised `head`.
The parameter tree mirrors the released `.npz` checkpoints under `opt/target`.
"""

import functools
from typing import Any, Mapping, Optional, Union

import flax.linen as nn
from jax import lax
import jax.numpy as jnp
import numpy as np

from musiq_jax.models import resnet
from musiq_jax.models import transformer


def split_inputs(x: Union[Mapping[str, jnp.ndarray], jnp.ndarray]):
  """Token features dict, or the original's concatenated [..., C+3] array."""
  if isinstance(x, Mapping):
    return x["patches"], x["spatial"], x["scale"], x["mask"]
  return (x[..., :-3], x[..., -3].astype(jnp.int32),
          x[..., -2].astype(jnp.int32), x[..., -1].astype(jnp.int32))


PATCH_INPUTS = ("rgb", "rgb_mscn", "mscn")
# MSCN constant in [-1, 1] pixel units: 2 grey levels of 0..255.
MSCN_C = 4.0 / 255.0


def gaussian_window(sigma: float = 7.0 / 6.0, radius: int = 3) -> np.ndarray:
  """The [2r+1, 2r+1] normalised Gaussian window of BRISQUE's MSCN."""
  g = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma)**2)
  w = np.outer(g, g)
  return w / w.sum()


def mscn(x: jnp.ndarray, c: float = MSCN_C) -> jnp.ndarray:
  """Mean-subtracted contrast-normalised coefficients of [n, h, w, C] images.

  (x - mu) / (sigma + c) per channel, with mu and sigma the local mean and
  standard deviation under a 7x7 Gaussian window (sigma 7/6), as BRISQUE
  (Mittal et al. 2012, after Ruderman 1994). Outside the image counts as 0:
  the window is a zero-padded ("SAME") convolution, each image (here: each
  32x32 patch) on its own. Local luminance and contrast divide out, so what
  is left is local structure: edges, texture, noise, blocking, ringing.
  """
  channels = x.shape[-1]
  w = gaussian_window().astype(np.float32)
  kernel = jnp.asarray(np.tile(w[:, :, None, None], (1, 1, 1, channels)),
                       x.dtype)
  conv = lambda a: lax.conv_general_dilated(
      a, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=channels)
  mu = conv(x)
  var = jnp.maximum(conv(x * x) - mu * mu, 0.0)
  # sqrt's derivative is infinite at 0 (flat or zero-padded windows), which
  # made pixel gradients NaN (`Scorer.as_loss`); the double `where` keeps
  # the values and gives those windows a zero gradient instead.
  positive = var > 0
  sd = jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)
  return (x - mu) / (sd + c)


class Model(nn.Module):
  """Multi-scale patch transformer.

  Attributes:
    num_classes: outputs of the head (1 for MOS regression, 10 for AVA).
    hidden_size: token width D.
    num_layers: transformer blocks.
    num_heads: attention heads.
    mlp_dim: MLP width.
    spatial_pos_grid_size: G of the hash-based spatial embedding.
    num_scales: scale embeddings (resized scales + native).
    resnet_num_layers: depth of the patch ResNet (5 = root + one bottleneck
      unit); None embeds raw pixels with the Dense layer alone.
    resnet_width: channels of the ResNet root (the original uses 64).
    resnet_num_groups: groups of the ResNet's GroupNorms (the original: 32).
    patch_input: what each patch shows the ResNet: "rgb" (the original),
      "mscn", the MSCN coefficients of R, G, B (`mscn`), or "rgb_mscn",
      both (6 channels). MSCN divides out local brightness and contrast,
      the part of a patch that is content rather than distortion; the
      from-scratch demo model generalises better to unseen photos with it
      (configs/synthetic.py). "mscn" has RGB's parameter shapes, so only
      the sidecar config tells a checkpoint's patch_input apart.
    representation_size: width of `pre_logits` (None = identity).
    use_scale_emb: add the scale embedding.
    dropout_rate, attention_dropout_rate, stochastic_layer_drop_rate:
      regularisation used in training only.
    dtype: computation dtype (params stay float32).
    sow_attention: store attention weights in the `intermediates` collection.
    head_bias_init: initial bias of the (zero-kernel) head, i.e. the score
      every image starts with. The trainer sets the centre of the MOS range
      for regression heads: Adam moves a parameter by about the learning
      rate per step, so a bias starting at 0 needs thousands of steps to
      reach a 1..5 (or 0..100) scale, and meanwhile the network bends its
      features into a constant instead of learning quality.
    patch_chunk_size: patches the ResNet embeds per loop step at inference
      (0 = all at once). Its activations are 64 KB per patch per layer; in
      chunks of 32 they stay in cache instead of streaming ~70 MB tensors
      through memory for every GroupNorm, which made the ResNet ~1.6x faster
      on CPU. Same math: every patch is normalised on its own. Training
      does not chunk: the loop's backward pass made a CPU train step ~5x
      slower (9.5 s vs 2.1 s at 320 tokens).
    embed_in_chunks_from: from this many patches (0 = never), the chunk
      loop also applies the `embedding` Dense, so the [patches, 8, 8, 256]
      ResNet output (64 KB per patch: 780 MB for a 12-megapixel photo's
      ~12,000 patches) never exists at once; only [chunk, D] rows leave
      each step. Below it, one Dense over all patches is faster.
    attention_tiled_min_keys: from this many tokens (0 = never), attention
      runs over key blocks with an online softmax instead of materialising
      the [B, H, L, L] map (`transformer.blocked_attention`; same scores).
  """
  num_classes: int = 1
  hidden_size: int = 384
  num_layers: int = 14
  num_heads: int = 6
  mlp_dim: int = 1152
  spatial_pos_grid_size: int = 10
  num_scales: int = 3
  resnet_num_layers: Optional[int] = 5
  resnet_width: int = 64
  resnet_num_groups: int = 32
  patch_input: str = "rgb"
  representation_size: Optional[int] = None
  use_scale_emb: bool = True
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_layer_drop_rate: float = 0.0
  dtype: Any = jnp.float32
  sow_attention: bool = False
  patch_chunk_size: int = 32
  head_bias_init: float = 0.0
  embed_in_chunks_from: int = 4096
  attention_tiled_min_keys: int = transformer.TILED_MIN_KEYS

  def _embedding(self):
    """The `embedding` Dense; a plain function, so that inside the chunk
    loop it attaches to the loop's module (the parent in context)."""
    return functools.partial(nn.Dense, self.hidden_size, dtype=self.dtype,
                             name="embedding")

  def _patch_features(self, x, chunked: bool, embed: bool = False):
    """[m, P, P, 3] -> [m, h', w', c'] by the patch ResNet, chunk by chunk;
    with `embed`, -> [m, D] (the `embedding` Dense applied in the loop)."""
    resnet_features = functools.partial(
        resnet.resnet_patch_features, num_layers=self.resnet_num_layers,
        width=self.resnet_width, dtype=self.dtype,
        num_groups=self.resnet_num_groups)
    if embed:
      dense = self._embedding()
      features = lambda v: dense()(  # pylint: disable=g-long-lambda
          jnp.reshape(resnet_features(v), (v.shape[0], -1)))
    else:
      features = resnet_features
    chunk = self.patch_chunk_size if chunked else 0
    m = x.shape[0]
    if not chunk or m <= chunk:
      return features(x)
    padded = -(-m // chunk) * chunk
    x = jnp.pad(x, [(0, padded - m)] + [(0, 0)] * (x.ndim - 1))
    x = jnp.reshape(x, (padded // chunk, chunk) + x.shape[1:])
    # A lifted scan with broadcast params: the submodules it creates attach
    # to this module, so the parameter tree keeps the original's flat names.
    _, y = nn.scan(
        lambda module, carry, xs: (carry, features(xs)),
        variable_broadcast="params",
        split_rngs={"params": False})(self, None, x)
    return jnp.reshape(y, (padded,) + y.shape[2:])[:m]

  def embed_patches(self, patches, *, train: bool = False):
    """[n, L, P*P*3] patches -> [n, L, D] tokens (called inside __call__)."""
    n, l, channels = patches.shape
    x = patches.astype(self.dtype)
    if self.patch_input not in PATCH_INPUTS:
      raise ValueError(f"Unknown patch_input {self.patch_input!r}; choose "
                       f"from {PATCH_INPUTS}.")
    if self.resnet_num_layers is not None or self.patch_input != "rgb":
      patch_size = int(np.sqrt(channels // 3))
      if patch_size * patch_size * 3 != channels:
        raise ValueError(f"Token width {channels} is not P*P*3.")
      x = jnp.reshape(x, [n * l, patch_size, patch_size, 3])
      if self.patch_input == "rgb_mscn":
        x = jnp.concatenate([x, mscn(x)], axis=-1)
      elif self.patch_input == "mscn":
        x = mscn(x)
      if self.resnet_num_layers is not None:
        embed = (not train and bool(self.embed_in_chunks_from) and
                 n * l >= self.embed_in_chunks_from and
                 n * l > self.patch_chunk_size > 0)
        x = self._patch_features(x, chunked=not train, embed=embed)
        if embed:
          return jnp.reshape(x, [n, l, -1])
      x = jnp.reshape(x, [n, l, -1])
    return self._embedding()()(x)

  @nn.compact
  def __call__(self, inputs, *, train: bool = False):
    patches, spatial, scale, mask = split_inputs(inputs)
    if patches.ndim not in (3, 4):
      raise ValueError(f"Expected [batch, len, C] or [batch, crops, len, C] "
                       f"tokens, got {patches.shape}")
    lead = patches.shape[:-2]
    if patches.ndim == 4:  # Multi-crop input: fold crops into the batch.
      fold = lambda a: jnp.reshape(a, (-1,) + a.shape[2:])
      patches, spatial, scale, mask = map(fold, (patches, spatial, scale, mask))
    x = self.embed_patches(patches, train=train)
    x = transformer.Encoder(
        num_layers=self.num_layers,
        mlp_dim=self.mlp_dim,
        num_heads=self.num_heads,
        spatial_pos_grid_size=self.spatial_pos_grid_size,
        num_scales=self.num_scales,
        use_scale_emb=self.use_scale_emb,
        dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        stochastic_layer_drop_rate=self.stochastic_layer_drop_rate,
        dtype=self.dtype,
        sow_attention=self.sow_attention,
        # Only the CLS output is read; the attention maps need every token.
        cls_only=not self.sow_attention,
        tiled_min_keys=self.attention_tiled_min_keys,
        name="Transformer")(x, spatial, scale, mask, train=train)
    x = x[:, 0]
    if self.representation_size:
      x = nn.tanh(nn.Dense(self.representation_size, name="pre_logits")(x))
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                 bias_init=nn.initializers.constant(self.head_bias_init),
                 name="head")(x.astype(jnp.promote_types(self.dtype,
                                                         jnp.float32)))
    return jnp.reshape(x, lead + (self.num_classes,))
