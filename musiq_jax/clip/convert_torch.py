r"""Converts PyTorch CLIP state dicts (`.pt`, `.pth`, `.bin`) to `.safetensors`.

This is the only place that needs PyTorch, and it imports it lazily: run it once,
then load the `.safetensors` file with `weights.load_clip_params` (no torch).

    python -m musiq_jax.clip.convert_torch --input LIQE.pt --output liqe.safetensors \
        [--clip ViT-B/32]

Accepted inputs (read with `torch.load(weights_only=True)`, so no pickled code
runs):
  * a bare state dict in OpenAI/open_clip names (LIQE's `LIQE.pt`, open_clip's
    `open_clip_pytorch_model.bin`) or Hugging Face `CLIPModel` names
    (`pytorch_model.bin`);
  * such a dict wrapped in a training checkpoint (`{"state_dict": ...}`,
    `{"model": ...}`, `{"model_state_dict": ...}`, `{"params": ...}`,
    `{"net": ...}`);
  * keys prefixed by DataParallel's `module.` (stripped).
Half-precision tensors (OpenAI's GPU checkpoints are fp16) are written as float32.
OpenAI's TorchScript archives (`ViT-B-32.pt` from `clip.load`'s cache) are
JIT-compiled modules, not state dicts; load them once with `torch.jit.load` and
save `model.state_dict()`, or use open_clip's or Hugging Face's released files.

With `--clip SIZE` the result is also checked against that model size and the
converter fails listing missing/unexpected keys and shape mismatches.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, Mapping

import numpy as np

from musiq_jax.clip import weights

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "params", "net", "module")


def unwrap_state_dict(obj: Mapping, source: str = "<checkpoint>") -> Mapping:
  """Finds the tensor dict inside a (possibly wrapped) checkpoint object."""
  for _ in range(3):  # wrappers nest at most a couple of levels in practice
    if not isinstance(obj, Mapping):
      raise weights.WeightLoadError(f"{source} holds a {type(obj).__name__}, not a state dict.")
    inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
    if inner is None:
      return obj
    obj = inner
  return obj


def load_torch_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint into float32 numpy arrays (needs torch)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Converting PyTorch checkpoints needs torch: "
                      "pip install torch==2.13.0 (CPU build is enough).") from e
  obj = torch.load(path, map_location="cpu", weights_only=True)
  state = unwrap_state_dict(obj, repr(path))
  out = {}
  for key, value in state.items():
    if not isinstance(value, torch.Tensor):
      continue  # e.g. an epoch counter stored beside the tensors
    out[key] = value.detach().to(torch.float32).cpu().numpy()
  if not out:
    raise weights.WeightLoadError(f"No tensors found in {path!r}.")
  return weights.strip_prefixes(out)


def convert(input_path: str, output_path: str, clip_size: str | None = None) -> int:
  """Converts `input_path` to `output_path` (.safetensors); returns the tensor count."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  state = load_torch_state_dict(input_path)
  if clip_size is not None:
    from musiq_jax.clip import model_sizes  # pylint: disable=g-import-not-at-top
    weights.state_dict_to_params(state, model_sizes.get_clip_size(clip_size),
                                 source=repr(input_path))
  save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, output_path)
  return len(state)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--input", required=True, help="PyTorch .pt/.pth/.bin file")
  parser.add_argument("--output", required=True, help="destination .safetensors file")
  parser.add_argument("--clip", default=None,
                      help="optional CLIP size to validate against, e.g. ViT-B/32")
  args = parser.parse_args(argv)
  if not args.output.endswith(".safetensors"):
    parser.error("--output must end with .safetensors")
  n = convert(args.input, args.output, args.clip)
  print(f"Wrote {n} tensors to {args.output}", file=sys.stderr)


if __name__ == "__main__":
  main()
