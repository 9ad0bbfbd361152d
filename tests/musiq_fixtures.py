"""Test helpers: original-layout MUSIQ checkpoints with random weights.

The key list is written out from the original release's module structure
(musiq/model/*.py), independently of our linen tree, so that a test loading
it checks our names and shapes against the original's.
"""

import io
from typing import Dict

import numpy as np
from PIL import Image
from skimage import data as skdata


def original_musiq_shapes(num_classes=1, num_scales=3, hidden=384, layers=14,
                          heads=6, mlp=1152, grid=10, width=64, patch=32,
                          representation_size=None) -> Dict[str, tuple]:
  """Every parameter of the original Model with its name and shape."""
  s = {
      "conv_root/kernel": (7, 7, 3, width),
      "gn_root/scale": (width,), "gn_root/bias": (width,),
  }
  unit = "block1/unit1/"
  s.update({
      unit + "conv_proj/kernel": (1, 1, width, 4 * width),
      unit + "gn_proj/scale": (4 * width,), unit + "gn_proj/bias": (4 * width,),
      unit + "conv1/kernel": (1, 1, width, width),
      unit + "gn1/scale": (width,), unit + "gn1/bias": (width,),
      unit + "conv2/kernel": (3, 3, width, width),
      unit + "gn2/scale": (width,), unit + "gn2/bias": (width,),
      unit + "conv3/kernel": (1, 1, width, 4 * width),
      unit + "gn3/scale": (4 * width,), unit + "gn3/bias": (4 * width,),
  })
  feat = (patch // 4)**2 * 4 * width
  s["embedding/kernel"] = (feat, hidden)
  s["embedding/bias"] = (hidden,)
  t = "Transformer/"
  s[t + "posembed_input/pos_embedding"] = (1, grid * grid, hidden)
  s[t + "scaleembed_input/scale_embedding"] = (1, num_scales, hidden)
  s[t + "cls"] = (1, 1, hidden)
  s[t + "encoder_norm/scale"] = (hidden,)
  s[t + "encoder_norm/bias"] = (hidden,)
  hd = hidden // heads
  for i in range(layers):
    b = f"{t}encoderblock_{i}/"
    for ln in ("LayerNorm_0", "LayerNorm_2"):
      s[b + ln + "/scale"] = (hidden,)
      s[b + ln + "/bias"] = (hidden,)
    a = b + "MultiHeadDotProductAttention_1/"
    for name in ("query", "key", "value"):
      s[a + name + "/kernel"] = (hidden, heads, hd)
      s[a + name + "/bias"] = (heads, hd)
    s[a + "out/kernel"] = (heads, hd, hidden)
    s[a + "out/bias"] = (hidden,)
    s[b + "MlpBlock_3/Dense_0/kernel"] = (hidden, mlp)
    s[b + "MlpBlock_3/Dense_0/bias"] = (mlp,)
    s[b + "MlpBlock_3/Dense_1/kernel"] = (mlp, hidden)
    s[b + "MlpBlock_3/Dense_1/bias"] = (hidden,)
  if representation_size:
    s["pre_logits/kernel"] = (hidden, representation_size)
    s["pre_logits/bias"] = (representation_size,)
  s["head/kernel"] = (representation_size or hidden, num_classes)
  s["head/bias"] = (num_classes,)
  return s


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
  if with_optimizer_state:  # Released files also carry optimizer slots.
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
