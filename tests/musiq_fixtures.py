"""Test helpers: original-layout MUSIQ checkpoints with random weights.

`original_musiq_shapes` writes out, key by key, the parameters the original
release creates, from the rules of the code that wrote those files --
google-research/google-research `musiq/model/*.py` run under `flax.nn` of
flax 0.3.3 (`musiq/requirements.txt`) -- and not from our linen model, so
that a test loading it checks our names and shapes against the original's.
docs/checkpoints.md gives the same table with the evidence for each row.

The rules (source file: what in it):
  [NAME]  google/flax flax/nn/base.py (`Module.__new__`): a submodule called
          without `name=` is named `f"{ClassName}_{n}"`, n counting the
          unnamed submodules of its parent in call order; `partial` keeps the
          class name (`PartialModule.__name__ = class_.__name__`), so
          `nn.SelfAttention` is a `MultiHeadDotProductAttention`. Functions
          (`nn.dropout`, `nn.gelu`, `nn.relu`, `nn.max_pool`) are not modules
          and take no number. Stored shapes must equal the requested ones
          (`Module.param`: "Existing shape ... differs from requested").
  [CONV]  flax/nn/linear.py `Conv`: kernel `kernel_size + (in, features)`;
          musiq/model/resnet.py `StdConv(..., bias=False)`: no bias.
  [GN]    flax/nn/normalization.py `GroupNorm`: scale and bias of shape
          `(1,) * (ndim - 1) + (C,)`; the patches are 4-D (musiq/model/
          multiscale_transformer.py reshapes them to [-1, P, P, 3] before
          `conv_root`), so (1, 1, 1, C).
  [LN]    flax/nn/normalization.py `LayerNorm`: scale, bias (features,).
  [DENSE] flax/nn/linear.py `Dense`: kernel (in, features), bias (features,).
  [DG]    flax/nn/attention.py `MultiHeadDotProductAttention`: `query`, `key`,
          `value` are `DenseGeneral(features=(num_heads, head_dim))`: kernel
          (D, H, D/H), bias (H, D/H); `out` is `DenseGeneral(axis=(-2, -1),
          features=D)`: kernel (H, D/H, D), bias (D,) (flax/nn/linear.py
          `DenseGeneral`: kernel = input dims of `axis` + features).
  [EMB]   musiq/model/multiscale_transformer_utils.py: `pos_embedding`
          (1, G*G, D) (`AddHashSpatialPositionEmbs`), `scale_embedding`
          (1, num_scales, D) (`AddScaleEmbs`), `cls` (1, 1, D) (`Encoder`).
  [RES]   musiq/model/resnet.py `ResidualUnit`: bottleneck; `conv_proj` /
          `gn_proj` when the input width differs from 4 * width;
          `get_block_desc(5) == ([1], True)`: one stage `block1`, one unit.
  [TREE]  musiq/model/multiscale_transformer.py `Model`: `conv_root`,
          `gn_root`, `block1`, `embedding`, `Transformer`, `pre_logits`,
          `head`; `pre_logits` is an `IdentityLayer` (no parameters) unless
          representation_size, so the file has no key for it
          (musiq/run_predict_image.py sets `params['pre_logits'] = {}`).
  [FILE]  musiq/run_predict_image.py: the `.npz` keys are '/'-joined paths
          read as `params['opt']['target']`; other entries (`opt/state/...`,
          the optimizer) are not parameters.
"""

import io
from typing import Dict

import numpy as np
from PIL import Image
from skimage import data as skdata

# musiq/run_predict_image.py `_MODEL_CONFIG` (and resnet.py's width 64).
RELEASED = dict(hidden=384, layers=14, heads=6, mlp=1152, grid=10, width=64,
                patch=32)
# Keys of the default released model (3 scales, num_classes 1); see
# `original_musiq_shapes` for how they add up.
NUM_RELEASED_KEYS = 248


def original_musiq_shapes(num_classes=1, num_scales=3, hidden=384, layers=14,
                          heads=6, mlp=1152, grid=10, width=64, patch=32,
                          representation_size=None) -> Dict[str, tuple]:
  """Every parameter of the original Model with its name and shape.

  3 (root) + 12 (block1/unit1) + 2 (embedding) + 5 (Transformer) + 16 per
  encoder block + 2 (head) = 248 keys for the released 14-layer model.
  """
  gn = lambda c: (1, 1, 1, c)  # [GN]
  d, w, hd = hidden, width, hidden // heads
  s = {
      "conv_root/kernel": (7, 7, 3, w),  # [CONV] 7x7 stride 2, no bias.
      "gn_root/scale": gn(w), "gn_root/bias": gn(w),  # [GN]
  }
  u = "block1/unit1/"  # [RES] bottleneck: nout = 4 * width.
  s.update({
      u + "conv_proj/kernel": (1, 1, w, 4 * w),  # [CONV] projection.
      u + "gn_proj/scale": gn(4 * w), u + "gn_proj/bias": gn(4 * w),
      u + "conv1/kernel": (1, 1, w, w),  # [CONV]
      u + "gn1/scale": gn(w), u + "gn1/bias": gn(w),
      u + "conv2/kernel": (3, 3, w, w),  # [CONV]
      u + "gn2/scale": gn(w), u + "gn2/bias": gn(w),
      u + "conv3/kernel": (1, 1, w, 4 * w),  # [CONV]
      u + "gn3/scale": gn(4 * w), u + "gn3/bias": gn(4 * w),
  })
  # [DENSE] on the flattened ResNet output: stride 2 (conv_root) x 2
  # (max_pool) -> (P/4)^2 positions of 4 * width channels.
  s["embedding/kernel"] = ((patch // 4)**2 * 4 * w, d)
  s["embedding/bias"] = (d,)
  t = "Transformer/"
  s[t + "posembed_input/pos_embedding"] = (1, grid * grid, d)  # [EMB]
  s[t + "scaleembed_input/scale_embedding"] = (1, num_scales, d)  # [EMB]
  s[t + "cls"] = (1, 1, d)  # [EMB]
  s[t + "encoder_norm/scale"] = (d,)  # [LN]
  s[t + "encoder_norm/bias"] = (d,)
  for i in range(layers):
    # [NAME] Encoder1DBlock calls LayerNorm, SelfAttention, LayerNorm,
    # MlpBlock unnamed: _0.._3; MlpBlock's two Dense: Dense_0, Dense_1.
    b = f"{t}encoderblock_{i}/"
    for ln in ("LayerNorm_0", "LayerNorm_2"):
      s[b + ln + "/scale"] = (d,)  # [LN]
      s[b + ln + "/bias"] = (d,)
    a = b + "MultiHeadDotProductAttention_1/"
    for name in ("query", "key", "value"):
      s[a + name + "/kernel"] = (d, heads, hd)  # [DG]
      s[a + name + "/bias"] = (heads, hd)
    s[a + "out/kernel"] = (heads, hd, d)  # [DG]
    s[a + "out/bias"] = (d,)
    s[b + "MlpBlock_3/Dense_0/kernel"] = (d, mlp)  # [DENSE]
    s[b + "MlpBlock_3/Dense_0/bias"] = (mlp,)
    s[b + "MlpBlock_3/Dense_1/kernel"] = (mlp, d)
    s[b + "MlpBlock_3/Dense_1/bias"] = (d,)
  if representation_size:  # [TREE] else pre_logits has no parameters.
    s["pre_logits/kernel"] = (d, representation_size)
    s["pre_logits/bias"] = (representation_size,)
  s["head/kernel"] = (representation_size or d, num_classes)  # [DENSE]
  s["head/bias"] = (num_classes,)
  return s


def linen_layout(flat: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Original-layout params as flax.linen (>= 0.3.6) holds them: GroupNorm
  scale/bias (C,) instead of (1, 1, 1, C) (google/flax issue #1721).

  Written here, apart from musiq_jax.checkpoint, so that tests building a
  model straight from fixture params do not rely on the loader under test.
  """
  out = {}
  for k, v in flat.items():
    leaf = k.split("/")
    if len(leaf) > 1 and leaf[-2].startswith("gn") and np.ndim(v) == 4:
      v = np.reshape(v, np.shape(v)[-1:])
    out[k] = v
  return out


TINY = dict(hidden=32, layers=2, heads=2, mlp=64, width=32)


def random_params(shapes, seed=0) -> Dict[str, np.ndarray]:
  """Random weights of plausible scale (so scores vary between images)."""
  rng = np.random.default_rng(seed)
  out = {}
  for k, shape in shapes.items():
    if k.endswith("scale") and "embedding" not in k:
      v = 1.0 + 0.1 * rng.standard_normal(shape)
    elif k.endswith("bias"):
      v = 0.1 * rng.standard_normal(shape)
    else:
      fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
      v = rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
    out[k] = v.astype(np.float32)
  return out


def write_original_npz(path, shapes, seed=0, with_optimizer_state=True):
  params = random_params(shapes, seed)
  arrays = {"opt/target/" + k: v for k, v in params.items()}
  # Entries beside opt/target (the optimizer's state) are not parameters
  # ([FILE]); pyiqa's scripts/convert_musiq_to_pth.py also keeps only the
  # keys with 'target' of the released files.
  if with_optimizer_state:
    arrays["opt/state/step"] = np.array(1000, np.int32)
    arrays["opt/state/param_states/head/kernel/momentum"] = np.zeros(
        shapes["head/kernel"], np.float32)
  np.savez(path, **arrays)
  return params


def photo(name="chelsea"):
  return getattr(skdata, name)()


def write_jpeg(path, array, quality=90):
  Image.fromarray(array).save(path, format="JPEG", quality=quality)
  return path
