"""Reference (PyTorch) CLIP implementations for the oracle tests.

open_clip is the reference for the OpenAI/open_clip layout and the tokenizer;
Hugging Face transformers for the `CLIPModel` layout.

Why the import dance: PyPI's torchvision wheels are CUDA builds whose C ops fail
to register beside the CPU-only torch==2.13.0 this project pins (`import
torchvision` raises `RuntimeError: operator torchvision::nms does not exist`),
and both open_clip's package `__init__` (through its image transforms and timm)
and transformers (which probes torchvision when it is installed) import it. The
model-building modules do not need it: open_clip's `model.py` needs torchvision
only for the `FrozenBatchNorm2d` class name (used when freezing ResNet towers).
So we
  * import transformers while torchvision is hidden (`sys.modules[...] = None`,
    which makes `import torchvision` an ImportError and `find_spec` None);
  * import `open_clip.model` and `open_clip.tokenizer` through a bare package
    object, without running `open_clip/__init__.py`, with timm hidden and a
    stand-in `torchvision.ops.misc.FrozenBatchNorm2d`;
  * put `sys.modules` back afterwards, so nothing else in the process sees the
    stand-ins. If a working torchvision is installed, none of this is needed and
    the real modules are used.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import types

_HIDDEN = ("torchvision", "timm")


def _torchvision_works() -> bool:
  try:
    import torchvision  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    return True
  except Exception:  # pylint: disable=broad-except
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
      del sys.modules[name]
    return False


@functools.lru_cache(maxsize=None)
def modules():
  """Returns (open_clip.model, open_clip.tokenizer, transformers, open_clip dir)."""
  import torch  # pylint: disable=g-import-not-at-top
  saved = {name: sys.modules.get(name, "absent") for name in
           ("torchvision", "torchvision.ops", "torchvision.ops.misc", "timm", "open_clip")}
  try:
    if not _torchvision_works():
      sys.modules["torchvision"] = None
      sys.modules["timm"] = None
    transformers = importlib.import_module("transformers")
    transformers.CLIPModel  # pylint: disable=pointless-statement  (forces the lazy import)
    if sys.modules.get("torchvision") is None:
      tv = types.ModuleType("torchvision")
      ops = types.ModuleType("torchvision.ops")
      misc = types.ModuleType("torchvision.ops.misc")

      class FrozenBatchNorm2d(torch.nn.Module):  # stand-in, never instantiated here
        pass

      misc.FrozenBatchNorm2d = FrozenBatchNorm2d
      tv.ops, ops.misc = ops, misc
      sys.modules.update({"torchvision": tv, "torchvision.ops": ops,
                          "torchvision.ops.misc": misc})
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
      raise ImportError("open_clip_torch is not installed: pip install -e '.[oracle]'")
    directory = os.path.dirname(spec.origin)
    pkg = types.ModuleType("open_clip")
    pkg.__path__ = [directory]
    pkg.__spec__ = spec  # keeps importlib.util.find_spec("open_clip") working
    sys.modules["open_clip"] = pkg
    oc_model = importlib.import_module("open_clip.model")
    oc_tokenizer = importlib.import_module("open_clip.tokenizer")
  finally:
    for name, module in saved.items():
      if name == "open_clip":
        continue  # keep the bare package so open_clip.* submodules stay importable
      if module == "absent":
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module
  return oc_model, oc_tokenizer, transformers, directory


def open_clip_model(vision_layers, vision_width, patch_size, text_layers, text_width,
                    text_heads, embed_dim, quick_gelu=True, seed=0):
  """A randomly initialised open_clip `CLIP` in eval mode."""
  import torch  # pylint: disable=g-import-not-at-top
  oc_model, _, _, _ = modules()
  torch.manual_seed(seed)
  model = oc_model.CLIP(
      embed_dim=embed_dim,
      vision_cfg=dict(image_size=224, layers=vision_layers, width=vision_width,
                      patch_size=patch_size, head_width=64),
      text_cfg=dict(context_length=77, vocab_size=49408, width=text_width,
                    heads=text_heads, layers=text_layers),
      quick_gelu=quick_gelu)
  model.eval()
  # open_clip initialises the LayerNorms to (1, 0) and biases to zero; randomise
  # them too, so that a swapped scale/bias or a dropped bias cannot pass.
  with torch.no_grad():
    gen = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
      if name.endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_pre.weight",
                        "ln_post.weight", "ln_final.weight")):
        p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return model


def hf_clip_model(vision_layers, vision_width, patch_size, vision_heads, text_layers,
                  text_width, text_heads, embed_dim, seed=0):
  """A randomly initialised Hugging Face `CLIPModel` in eval mode."""
  import torch  # pylint: disable=g-import-not-at-top
  _, _, transformers, _ = modules()
  torch.manual_seed(seed)
  config = transformers.CLIPConfig(
      text_config=dict(hidden_size=text_width, intermediate_size=4 * text_width,
                       num_hidden_layers=text_layers, num_attention_heads=text_heads,
                       max_position_embeddings=77, vocab_size=49408,
                       hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407),
      vision_config=dict(hidden_size=vision_width, intermediate_size=4 * vision_width,
                         num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                         image_size=224, patch_size=patch_size, hidden_act="quick_gelu"),
      projection_dim=embed_dim)
  model = transformers.CLIPModel(config)
  model.eval()
  with torch.no_grad():
    gen = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        p.add_(0.1 * torch.randn(p.shape, generator=gen))
  return model


def save_safetensors(model, path):
  """Saves a torch model's state dict as .safetensors (float32, contiguous)."""
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top
  state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
           if not k.endswith("attn_mask")}
  save_file(state, path)
  return path


def bpe_gz_path() -> str:
  """open_clip's packaged BPE vocabulary (bpe_simple_vocab_16e6.txt.gz)."""
  # Located without importing open_clip (which needs the import dance above).
  spec = importlib.util.find_spec("open_clip")
  if spec is None:
    raise ImportError("open_clip_torch is not installed: pip install -e '.[oracle]'")
  return os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")
