"""Prompt vocabularies of the CLIP heads (LIQE, CLIP-IQA).

These are part of each method's definition (they index released checkpoints'
joint distributions), not tunable hyperparameters, so they are constants here.
"""

from __future__ import annotations

import itertools
from typing import List, Tuple

# LIQE (Zhang et al., CVPR 2023), in the order of its released code: the joint
# prompt index is q * 99 + s * 11 + d.
LIQE_QUALITIES: Tuple[str, ...] = ("bad", "poor", "fair", "good", "perfect")
LIQE_SCENES: Tuple[str, ...] = (
    "animal", "cityscape", "human", "indoor", "landscape", "night", "plant",
    "still_life", "others")
LIQE_DISTORTIONS: Tuple[str, ...] = (
    "jpeg2000 compression", "jpeg compression", "noise", "blur", "color",
    "contrast", "overexposure", "underexposure", "spatial", "quantization", "other")
LIQE_TEMPLATE = "a photo of a {scene} with {distortion} artifacts, which is of {quality} quality"

# CLIP-IQA (Wang et al., AAAI 2023): the antonym pair, positive first.
CLIPIQA_PROMPTS: Tuple[str, str] = ("Good photo.", "Bad photo.")
CLIPIQA_ATTRIBUTE_PROMPTS = {
    "quality": ("Good photo.", "Bad photo."),
    "brightness": ("Bright photo.", "Dark photo."),
    "sharpness": ("Sharp photo.", "Blurry photo."),
    "noisiness": ("Clean photo.", "Noisy photo."),
    "colorfulness": ("Colorful photo.", "Dull photo."),
    "contrast": ("High contrast photo.", "Low contrast photo."),
}


def liqe_prompts() -> List[str]:
  """The 5 x 9 x 11 = 495 joint prompts, quality-major, then scene, then distortion."""
  return [LIQE_TEMPLATE.format(quality=q, scene=s, distortion=d)
          for q, s, d in itertools.product(LIQE_QUALITIES, LIQE_SCENES, LIQE_DISTORTIONS)]


def coop_prompts(class_prompts, n_ctx: int, placeholder: str = "X") -> List[str]:
  """Prompts for learnable context: `n_ctx` placeholder words before each class text.

  The placeholders only reserve token positions 1..n_ctx (each "X" is one BPE
  token); `TextTransformer` replaces their embeddings with the learned vectors.
  """
  prefix = " ".join([placeholder] * n_ctx)
  return [f"{prefix} {p}" if n_ctx else p for p in class_prompts]
