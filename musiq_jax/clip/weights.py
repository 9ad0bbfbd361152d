"""Imports CLIP weights from `.safetensors` files, without PyTorch.

Two layouts are understood, detected from the key names:

* OpenAI / open_clip (`visual.conv1.weight`, `transformer.resblocks.0.attn.in_proj_weight`,
  `text_projection`, ...): OpenAI's `clip` package, open_clip's `CLIP` model and
  LIQE's released checkpoint (after `convert_torch.py`).
* Hugging Face `CLIPModel` (`vision_model.encoder.layers.0.self_attn.q_proj.weight`,
  `visual_projection.weight`, ...).

A Hugging Face state dict is first renamed to the OpenAI layout (q/k/v concatenated,
Linear projections transposed), then one explicit name map turns OpenAI names into
the Flax tree of `model.CLIP`. Anything missing, unexpected or of the wrong shape
raises `WeightLoadError` naming the file and listing the offending keys: nothing is
loaded silently.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Iterable, Mapping, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musiq_jax.clip import model as clip_model

StateDict = Dict[str, np.ndarray]
FlatParams = Dict[Tuple[str, ...], np.ndarray]

# Bookkeeping entries some checkpoints carry that hold no weights: OpenAI's JIT
# archives store sizes as tensors, older transformers save position_ids buffers.
_IGNORED_KEYS = re.compile(
    r"^(input_resolution|context_length|vocab_size|attn_mask|"
    r"(text_model|vision_model)\.embeddings\.position_ids|"
    r"visual\.attn_mask|.*\.attn_mask)$")

_LISTED = 20  # keys shown per category in an error message


class WeightLoadError(ValueError):
  """A weight file does not match the model it is loaded into."""


def read_safetensors(path: str) -> StateDict:
  """Reads every tensor of a `.safetensors` file into float32 numpy arrays.

  Raises:
    FileNotFoundError: naming the missing file.
    WeightLoadError: for a file of another format (with a hint to convert it).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"CLIP weight file {path!r} does not exist.")
  if not path.endswith(".safetensors"):
    raise WeightLoadError(
        f"{path!r} is not a .safetensors file. Convert PyTorch .pt/.bin state dicts "
        "first: python -m musiq_jax.clip.convert_torch --input "
        f"{path} --output {os.path.splitext(path)[0]}.safetensors")
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  tensors = st_numpy.load_file(path)
  return {k: np.asarray(v, np.float32) for k, v in tensors.items()}


def strip_prefixes(state: Mapping[str, np.ndarray],
                   prefixes: Iterable[str] = ("module.",)) -> StateDict:
  """Drops wrapper prefixes such as DataParallel's `module.` from every key."""
  out = {}
  for key, value in state.items():
    for prefix in prefixes:
      if key.startswith(prefix):
        key = key[len(prefix):]
    out[key] = value
  return out


def detect_layout(state: Mapping[str, np.ndarray]) -> str:
  """Returns "hf" for Hugging Face `CLIPModel` names, "openai" for OpenAI/open_clip."""
  if any(k.startswith(("vision_model.", "text_model.")) for k in state):
    return "hf"
  if any(k.startswith("visual.") for k in state):
    return "openai"
  raise WeightLoadError(
      "Cannot tell the CLIP layout: no key starts with 'visual.' (OpenAI/open_clip) "
      f"or 'vision_model.'/'text_model.' (Hugging Face). First keys: {sorted(state)[:8]}")


_HF_BLOCK_RENAMES = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_HF_RENAMES = {
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic, HF's name
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
}
_HF_LAYER = re.compile(r"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)$")


def hf_to_openai(state: Mapping[str, np.ndarray]) -> StateDict:
  """Renames a Hugging Face `CLIPModel` state dict to OpenAI names.

  Keys that match no rule are passed through unchanged, so that they show up as
  unexpected keys later instead of vanishing.
  """
  out: StateDict = {}
  qkv: Dict[Tuple[str, str], Dict[str, np.ndarray]] = {}
  for key, value in state.items():
    if key in _HF_RENAMES:
      out[_HF_RENAMES[key]] = value
    elif key == "visual_projection.weight":
      out["visual.proj"] = value.T  # torch Linear stores [out, in]
    elif key == "text_projection.weight":
      out["text_projection"] = value.T
    elif m := _HF_LAYER.match(key):
      tower, layer, rest = m.groups()
      prefix = ("visual.transformer" if tower == "vision_model" else "transformer")
      prefix = f"{prefix}.resblocks.{layer}"
      if q := re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest):
        qkv.setdefault((prefix, q.group(2)), {})[q.group(1)] = value
        continue
      for old, new in _HF_BLOCK_RENAMES.items():
        if rest.startswith(old + "."):
          rest = new + rest[len(old):]
          break
      out[f"{prefix}.{rest}"] = value
    else:
      out[key] = value
  for (prefix, kind), parts in qkv.items():
    if set(parts) != {"q", "k", "v"}:
      for name, value in parts.items():  # report the incomplete triple as-is
        out[f"{prefix}.self_attn.{name}_proj.{kind}"] = value
      continue
    # OpenAI's fused in_proj stacks q, k, v along the output axis.
    out[f"{prefix}.attn.in_proj_{kind}"] = np.concatenate(
        [parts["q"], parts["k"], parts["v"]], axis=0)
  return out


def _openai_leaf(path: list[str], leaf: str, value: np.ndarray):
  """Maps the last part of an OpenAI key to (flax path, array)."""
  if leaf == "in_proj_weight":
    return path + ["in_proj", "kernel"], value.T
  if leaf == "in_proj_bias":
    return path + ["in_proj", "bias"], value
  if leaf == "weight" and path[-1] == "conv1":
    return path + ["kernel"], value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if leaf == "weight" and path[-1] == "token_embedding":
    return path + ["embedding"], value
  if leaf == "weight" and value.ndim == 1:
    return path + ["scale"], value  # LayerNorm
  if leaf == "weight" and value.ndim == 2:
    return path + ["kernel"], value.T  # Linear [out, in] -> Dense [in, out]
  return path + [leaf], value


def openai_to_flax(state: Mapping[str, np.ndarray]) -> Tuple[FlatParams, list[str]]:
  """Maps OpenAI/open_clip names to flat Flax paths of `model.CLIP`.

  Returns:
    (flat params keyed by path tuples, keys that were ignored as bookkeeping).
  """
  flat: FlatParams = {}
  ignored = []
  for key, value in state.items():
    if _IGNORED_KEYS.match(key):
      ignored.append(key)
      continue
    parts = key.split(".")
    if parts[0] == "logit_scale":
      flat[("logit_scale",)] = value.reshape(())
      continue
    tower = ["visual"] if parts[0] == "visual" else ["text"]
    parts = parts[1:] if parts[0] == "visual" else parts
    path = []
    i = 0
    while i < len(parts) - 1:
      if parts[i] == "resblocks" and i + 1 < len(parts) - 1 and parts[i + 1].isdigit():
        path.append(f"resblocks_{parts[i + 1]}")
        i += 2
      else:
        path.append(parts[i])
        i += 1
    leaf = parts[-1]
    if not path:  # a parameter directly on the tower (class_embedding, proj, ...)
      flat[tuple(tower + [leaf])] = value
      continue
    fpath, fvalue = _openai_leaf(path, leaf, value)
    flat[tuple(tower + fpath)] = fvalue
  return flat, ignored


def expected_shapes(spec: ml_collections.ConfigDict) -> Dict[Tuple[str, ...], tuple]:
  """Flat path -> shape of a freshly initialised `model.CLIP` (no FLOPs spent)."""
  module = clip_model.CLIP(spec)
  images = jnp.zeros((1, spec.image_size, spec.image_size, 3))
  ids = jnp.zeros((1, spec.context_length), jnp.int32)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), images, ids))
  flat = flax.traverse_util.flatten_dict(shapes["params"])
  return {k: tuple(v.shape) for k, v in flat.items()}


def state_dict_to_params(state: Mapping[str, np.ndarray],
                         spec: ml_collections.ConfigDict,
                         source: str = "<state dict>") -> dict:
  """Converts a CLIP state dict (either layout) to `model.CLIP` params.

  Args:
    state: tensor name -> array, OpenAI/open_clip or Hugging Face names, with or
      without a `module.` prefix.
    spec: the CLIP size the weights must fit.
    source: how to name the weights in error messages (the file path).

  Returns:
    A nested params dict (float32 jnp arrays) for `model.CLIP(spec)`.

  Raises:
    WeightLoadError: listing missing keys, unexpected keys and shape mismatches.
  """
  state = strip_prefixes(state)
  layout = detect_layout(state)
  if layout == "hf":
    state = hf_to_openai(state)
  flat, _ = openai_to_flax(state)
  want = expected_shapes(spec)
  missing = sorted("/".join(k) for k in want if k not in flat)
  unexpected = sorted("/".join(k) for k in flat if k not in want)
  mismatched = sorted(f"{'/'.join(k)}: file {tuple(v.shape)} vs model {want[k]}"
                      for k, v in flat.items() if k in want and tuple(v.shape) != want[k])
  if missing or unexpected or mismatched:
    lines = [f"CLIP weights in {source} ({layout} layout) do not fit the model "
             f"(embed_dim={spec.embed_dim}, vision {spec.vision_layers}x"
             f"{spec.vision_width}/patch {spec.patch_size}, text {spec.text_layers}x"
             f"{spec.text_width}); check config.model.clip."]
    for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatches", mismatched)):
      if keys:
        more = f" (+{len(keys) - _LISTED} more)" if len(keys) > _LISTED else ""
        lines.append(f"{len(keys)} {title}: {keys[:_LISTED]}{more}")
    raise WeightLoadError("\n".join(lines))
  params = {k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}
  return flax.traverse_util.unflatten_dict(params)


def load_clip_params(path: str, spec: ml_collections.ConfigDict) -> dict:
  """Loads `model.CLIP` params from a `.safetensors` file (either layout)."""
  return state_dict_to_params(read_safetensors(path), spec, source=repr(path))


def merge_clip_params(params: dict, clip_params: dict, name: str = "clip") -> dict:
  """Returns `params` with the subtree `name` replaced by loaded CLIP params.

  Every parameter of the subtree must be in `clip_params`; loaded parameters the
  head does not use (a tower it never calls) are left out.

  Used by the heads (LIQE, CLIP-IQA, linear probe), which hold CLIP as a
  submodule called `clip` beside their own freshly initialised parameters.
  """
  if name not in params:
    raise KeyError(f"No {name!r} subtree in params; top-level keys: {sorted(params)}")
  old = flax.traverse_util.flatten_dict(params[name])
  new = flax.traverse_util.flatten_dict(clip_params)
  missing = sorted("/".join(k) for k in set(old) - set(new))
  if missing:
    raise WeightLoadError(
        f"Loaded CLIP params lack {len(missing)} entries of the model's {name!r} "
        f"subtree: {missing[:_LISTED]}")
  # Keep only what the head uses: e.g. the linear probe has no text tower, so
  # the file's text weights are dropped rather than added as dead parameters.
  out = dict(params)
  out[name] = flax.traverse_util.unflatten_dict({k: new[k] for k in old})
  return out
