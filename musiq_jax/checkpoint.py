"""Reads and writes MUSIQ checkpoints in the original release's `.npz` layout.

A released checkpoint (e.g. `koniq_ckpt.npz`) is a NumPy archive whose keys
are '/'-joined parameter paths under `opt/target/` (other keys, such as the
optimizer state, are ignored). Loading is by name: the tree is rebuilt,
merged against freshly initialised params, and every missing or unexpected
key is an error that lists them, unless a `dont_load` pattern covers it (a new
head, say). Shapes are adapted at load time, not in the model, each with a
logged message:

* GroupNorm `scale`/`bias`: the original ran under `flax.nn`, whose GroupNorm
  creates them with shape (1, 1, 1, C) for MUSIQ's 4-D patch tensors
  (google/flax `flax/nn/normalization.py`); `flax.linen` (>= 0.3.6) uses
  (C,) (google/flax issue #1721). Both load: the original layout, and the
  (C,) files that earlier versions of this project exported.
* a different hash-grid size is resampled bilinearly.

`export_npz` writes the original layout back, key for key and shape for shape,
so an exported file is one the original `run_predict_image.py` can read.
The evidence for each layout fact is in docs/checkpoints.md.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np

from musiq_jax.models import glint
from musiq_jax.models import resnet

PREFIX = "opt/target/"
_POSEMB = "Transformer/posembed_input/pos_embedding"
# GroupNorm parameters by module name (gn_root, gn_proj, gn1, gn2, gn3 in
# musiq/model/resnet.py), the rule of vision_transformer's
# `vit_jax/checkpoint.py:_fix_groupnorm`; a prefix (e.g. GlintIQA's "clfe/")
# is allowed.
_GROUPNORM = re.compile(r"(?:.*/)?gn(?:\d+|_root|_proj)/(?:scale|bias)")
# flax.nn's GroupNorm shape for a 4-D [N, H, W, C] input: (1, 1, 1, C).
_FLAX_NN_GN_LEAD = (1, 1, 1)


class CheckpointError(ValueError):
  """A checkpoint that cannot be used; the message names the file."""


def flatten(tree: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
  return {k: v for k, v in flat.items()}


def unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/")


def read_npz(path: str) -> Dict[str, np.ndarray]:
  """All arrays of an `.npz` file, read without pickle; errors name the file."""
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: checkpoint file not found")
  if os.path.getsize(path) == 0:
    raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
  if not zipfile.is_zipfile(path):
    raise CheckpointError(
        f"{path}: not an .npz checkpoint (not a zip archive; truncated "
        "download or wrong file?)")
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: np.asarray(data[k]) for k in data.files}
  except ValueError as e:
    raise CheckpointError(f"{path}: holds pickled objects, which are not "
                          f"loaded for safety ({e})") from None
  except (OSError, zipfile.BadZipFile, EOFError) as e:
    raise CheckpointError(f"{path}: corrupt .npz archive ({e})") from None


def is_groupnorm(key: str) -> bool:
  """Whether a '/'-joined param path is a GroupNorm scale or bias."""
  return _GROUPNORM.fullmatch(key) is not None


def to_original_layout(flat: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Flat params in the released files' layout: GroupNorm (C,) -> (1,1,1,C).

  The inverse of `to_model_layout`; every other array is unchanged.
  """
  out = {}
  for k, v in flat.items():
    v = np.asarray(v)
    if is_groupnorm(k) and v.ndim == 1:
      v = v.reshape(_FLAX_NN_GN_LEAD + v.shape)
    out[k] = v
  return out


def to_model_layout(flat: Mapping[str, Any], source: str = "checkpoint",
                    log: bool = True) -> Dict[str, np.ndarray]:
  """Flat params in the linen model's layout: GroupNorm (1,1,1,C) -> (C,).

  GroupNorm arrays already of shape (C,) (files exported by earlier versions
  of this project) are kept; any other shape is left for `merge_params` to
  report as a mismatch.

  Args:
    flat: flat '/'-keyed arrays.
    source: the file, for the log message.
    log: log which GroupNorm layout was read.

  Returns:
    A new dict; arrays are not copied unless reshaped.
  """
  out, squeezed, kept = {}, 0, 0
  for k, v in flat.items():
    v = np.asarray(v)
    if is_groupnorm(k):
      if v.ndim == 4 and v.shape[:3] == _FLAX_NN_GN_LEAD:
        v = v.reshape(v.shape[-1:])
        squeezed += 1
      elif v.ndim == 1:
        kept += 1
    out[k] = v
  if log and (squeezed or kept):
    if squeezed and not kept:
      layout = "the original flax.nn layout (1, 1, 1, C)"
    elif kept and not squeezed:
      layout = "the (C,) layout of earlier musiq_jax exports"
    else:
      layout = f"mixed layouts ({squeezed} as (1, 1, 1, C), {kept} as (C,))"
    logging.info("%s: %d GroupNorm scale/bias arrays in %s; loaded as (C,).",
                 source, squeezed + kept, layout)
  return out


def check_dtypes(flat: Mapping[str, np.ndarray], source: str) -> None:
  """Raises a CheckpointError for arrays that are not floating point.

  float16/bfloat16/float32/float64 arrays load (cast to the model's dtype,
  logged by `merge_params`). But NumPy has no bfloat16 of its own:
  `np.savez` writes an ml_dtypes bfloat16 array as raw 2-byte records
  (dtype '|V2'), which read back as bytes that do not say what they hold.
  """
  def floating(v):
    return jnp.issubdtype(v.dtype, jnp.floating)

  raw = sorted(k for k, v in flat.items()
               if v.dtype.kind == "V" and not floating(v))
  other = sorted(f"{k} ({v.dtype})" for k, v in flat.items()
                 if v.dtype.kind != "V" and not floating(v))
  lines = []
  if raw:
    lines.append(
        f"{source}: {len(raw)} array(s) hold raw {flat[raw[0]].dtype.itemsize}"
        f"-byte records (dtype {flat[raw[0]].dtype.str!r}), not numbers: "
        f"{', '.join(raw[:5])}{', ...' if len(raw) > 5 else ''}. This is how "
        "np.savez stores bfloat16 arrays; convert them before saving "
        "(`v.astype(np.float32)`), or, if you know they are bfloat16, read "
        "them with `v.view(ml_dtypes.bfloat16).astype(np.float32)` and "
        "save the file again.")
  if other:
    lines.append(f"{source}: parameters must be floating point; found "
                 + ", ".join(other[:5]) + (", ..." if len(other) > 5 else ""))
  if lines:
    raise CheckpointError("\n".join(lines))


def read_params(path: str) -> Dict[str, np.ndarray]:
  """Flat '/'-keyed params under `opt/target/` of an original-layout `.npz`.

  Returned in the linen model's layout (`to_model_layout`): GroupNorm arrays
  as (C,), whichever of the two layouts the file has. Other entries (the
  optimizer state under `opt/state/`) are ignored.
  """
  arrays = read_npz(path)
  params = {k[len(PREFIX):]: v for k, v in arrays.items()
            if k.startswith(PREFIX)}
  if not params:
    sample = ", ".join(sorted(arrays)[:5]) or "no arrays"
    raise CheckpointError(f"{path}: no parameters under '{PREFIX}' (found: "
                          f"{sample}); is this a MUSIQ checkpoint?")
  check_dtypes(params, path)
  return to_model_layout(params, source=path)


def _matches(key: str, patterns: Sequence[str]) -> bool:
  return any(re.fullmatch(p, key) or re.match(p, key) for p in patterns)


def resample_posemb(table: np.ndarray, new_grid: int) -> np.ndarray:
  """Bilinearly resamples a [1, G*G, D] hash table to [1, G'*G', D]."""
  old_grid = int(round(np.sqrt(table.shape[1])))
  grid = table.reshape(old_grid, old_grid, -1)
  out = jax.image.resize(grid, (new_grid, new_grid, grid.shape[-1]),
                         method="bilinear")
  return np.asarray(out, table.dtype).reshape(1, new_grid * new_grid, -1)


def merge_params(loaded: Mapping[str, np.ndarray],
                 init_params: Mapping[str, Any],
                 dont_load: Sequence[str] = (),
                 source: str = "checkpoint") -> Dict[str, Any]:
  """Merges flat loaded params into an initialised tree, by name.

  Args:
    loaded: flat '/'-keyed arrays (e.g. from `read_params`).
    init_params: the model's freshly initialised params (a nested tree).
    dont_load: regex patterns of keys to keep from `init_params` (matched at
      the start of the key), e.g. `("head/.*",)` for a new head.
    source: name of the file, for messages.

  Returns:
    A nested params tree with the init tree's structure and dtypes.

  Raises:
    CheckpointError: listing missing keys, unexpected keys and shape
      mismatches that no `dont_load` pattern covers.
  """
  init_flat = flatten(init_params)
  # Arrays straight from a file (not via `read_params`) may still have the
  # original GroupNorm layout.
  loaded = to_model_layout(loaded, source, log=False)
  check_dtypes(loaded, source)
  missing = [k for k in init_flat
             if k not in loaded and not _matches(k, dont_load)]
  unexpected = [k for k in loaded
                if k not in init_flat and not _matches(k, dont_load)]
  merged, mismatched, cast = {}, [], set()
  for k, init_v in init_flat.items():
    if k not in loaded or _matches(k, dont_load):
      merged[k] = init_v
      continue
    v = np.asarray(loaded[k])
    if v.shape != init_v.shape and k.endswith(_POSEMB) and v.ndim == 3:
      new_grid = int(round(np.sqrt(init_v.shape[1])))
      logging.info("%s: resampling %s from %s to %s", source, k, v.shape,
                   init_v.shape)
      v = resample_posemb(v, new_grid)
    if v.shape != init_v.shape:
      mismatched.append(f"{k}: checkpoint {v.shape} vs model {init_v.shape}")
      continue
    if v.dtype != init_v.dtype:
      cast.add(f"{v.dtype} -> {np.dtype(init_v.dtype)}")
    merged[k] = v.astype(init_v.dtype)
  if cast:
    logging.info("%s: parameters cast (%s).", source, ", ".join(sorted(cast)))
  if missing or unexpected or mismatched:
    lines = [f"{source}: parameters do not match the model."]
    if missing:
      lines.append(f"  missing from the checkpoint ({len(missing)}): " +
                   ", ".join(sorted(missing)))
    if unexpected:
      lines.append(f"  unexpected in the checkpoint ({len(unexpected)}): " +
                   ", ".join(sorted(unexpected)))
    if mismatched:
      lines.append("  shape mismatches: " + "; ".join(mismatched))
    lines.append("  Hint: check the model config (size, num_classes, number "
                 "of scales), or pass dont_load patterns for parts to "
                 "re-initialise (e.g. 'head/.*').")
    raise CheckpointError("\n".join(lines))
  return unflatten(merged)


def load_params(path: str, init_params: Mapping[str, Any],
                dont_load: Sequence[str] = ()) -> Dict[str, Any]:
  """Reads `path` and merges it into `init_params` (see `merge_params`)."""
  return merge_params(read_params(path), init_params, dont_load, source=path)


def export_npz(params: Mapping[str, Any], path: str) -> None:
  """Writes params in the original layout: `opt/target/...` keys, GroupNorm
  scale/bias as (1, 1, 1, C), as the released checkpoints."""
  flat = {PREFIX + k: v for k, v in to_original_layout(
      {k: jax.device_get(v) for k, v in flatten(params).items()}).items()}
  tmp = path + ".tmp.npz"
  np.savez(tmp, **flat)
  os.replace(tmp, path)  # Never leave a half-written checkpoint behind.


def sidecar_path(npz_path: str) -> str:
  """Path of the JSON with preprocessing + model config beside an export."""
  return os.path.splitext(npz_path)[0] + ".json"


def write_sidecar(npz_path: str, info: Mapping[str, Any]) -> None:
  with open(sidecar_path(npz_path), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)


def read_sidecar(npz_path: str) -> Optional[Dict[str, Any]]:
  path = sidecar_path(npz_path)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{path}: unreadable config beside the checkpoint "
                          f"({e})") from None


def infer_model_config(flat: Mapping[str, np.ndarray]) -> Dict[str, Any]:
  """Backbone hyperparameters read off a flat MUSIQ param dict's shapes."""
  def shape(key):
    if key not in flat:
      raise CheckpointError(f"not a MUSIQ checkpoint: no '{key}'")
    return flat[key].shape

  layers = {int(m.group(1)) for k in flat
            for m in [re.match(r"Transformer/encoderblock_(\d+)/", k)] if m}
  query = shape("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/"
                "query/kernel")
  cfg = dict(
      num_classes=int(shape("head/kernel")[-1]),
      hidden_size=int(shape("embedding/kernel")[-1]),
      num_layers=len(layers),
      num_heads=int(query[1]),
      mlp_dim=int(shape("Transformer/encoderblock_0/MlpBlock_3/Dense_0/"
                        "kernel")[-1]),
      spatial_pos_grid_size=int(round(np.sqrt(shape(_POSEMB)[1]))),
      use_scale_emb="Transformer/scaleembed_input/scale_embedding" in flat,
      representation_size=(int(flat["pre_logits/kernel"].shape[-1])
                           if "pre_logits/kernel" in flat else None),
  )
  cfg["num_scales"] = (
      int(flat["Transformer/scaleembed_input/scale_embedding"].shape[1])
      if cfg["use_scale_emb"] else 1)
  if "conv_root/kernel" in flat:
    cfg["resnet_width"] = int(flat["conv_root/kernel"].shape[-1])
    # RGB (or "mscn": same shapes, the sidecar tells), or RGB + its MSCN
    # coefficients (musiq.Model.patch_input).
    in_channels = int(flat["conv_root/kernel"].shape[-2])
    if in_channels not in (3, 6):
      raise CheckpointError(f"patch ResNet root takes {in_channels} "
                            "channels; expected 3 (RGB) or 6 (RGB + MSCN)")
    cfg["patch_input"] = "rgb" if in_channels == 3 else "rgb_mscn"
    # Not visible in the shapes: the original's 32 unless a sidecar says.
    cfg["resnet_num_groups"] = 32
    units = {}
    for k in flat:
      m = re.match(r"block(\d+)/unit(\d+)/", k)
      if m:
        units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    blocks = tuple(len(units[s]) for s in sorted(units))
    bottleneck = any(re.match(r"block\d+/unit\d+/conv1/", k) for k in flat)
    depths = [0] if not blocks else [
        n for n in resnet.SUPPORTED_DEPTHS
        if resnet.get_block_desc(n) == (blocks, bottleneck)]
    if not depths:
      raise CheckpointError(
          f"patch ResNet with stages {blocks} (bottleneck={bottleneck}) "
          "matches no supported depth")
    cfg["resnet_num_layers"] = depths[0]
  else:
    cfg["resnet_num_layers"] = None
    # Raw pixels: the embedding takes P*P*3 (RGB) or P*P*6 (RGB + MSCN).
    width = int(shape("embedding/kernel")[0])
    is_square = lambda v: v > 0 and round(np.sqrt(v))**2 == v
    cfg["patch_input"] = ("rgb_mscn" if width % 6 == 0 and
                          is_square(width // 6) else "rgb")
  return cfg


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
      `read_params` returns).
    init_params: freshly initialised GlintIQA params.
    load_patch_resnet: also load the CLFE root and block1/unit1.

  Returns:
    The merged params tree.

  Raises:
    CheckpointError: widths differ, the checkpoint has fewer
      blocks than the ViT builds, or shapes (heads, MLP) do not match.
  """
  source = musiq if isinstance(musiq, str) else "MUSIQ params"
  flat = read_params(musiq) if isinstance(musiq, str) else musiq
  width_key = "Transformer/encoderblock_0/LayerNorm_0/scale"
  if width_key not in flat:
    raise CheckpointError(
        f"{source}: no '{width_key}'; is this a MUSIQ checkpoint?")
  ours = int(np.shape(init_params["vgfe"]["cls"])[-1])
  theirs = int(np.shape(flat[width_key])[0])
  if ours != theirs:
    raise CheckpointError(
        f"{source}: MUSIQ width {theirs} != GlintIQA hidden_size {ours}; the "
        "transformer blocks only load into a ViT of the same width (size "
        "'vit_musiq_r50' for the released MUSIQ).")
  built = {int(m.group(1)) for k in flatten(init_params)
           for m in [glint.BLOCK_RE.match(k)] if m}
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
  return merge_params(loaded, init_params, dont_load, source=source)
