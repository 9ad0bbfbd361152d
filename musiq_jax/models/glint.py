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

Also here: the size registry (`GLINT_SIZES`) and the optimizer's freeze
mask (`frozen_mask`), so the module itself never knows what is frozen. The
MUSIQ -> ViT weight mapping is `checkpoint.load_vit_from_musiq` (models
import no checkpoint or config code).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musiq_jax.models import glint_fusion
from musiq_jax.models import resnet
from musiq_jax.models import vit


GLINT_SIZES = {
    # The paper's model: ViT-S/16 (384-d, 12 layers, 6 heads, MLP 1536;
    # blocks 10-11 are not built since only blocks 6-9 are read), the first
    # 3 stages of ResNet-50 (width 64: 256/512/1024 channels at stride
    # 4/8/16), embedded by 4x4/2x2/1x1 convs to the 14x14 grid of 224 crops.
    "vit_small_r50": dict(
        patch_size=16,
        hidden_size=384,
        num_layers=12,
        num_heads=6,
        mlp_dim=1536,
        feature_layers=(6, 7, 8, 9),
        resnet_num_layers=50,
        resnet_num_stages=3,
        resnet_width=64,
        image_size=224,
    ),
    # The paper's layout with the released MUSIQ's block shape (MLP 1152
    # instead of ViT-S's 1536, 14 layers): MUSIQ's transformer blocks 0-9
    # load into it (`glint.load_vit_from_musiq`), timm's ViT-S cannot be
    # fetched here.
    "vit_musiq_r50": dict(
        patch_size=16,
        hidden_size=384,
        num_layers=14,
        num_heads=6,
        mlp_dim=1152,
        feature_layers=(6, 7, 8, 9),
        resnet_num_layers=50,
        resnet_num_stages=3,
        resnet_width=64,
        image_size=224,
    ),
    # CPU demo size: 3 fusion stages, 3 CNN stages of single units.
    "small": dict(
        patch_size=16,
        hidden_size=64,
        num_layers=4,
        num_heads=4,
        mlp_dim=128,
        feature_layers=(1, 2, 3),
        resnet_num_layers=11,
        resnet_num_stages=3,
        resnet_width=32,
        image_size=64,
    ),
    # For tests: every piece present (2 fusion stages, 2 CNN stages), as
    # small as GroupNorm(32) allows; 64 px crops -> a 4x4 token grid.
    "tiny": dict(
        patch_size=16,
        hidden_size=32,
        num_layers=3,
        num_heads=2,
        mlp_dim=64,
        feature_layers=(1, 2),
        resnet_num_layers=8,
        resnet_num_stages=2,
        resnet_width=32,
        image_size=64,
    ),
}

NAMES = tuple(GLINT_SIZES)


def get_model_config(name: str) -> ml_collections.ConfigDict:
  """The hyperparameters of a registered GlintIQA size (a fresh copy)."""
  if name not in GLINT_SIZES:
    raise ValueError(f"Unknown GlintIQA size {name!r}; known: "
                     f"{sorted(GLINT_SIZES)}.")
  return ml_collections.ConfigDict(copy.deepcopy(GLINT_SIZES[name]))



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
  size = get_model_config(config.model.size).to_dict()
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

BLOCK_RE = re.compile(r"vgfe/Transformer/encoderblock_(\d+)/")


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
    m = BLOCK_RE.match(path)
    return bool(m) and int(m.group(1)) <= until

  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  return flax.traverse_util.unflatten_dict(
      {k: frozen(k) for k in flat}, sep="/")


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

