"""CLIP heads for IQA: LIQE, CLIP-IQA (zero-shot and CoOp) and a linear probe.

Each head holds the CLIP model as the submodule `clip` (so `weights.merge_clip_params`
can drop imported weights in) and returns logits or scores; losses live in
`losses.py`, read-outs (marginals, scores) in the functions below.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from musiq_jax.clip import model as clip_model
from musiq_jax.clip import prompts

Array = jax.Array
Dtype = Any

NUM_QUALITIES = len(prompts.LIQE_QUALITIES)
NUM_SCENES = len(prompts.LIQE_SCENES)
NUM_DISTORTIONS = len(prompts.LIQE_DISTORTIONS)


def _encode_crops(clip: clip_model.CLIP, images: Array) -> tuple[Array, int]:
  """Encodes [B, H, W, 3] or [B, N, H, W, 3] images; returns ([B*N, E], N)."""
  if images.ndim == 4:
    images = images[:, None]
  if images.ndim != 5:
    raise ValueError(f"Expected [B, H, W, 3] or [B, N, H, W, 3] images, got {images.shape}.")
  b, n = images.shape[:2]
  feats = clip.encode_image(images.reshape(b * n, *images.shape[2:]))
  return clip_model.l2_normalize(feats), n


class LIQE(nn.Module):
  """LIQE: CLIP similarities to the 495 joint quality/scene/distortion prompts.

  `__call__(images, prompt_ids)` returns logits [B, 495] = logit_scale * cos(image,
  prompt), averaged over the crops when images are [B, N, 224, 224, 3] (LIQE
  averages logits, not probabilities, over its 15 test crops). The whole CLIP,
  text tower included, is trained, so text features are recomputed every call.

  Attributes:
    spec: the CLIP size (`model_sizes.get_clip_size`).
    dtype: computation dtype.
  """
  spec: ml_collections.ConfigDict
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Array, prompt_ids: Array) -> Array:
    clip = clip_model.CLIP(self.spec, dtype=self.dtype, name="clip")
    img, n = _encode_crops(clip, images)
    txt = clip_model.l2_normalize(clip.encode_text(prompt_ids))
    scale = jnp.exp(clip.logit_scale)
    logits = scale * img @ txt.T
    return logits.reshape(-1, n, logits.shape[-1]).mean(axis=1)


def liqe_marginals(logits: Array) -> Dict[str, Array]:
  """Softmax over the 495 joint prompts and its three marginals.

  Args:
    logits: [B, 495] in the order of `prompts.liqe_prompts()`.

  Returns:
    dict with `joint` [B, 5, 9, 11], `quality` [B, 5], `scene` [B, 9],
    `distortion` [B, 11] probabilities and `score` [B] = sum_k k p(quality_k).
  """
  want = NUM_QUALITIES * NUM_SCENES * NUM_DISTORTIONS
  if logits.shape[-1] != want:
    raise ValueError(f"LIQE logits need {want} joint prompts, got {logits.shape}.")
  joint = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  joint = joint.reshape(-1, NUM_QUALITIES, NUM_SCENES, NUM_DISTORTIONS)
  quality = joint.sum(axis=(2, 3))
  return dict(joint=joint, quality=quality, scene=joint.sum(axis=(1, 3)),
              distortion=joint.sum(axis=(1, 2)), score=quality_score(quality))


def quality_score(p_quality: Array) -> Array:
  """LIQE's score: the expected level, sum_k k * p_k with k = 1..5."""
  levels = jnp.arange(1, p_quality.shape[-1] + 1, dtype=p_quality.dtype)
  return p_quality @ levels


class CLIPIQA(nn.Module):
  """CLIP-IQA: softmax(100 * cos) over an antonym prompt pair.

  With `n_ctx > 0` the prompts carry CoOp-style learnable context vectors
  (`context`, [n_ctx, text_width], N(0, 0.02) init) that replace the embeddings
  of `n_ctx` placeholder tokens after start-of-text (build the prompts with
  `prompts.coop_prompts`). Returns logits [B, 2]; `clipiqa_score` reads the
  probability of the positive (first) prompt.

  Attributes:
    spec: the CLIP size.
    n_ctx: number of learnable context vectors (0 = zero-shot prompts).
    logit_scale: fixed temperature; CLIP-IQA uses 100 rather than CLIP's learned one.
    dtype: computation dtype.
  """
  spec: ml_collections.ConfigDict
  n_ctx: int = 0
  logit_scale: float = 100.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Array, prompt_ids: Array) -> Array:
    clip = clip_model.CLIP(self.spec, dtype=self.dtype, name="clip")
    img, n = _encode_crops(clip, images)
    context = None
    if self.n_ctx:
      context = self.param("context", nn.initializers.normal(0.02),
                           (self.n_ctx, self.spec.text_width))
    txt = clip_model.l2_normalize(clip.encode_text(prompt_ids, context))
    logits = self.logit_scale * img @ txt.T
    return logits.reshape(-1, n, logits.shape[-1]).mean(axis=1)


def clipiqa_score(logits: Array) -> Array:
  """Probability of the positive ("Good photo.") prompt, in [0, 1]."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 0]


class ClipLinearProbe(nn.Module):
  """Frozen CLIP image features -> Dense -> MOS.

  The features are normalised and wrapped in `stop_gradient`, so only the head
  learns even if the optimizer sees all parameters.

  Attributes:
    spec: the CLIP size.
    num_outputs: 1 for a MOS regressor (more for e.g. a 10-bin AVA head).
    dtype: computation dtype.
  """
  spec: ml_collections.ConfigDict
  num_outputs: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Array, prompt_ids: Optional[Array] = None) -> Array:
    del prompt_ids  # same call signature as the prompt heads
    clip = clip_model.CLIP(self.spec, dtype=self.dtype, name="clip")
    feats, n = _encode_crops(clip, images)
    feats = jax.lax.stop_gradient(feats)
    feats = feats.reshape(-1, n, feats.shape[-1]).mean(axis=1)
    out = nn.Dense(self.num_outputs, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                   name="head")(feats)
    return out[..., 0] if self.num_outputs == 1 else out
