"""Shared pieces of the benchmarks: photos, weights, timing, pyiqa's MUSIQ.

pyiqa (the PyTorch MUSIQ most users would pick) cannot be pip-installed here
without pulling ~30 packages into the project's venv (pandas, numba, opencv,
bitsandbytes, ...), and its package `__init__` imports torchvision, whose PyPI
wheel does not load beside the CPU-only torch this project pins. So we run
pyiqa's *own* `pyiqa/archs/musiq_arch.py`, unmodified, from the pyiqa wheel
(`pip download pyiqa==0.1.16 --no-deps`), importing it through a bare package
object whose four helper imports are shims: `exact_padding_2d`/`ExactPadding2d`
come from pyiqa's own `matlab_utils/padding.py`; `dist_to_mos` is copied (a
weighted sum); the registry and the pretrained-URL helpers are no-ops (we load
our weights into its state dict). If pyiqa is installed and importable, the
installed module is used instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import types
import zipfile
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_ROOT, "tests"))
import musiq_fixtures  # pylint: disable=g-import-not-at-top,wrong-import-position

PYIQA_VERSION = "0.1.16"
CACHE_DIR = os.path.expanduser("~/.cache/musiq_jax_bench")

# (name, width, height): the benchmark's fixed photo sizes.
PHOTO_SIZES = (
    ("512x384", 512, 384),
    ("1024x768", 1024, 768),
    ("1600x1200", 1600, 1200),
    ("768x1024 portrait", 768, 1024),
    ("2048x512 panorama", 2048, 512),
)
_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")


def photo(width: int, height: int, index: int = 0) -> np.ndarray:
  """A real skimage photo resized (bicubic) to width x height, uint8 RGB."""
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  src = getattr(skdata, _SOURCES[index % len(_SOURCES)])()
  return np.asarray(Image.fromarray(src).resize((width, height),
                                                Image.BICUBIC))


def random_checkpoint(path: str, seed: int = 0) -> Dict[str, np.ndarray]:
  """Default 3-scale MUSIQ, random weights, original `.npz` layout."""
  shapes = musiq_fixtures.original_musiq_shapes()
  if not os.path.exists(path):
    # A fresh machine has no cache folder yet.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    musiq_fixtures.write_original_npz(path, shapes, seed)
  return musiq_fixtures.random_params(shapes, seed)


def times(fn: Callable[[], object], repeats: int) -> List[float]:
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t)
  return out


def loadavg() -> str:
  return "load average %.2f %.2f %.2f" % os.getloadavg()


def matmul_gflops(repeats: int = 5, n: int = 2048) -> Tuple[float, float]:
  """Best float32 n x n matmul GFLOP/s of (numpy, jax) on this machine."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = np.random.default_rng(0).random((n, n), np.float32)
  flops = 2.0 * n**3
  best_np = flops / min(times(lambda: a @ a, repeats)) / 1e9
  mm = jax.jit(lambda x: x @ x)
  aj = jnp.asarray(a)
  mm(aj).block_until_ready()
  best_jax = flops / min(times(lambda: mm(aj).block_until_ready(),
                               repeats)) / 1e9
  return best_np, best_jax


# ----------------------------------------------------------------------------
# pyiqa's MUSIQ.
# ----------------------------------------------------------------------------
def _pyiqa_sources() -> Tuple[str, str]:
  """(musiq_arch.py, matlab_utils/padding.py) source texts."""
  spec = importlib.util.find_spec("pyiqa")  # Finds without importing it.
  if spec is not None and spec.submodule_search_locations:
    root = list(spec.submodule_search_locations)[0]
    with open(os.path.join(root, "archs", "musiq_arch.py")) as f:
      arch = f.read()
    with open(os.path.join(root, "matlab_utils", "padding.py")) as f:
      return arch, f.read()
  wheel = os.path.join(CACHE_DIR, f"pyiqa-{PYIQA_VERSION}-py3-none-any.whl")
  if not os.path.exists(wheel):
    os.makedirs(CACHE_DIR, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                    "-q", "-d", CACHE_DIR, f"pyiqa=={PYIQA_VERSION}"],
                   check=True)
  with zipfile.ZipFile(wheel) as z:
    return (z.read("pyiqa/archs/musiq_arch.py").decode(),
            z.read("pyiqa/matlab_utils/padding.py").decode())


def pyiqa_musiq_class():
  """pyiqa's `MUSIQ` nn.Module class (pyiqa's code, shimmed imports)."""
  try:  # A working pyiqa install: use it as is.
    from pyiqa.archs import musiq_arch  # pylint: disable=g-import-not-at-top
    return musiq_arch.MUSIQ, "pyiqa (installed)"
  except Exception:  # pylint: disable=broad-except
    for name in [m for m in sys.modules if m.startswith("pyiqa")]:
      del sys.modules[name]
  import torch  # pylint: disable=g-import-not-at-top,unused-import
  arch_src, padding_src = _pyiqa_sources()

  def module(name, **attrs):
    m = types.ModuleType(name)
    m.__path__ = []  # A package, so that submodules resolve.
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m

  padding = module("pyiqa.matlab_utils.padding")
  exec(compile(padding_src, "pyiqa/matlab_utils/padding.py", "exec"),  # pylint: disable=exec-used
       padding.__dict__)

  def dist_to_mos(dist):  # Same as pyiqa.archs.arch_util.dist_to_mos.
    values = torch.arange(1, dist.shape[-1] + 1).to(dist)
    return (dist * values).sum(dim=-1, keepdim=True)

  class _Registry:

    def register(self):
      return lambda cls: cls

  module("pyiqa")
  module("pyiqa.archs")
  module("pyiqa.archs.arch_util", dist_to_mos=dist_to_mos,
         load_pretrained_network=lambda *a, **k: None,
         get_url_from_name=lambda name: name)
  module("pyiqa.matlab_utils", ExactPadding2d=padding.ExactPadding2d,
         exact_padding_2d=padding.exact_padding_2d)
  module("pyiqa.utils")
  module("pyiqa.utils.registry", ARCH_REGISTRY=_Registry())
  module("pyiqa.data")
  module("pyiqa.data.multiscale_trans_util", get_multiscale_patches=None)
  arch = module("pyiqa.archs.musiq_arch")
  arch.__package__ = "pyiqa.archs"
  exec(compile(arch_src, "pyiqa/archs/musiq_arch.py", "exec"), arch.__dict__)  # pylint: disable=exec-used
  return arch.MUSIQ, f"pyiqa {PYIQA_VERSION} musiq_arch.py (from its wheel)"


def pyiqa_state_dict(flat: Dict[str, np.ndarray], num_heads: int = 6):
  """'/'-keyed params (original or linen layout) -> pyiqa MUSIQ's state dict."""
  import torch  # pylint: disable=g-import-not-at-top
  sd = {}
  t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))

  def conv(dst, src):
    sd[dst + ".weight"] = t(np.transpose(flat[src + "/kernel"], (3, 2, 0, 1)))

  def norm(dst, src):
    # GroupNorm arrays are (1, 1, 1, C) in the original layout (flax.nn),
    # (C,) in linen; torch wants (C,). LayerNorm arrays are (C,) already.
    sd[dst + ".weight"] = t(flat[src + "/scale"].reshape(-1))
    sd[dst + ".bias"] = t(flat[src + "/bias"].reshape(-1))

  def dense(dst, src):
    k = flat[src + "/kernel"]
    sd[dst + ".weight"] = t(k.reshape(-1, k.shape[-1]).T if k.ndim == 2 else
                            k.reshape(k.shape[0], -1).T)
    sd[dst + ".bias"] = t(flat[src + "/bias"].reshape(-1))

  conv("conv_root", "conv_root")
  norm("gn_root", "gn_root")
  for name in ("conv_proj", "conv1", "conv2", "conv3"):
    conv(f"block1.{name}", f"block1/unit1/{name}")
  for name in ("gn_proj", "gn1", "gn2", "gn3"):
    norm(f"block1.{name}", f"block1/unit1/{name}")
  dense("embedding", "embedding")
  te, tr = "transformer_encoder", "Transformer"
  sd[te + ".posembed_input.position_emb"] = t(
      flat[tr + "/posembed_input/pos_embedding"])
  sd[te + ".scaleembed_input.scale_emb"] = t(
      flat[tr + "/scaleembed_input/scale_embedding"][0])
  sd[te + ".cls"] = t(flat[tr + "/cls"])
  norm(te + ".encoder_norm", tr + "/encoder_norm")
  i = 0
  while f"{tr}/encoderblock_{i}/LayerNorm_0/scale" in flat:
    src, dst = f"{tr}/encoderblock_{i}/", f"{te}.transformer.encoderblock_{i}."
    norm(dst + "norm1", src + "LayerNorm_0")
    norm(dst + "norm2", src + "LayerNorm_2")
    att = src + "MultiHeadDotProductAttention_1/"
    for name in ("query", "key", "value"):
      k = flat[att + name + "/kernel"]  # [D, H, D/H]
      sd[dst + f"attention.{name}.weight"] = t(k.reshape(k.shape[0], -1).T)
      sd[dst + f"attention.{name}.bias"] = t(
          flat[att + name + "/bias"].reshape(-1))
    k = flat[att + "out/kernel"]  # [H, D/H, D]
    sd[dst + "attention.out.weight"] = t(k.reshape(-1, k.shape[-1]).T)
    sd[dst + "attention.out.bias"] = t(flat[att + "out/bias"])
    dense(dst + "mlp.fc1", src + "MlpBlock_3/Dense_0")
    dense(dst + "mlp.fc2", src + "MlpBlock_3/Dense_1")
    i += 1
  dense("head", "head")
  return sd


def build_pyiqa(flat: Dict[str, np.ndarray], tanh_gelu: bool = False):
  """pyiqa's MUSIQ with our weights (eval mode, token input).

  `tanh_gelu`: swap pyiqa's exact-erf GELU for the original MUSIQ's tanh
  approximation (which we use), to compare scores at float tolerance.
  """
  import torch  # pylint: disable=g-import-not-at-top
  cls, origin = pyiqa_musiq_class()
  model = cls(pretrained=False, num_class=flat["head/bias"].shape[0])
  model.load_state_dict(pyiqa_state_dict(flat), strict=True)
  model.eval()
  # pyiqa's forward preprocesses images unless `training`; its own training
  # path feeds tokens like ours. Only the top module flag is flipped: every
  # submodule stays in eval mode (dropout rates are 0 anyway).
  model.training = True
  if tanh_gelu:
    for block in model.transformer_encoder.transformer.values():
      block.mlp.act = torch.nn.GELU(approximate="tanh")
  return model, origin


def pyiqa_tokens(batch: Dict[str, np.ndarray]):
  """Our padded token batch -> pyiqa's [B, L, 3075] (CHW patches) tensor."""
  import torch  # pylint: disable=g-import-not-at-top
  p = batch["patches"]
  b, l, c = p.shape
  size = int(round((c // 3)**0.5))
  chw = p.reshape(b, l, size, size, 3).transpose(0, 1, 4, 2, 3).reshape(
      b, l, c)
  extra = np.stack([batch["spatial"], batch["scale"], batch["mask"]],
                   -1).astype(np.float32)
  return torch.from_numpy(np.concatenate([chw, extra], -1))


def rss_of(code: str) -> float:
  """Peak resident memory (GB) of a fresh Python process running `code`.

  Read from the child's own `VmHWM` (/proc/self/status). Its
  `getrusage(RUSAGE_SELF).ru_maxrss` is not used: Linux carries the high-water
  mark of the forked parent's memory across `exec`, so a child started from
  this (big) benchmark process reports at least the parent's size.
  """
  wrapper = (code + "\nfor line in open('/proc/self/status'):\n"
             "  if line.startswith('VmHWM'):\n"
             "    print('VMHWM_KB', line.split()[1])\n")
  out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True,
                       text=True, cwd=_ROOT, check=False)
  for line in out.stdout.splitlines():
    if line.startswith("VMHWM_KB"):
      return int(line.split()[1]) / 1024**2
  raise RuntimeError(f"RSS probe failed:\n{out.stderr[-3000:]}")
