"""Builds a CLIP head, its prompt token ids and its parameters from a config."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musiq_jax.clip import heads
from musiq_jax.clip import model_sizes
from musiq_jax.clip import prompts
from musiq_jax.clip import tokenizer as tokenizer_lib
from musiq_jax.clip import weights

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(model_config: ml_collections.ConfigDict):
  """Returns the Flax module named by `model_config.name`."""
  spec = model_sizes.get_clip_size(model_config.clip)
  dtype = _DTYPES[model_config.get("dtype", "float32")]
  if model_config.name == "liqe":
    return heads.LIQE(spec, dtype=dtype)
  if model_config.name == "clipiqa":
    return heads.CLIPIQA(spec, n_ctx=model_config.n_ctx,
                         logit_scale=model_config.logit_scale, dtype=dtype)
  if model_config.name == "clip_linear":
    return heads.ClipLinearProbe(spec, num_outputs=model_config.num_outputs, dtype=dtype)
  raise ValueError(f"Unknown CLIP head {model_config.name!r}; "
                   "use 'liqe', 'clipiqa' or 'clip_linear'.")


def prompt_texts(model_config: ml_collections.ConfigDict) -> Optional[list[str]]:
  """The prompt strings a head scores images against (None for the linear probe)."""
  if model_config.name == "liqe":
    return prompts.liqe_prompts()
  if model_config.name == "clipiqa":
    return prompts.coop_prompts(list(model_config.prompts), model_config.n_ctx)
  return None


def prompt_ids(config: ml_collections.ConfigDict,
               tokenizer: Optional[tokenizer_lib.ClipTokenizer] = None) -> Optional[np.ndarray]:
  """Token ids [P, 77] of the head's prompts, tokenized from `config.init.tokenizer_dir`."""
  texts = prompt_texts(config.model)
  if texts is None:
    return None
  if tokenizer is None:
    if not config.init.tokenizer_dir:
      raise ValueError(f"Model {config.model.name!r} needs prompts: set "
                       "config.init.tokenizer_dir to a folder with tokenizer.json or "
                       "vocab.json + merges.txt.")
    tokenizer = tokenizer_lib.ClipTokenizer.from_dir(config.init.tokenizer_dir)
  return tokenizer(texts)


def init_params(model, config: ml_collections.ConfigDict, ids: Optional[np.ndarray],
                rng: jax.Array) -> dict:
  """Initialises the head, then loads `config.init.clip_weights` into its `clip` subtree."""
  size = model.spec.image_size
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  params = jax.jit(model.init)(rng, images, None if ids is None else jnp.asarray(ids))["params"]
  if config.init.clip_weights:
    clip_params = weights.load_clip_params(config.init.clip_weights, model.spec)
    params = weights.merge_clip_params(params, clip_params)
  return params
