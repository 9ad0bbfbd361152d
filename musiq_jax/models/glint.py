"""GlintIQA-style global-local hybrid quality model (baseline III).

    crop [B, S, S, 3] in [-1, 1]
      |-- VGFE: ViT (vit.VisionTransformer), token maps after `feature_layers`
      |         (CLS dropped) -> G_1..G_K, each [B, N, D], N = (S/p)^2
      |-- CLFE: BiT ResNet root + stages (resnet.ResNetStage); stage i (stride
      |         4*2^i) embedded by a (p/(4*2^i))-sized conv of the same stride
      |         to the same N-token grid -> L_1..L_M, each [B, N, D]
      |-- local_fusion: CWSA over concat(L_1..L_M) -> Dense(D)  = F_0
      |-- fusion: F_k = SIEM(proj(CWSA(concat(G_k, F_{k-1}))))    k = 1..K
      `-- head: mean over tokens -> Dense(D) -> GELU -> Dropout -> Dense(1)

Different kernel sizes align the CNN's finer maps with the ViT's p x p patch
grid, so every fusion step concatenates features of the same image region.

Also here: the MUSIQ -> ViT weight mapping (`load_vit_from_musiq`) and the
optimizer's freeze mask (`frozen_mask`), so the module itself never knows
what is frozen.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence, Union

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musiq_jax import checkpoint
from musiq_jax.models import glint_fusion
from musiq_jax.models import resnet
from musiq_jax.models import vit


class LocalFeatureExtractor(nn.Module):
  """CLFE: BiT ResNet stages, each embedded to the ViT's token grid.

  Attributes:
    patch_size: the ViT patch size = total stride of the token grid.
    hidden_size: token width D.
    resnet_num_layers: ResNet depth, for its stage layout (`get_block_desc`).
    resnet_num_stages: how many of its stages to run (the paper: 3 of 4).
    resnet_width: root width; stage i has width * 2^i (x4 out) channels.
    dtype: computation dtype.
  """
  patch_size: int
  hidden_size: int
  resnet_num_layers: int = 50
  resnet_num_stages: int = 3
  resnet_width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    blocks, bottleneck = resnet.get_block_desc(self.resnet_num_layers)
    if not 1 <= self.resnet_num_stages <= len(blocks):
      raise ValueError(f"resnet_num_stages={self.resnet_num_stages}: a "
                       f"ResNet-{self.resnet_num_layers} has {len(blocks)}.")
    # The root block of resnet.resnet_patch_features, kept here because we
    # need every stage's output, not only the last one.
    x = resnet.StdConv(self.resnet_width, (7, 7), (2, 2), use_bias=False,
                       dtype=self.dtype, name="conv_root")(images)
    x = nn.relu(nn.GroupNorm(dtype=self.dtype, name="gn_root")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    embeddings = []
    for i in range(self.resnet_num_stages):
      x = resnet.ResNetStage(
          blocks[i], self.resnet_width * 2**i,
          first_stride=(1, 1) if i == 0 else (2, 2),
          bottleneck=bottleneck, dtype=self.dtype, name=f"block{i + 1}")(x)
      stride = 4 * 2**i
      if self.patch_size % stride:
        raise ValueError(f"Stage {i + 1} has stride {stride}, which does not "
                         f"divide the patch size {self.patch_size}; use fewer "
                         "resnet_num_stages or a larger patch.")
      k = self.patch_size // stride
      e = nn.Conv(self.hidden_size, (k, k), strides=(k, k), padding="VALID",
                  dtype=self.dtype, name=f"embed{i + 1}")(x)
      embeddings.append(e.reshape(e.shape[0], -1, e.shape[-1]))
    return tuple(embeddings)


class QualityHead(nn.Module):
  """Mean-pooled tokens -> Dense(D) -> GELU -> Dropout -> Dense(1)."""
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = nn.Dense(x.shape[-1], dtype=self.dtype, name="hidden")(x)
    x = nn.gelu(x, approximate=False)  # torch nn.GELU() is the exact erf.
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return nn.Dense(1, dtype=self.dtype, name="out")(x)[..., 0]


class GlintIQA(nn.Module):
  """The hybrid model; returns one score per crop, shape [B].

  Attributes mirror `configs/glint.py:GLINT_SIZES` plus dropout rates.
  """
  patch_size: int = 16
  hidden_size: int = 384
  num_layers: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536
  feature_layers: Sequence[int] = (6, 7, 8, 9)
  resnet_num_layers: int = 50
  resnet_num_stages: int = 3
  resnet_width: int = 64
  fusion_dropout_rate: float = 0.0
  head_dropout_rate: float = 0.0
  vit_dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    """Scores [B, S, S, 3] crops (S a multiple of `patch_size`) -> [B]."""
    global_maps = vit.VisionTransformer(
        patch_size=self.patch_size,
        hidden_size=self.hidden_size,
        num_layers=self.num_layers,
        num_heads=self.num_heads,
        mlp_dim=self.mlp_dim,
        feature_layers=tuple(self.feature_layers),
        dropout_rate=self.vit_dropout_rate,
        attention_dropout_rate=self.vit_dropout_rate,
        dtype=self.dtype,
        name="vgfe")(images, train=train)
    global_maps = [g[:, 1:] for g in global_maps]  # Drop CLS: a grid only.
    grid = (images.shape[1] // self.patch_size,
            images.shape[2] // self.patch_size)
    local_maps = LocalFeatureExtractor(
        patch_size=self.patch_size,
        hidden_size=self.hidden_size,
        resnet_num_layers=self.resnet_num_layers,
        resnet_num_stages=self.resnet_num_stages,
        resnet_width=self.resnet_width,
        dtype=self.dtype,
        name="clfe")(images)
    assert local_maps[-1].shape == global_maps[-1].shape, (
        "CLFE and VGFE grids differ", local_maps[-1].shape,
        global_maps[-1].shape)
    x = glint_fusion.LocalFusion(self.fusion_dropout_rate, dtype=self.dtype,
                                 name="local_fusion")(local_maps, train=train)
    x = glint_fusion.ProgressiveFusion(
        grid, self.fusion_dropout_rate, dtype=self.dtype,
        name="fusion")(global_maps, x, train=train)
    return QualityHead(self.head_dropout_rate, dtype=self.dtype,
                       name="head")(jnp.mean(x, axis=1), train=train)


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
  """GlintIQA constructor arguments from an experiment config."""
  from musiq_jax.configs import glint as glint_config  # pylint: disable=g-import-not-at-top
  size = glint_config.get_model_config(config.model.size).to_dict()
  size.pop("image_size")
  size["feature_layers"] = tuple(size["feature_layers"])
  return dict(
      size,
      fusion_dropout_rate=config.model.get("fusion_dropout_rate", 0.0),
      head_dropout_rate=config.model.get("head_dropout_rate", 0.0),
      vit_dropout_rate=config.model.get("vit_dropout_rate", 0.0),
      dtype=jnp.dtype(config.model.get("dtype", "float32")))


def create_model(config: ml_collections.ConfigDict) -> GlintIQA:
  """The GlintIQA module of an experiment config (`configs/glint.py`)."""
  return GlintIQA(**model_kwargs(config))


# ---------------------------------------------------------------------------
# Freezing (an optimizer concern: the module has no notion of it).
# ---------------------------------------------------------------------------

_BLOCK_RE = re.compile(r"vgfe/Transformer/encoderblock_(\d+)/")


def frozen_mask(params: Mapping[str, Any],
                config: ml_collections.ConfigDict) -> Any:
  """A bool tree like `params`: True where the parameter is frozen.

  The paper freezes the ViT's patch embedding and blocks 0..4 (timm's
  `requires_grad=False`); CLS and position embeddings stay trainable.

  Args:
    params: the GlintIQA params tree (or its shapes).
    config: an experiment config; reads `optimizer.freeze_patch_embed` and
      `optimizer.freeze_blocks_until` (inclusive, -1 = no block).
  """
  opt = config.optimizer
  until = int(opt.get("freeze_blocks_until", -1))
  patch = bool(opt.get("freeze_patch_embed", False))

  def frozen(path: str) -> bool:
    if patch and path.startswith("vgfe/embedding/"):
      return True
    m = _BLOCK_RE.match(path)
    return bool(m) and int(m.group(1)) <= until

  flat = checkpoint.flatten(params)
  return checkpoint.unflatten({k: frozen(k) for k in flat})


# ---------------------------------------------------------------------------
# MUSIQ transformer blocks -> ViT blocks.
# ---------------------------------------------------------------------------

# MUSIQ's patch ResNet (root + block1/unit1) has the shapes of our CLFE's
# root and first unit when the widths agree.
_PATCH_RESNET_RE = re.compile(r"(conv_root|gn_root|block1/unit1)/")


def load_vit_from_musiq(musiq: Union[str, Mapping[str, np.ndarray]],
                        init_params: Mapping[str, Any], *,
                        load_patch_resnet: bool = False) -> dict:
  """Loads a MUSIQ checkpoint's transformer into GlintIQA's ViT by name.

  `Transformer/encoderblock_{i}` -> `vgfe/Transformer/encoderblock_{i}` for
  the blocks the ViT builds (MUSIQ's deeper blocks are dropped), and
  `Transformer/cls` -> `vgfe/cls`. MUSIQ's patch embedding is a ResNet on
  32x32 patches and its position embedding is a hash grid, so the ViT's
  conv embedding and position table keep their init, as do the fusion
  stages and the head. With `load_patch_resnet`, MUSIQ's root conv and
  first bottleneck unit also go to the CLFE's (same shapes at width 64).

  Args:
    musiq: path of an original-layout `.npz`, or its flat params (as
      `checkpoint.read_params` returns).
    init_params: freshly initialised GlintIQA params.
    load_patch_resnet: also load the CLFE root and block1/unit1.

  Returns:
    The merged params tree.

  Raises:
    checkpoint.CheckpointError: widths differ, the checkpoint has fewer
      blocks than the ViT builds, or shapes (heads, MLP) do not match.
  """
  source = musiq if isinstance(musiq, str) else "MUSIQ params"
  flat = checkpoint.read_params(musiq) if isinstance(musiq, str) else musiq
  width_key = "Transformer/encoderblock_0/LayerNorm_0/scale"
  if width_key not in flat:
    raise checkpoint.CheckpointError(
        f"{source}: no '{width_key}'; is this a MUSIQ checkpoint?")
  ours = int(np.shape(init_params["vgfe"]["cls"])[-1])
  theirs = int(np.shape(flat[width_key])[0])
  if ours != theirs:
    raise checkpoint.CheckpointError(
        f"{source}: MUSIQ width {theirs} != GlintIQA hidden_size {ours}; the "
        "transformer blocks only load into a ViT of the same width (size "
        "'vit_musiq_r50' for the released MUSIQ).")
  built = {int(m.group(1)) for k in checkpoint.flatten(init_params)
           for m in [_BLOCK_RE.match(k)] if m}
  loaded, dropped = {}, 0
  for k, v in flat.items():
    m = re.match(r"Transformer/encoderblock_(\d+)/", k)
    if m and int(m.group(1)) in built:
      loaded["vgfe/" + k] = v
    elif k == "Transformer/cls":
      loaded["vgfe/cls"] = v
    elif load_patch_resnet and _PATCH_RESNET_RE.match(k):
      loaded["clfe/" + k] = v
    else:
      dropped += 1
  logging.info("%s: loading %d MUSIQ arrays into GlintIQA, %d not used.",
               source, len(loaded), dropped)
  clfe = (r"clfe/(?!conv_root/|gn_root/|block1/unit1/)" if load_patch_resnet
          else r"clfe/")
  dont_load = (r"vgfe/embedding/", r"vgfe/Transformer/posembed_input/", clfe,
               r"local_fusion/", r"fusion/", r"head/")
  return checkpoint.merge_params(loaded, init_params, dont_load, source=source)


def count_params(params: Any) -> int:
  return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))


def init_params(model: GlintIQA, rng: jax.Array, image_size: int,
                batch: int = 1) -> Any:
  """Jitted init on [batch, S, S, 3] zeros; returns the params tree."""
  images = jnp.zeros((batch, image_size, image_size, 3), jnp.float32)
  return jax.jit(lambda r: model.init(r, images, train=False))(rng)["params"]


def param_shapes(model: GlintIQA, image_size: int) -> Any:
  """The params tree as ShapeDtypeStructs (no compute; for big sizes)."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
      images)["params"]


def score_crops(apply_fn, params, crops: jnp.ndarray) -> jnp.ndarray:
  """Mean score over crops: [B, K, S, S, 3] -> [B] (the paper's test rule)."""
  b, k = crops.shape[:2]
  scores = apply_fn({"params": params}, crops.reshape(b * k, *crops.shape[2:]),
                    train=False)
  return scores.reshape(b, k).mean(axis=1)

