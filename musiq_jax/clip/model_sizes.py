"""Registry of CLIP sizes, including a tiny one for tests.

Sizes are data, so they live in this one registry (like `vit_jax/configs/models.py`)
and configs name them (`config.model.clip = "ViT-B/32"`). The numbers of the real
sizes are those of OpenAI's released CLIP models; `tests/test_clip_model.py` checks
the parameter counts against the reference implementation.
"""

from __future__ import annotations

import ml_collections

_SIZES = {
    # OpenAI ViT-B/32: 12 x 768 image tower on 7x7 patches of 32, 12 x 512 text
    # tower; QuickGELU is what the released weights (and LIQE's) were trained with.
    "ViT-B/32": dict(
        embed_dim=512, image_size=224, patch_size=32, vision_width=768,
        vision_layers=12, vision_heads=12, text_width=512, text_layers=12,
        text_heads=8, context_length=77, vocab_size=49408, act="quick_gelu"),
    "ViT-B/16": dict(
        embed_dim=512, image_size=224, patch_size=16, vision_width=768,
        vision_layers=12, vision_heads=12, text_width=512, text_layers=12,
        text_heads=8, context_length=77, vocab_size=49408, act="quick_gelu"),
    # Tiny: the real vocabulary and context (so real tokenizers and prompts work)
    # but narrow, shallow towers so a CPU test trains it in seconds.
    "tiny": dict(
        embed_dim=32, image_size=224, patch_size=32, vision_width=64,
        vision_layers=2, vision_heads=2, text_width=32, text_layers=2,
        text_heads=2, context_length=77, vocab_size=49408, act="quick_gelu"),
}


def list_clip_sizes() -> list[str]:
  """Returns the names of the registered CLIP sizes."""
  return sorted(_SIZES)


def get_clip_size(name: str, **overrides) -> ml_collections.ConfigDict:
  """Returns the hyperparameters of a registered CLIP size.

  Args:
    name: a registered size, e.g. "ViT-B/32", "ViT-B/16" or "tiny".
    **overrides: fields to replace (e.g. `act="gelu"` for open_clip models
      trained without QuickGELU).

  Raises:
    ValueError: for an unknown size or override.
  """
  if name not in _SIZES:
    raise ValueError(
        f"Unknown CLIP size {name!r}; registered sizes: {list_clip_sizes()}.")
  spec = dict(_SIZES[name])
  unknown = set(overrides) - set(spec)
  if unknown:
    raise ValueError(f"Unknown CLIP size fields {sorted(unknown)}; "
                     f"known: {sorted(spec)}.")
  spec.update(overrides)
  return ml_collections.ConfigDict(spec)
