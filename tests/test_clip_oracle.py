"""Oracle tests: Flax CLIP vs open_clip / Hugging Face CLIP on real photos and prompts.

Randomly initialised reference models (no weights are downloaded) are saved as
.safetensors, imported with `weights.load_clip_params`, and their image and text
embeddings compared. Needs the `oracle` extra (torch, open_clip_torch, transformers).
"""

import os
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_fixtures import data  # pylint: disable=g-import-not-at-top
from clip_fixtures import oracle  # pylint: disable=g-import-not-at-top

from musiq_jax.clip import model as clip_model  # pylint: disable=g-import-not-at-top
from musiq_jax.clip import model_sizes
from musiq_jax.clip import tokenizer as tokenizer_lib
from musiq_jax.clip import weights

RTOL = 1e-4  # max |flax - ref| / max |ref|, per embedding matrix
TEXTS = ["a photo of a animal with noise artifacts, which is of good quality",
         "Good photo.", "Bad photo.", "a photo of a night with blur artifacts, which is of bad quality",
         "X X X X Good photo."]


def _rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("clip_vocab"))
  tokenizer_lib.write_vocab_files(oracle.bpe_gz_path(), d)
  return tokenizer_lib.ClipTokenizer.from_dir(d)


@pytest.fixture(scope="module")
def images():
  return data.clip_batch()


def _compare(ref_image_fn, ref_text_fn, path, spec, images, ids):
  params = weights.load_clip_params(path, spec)
  module = clip_model.CLIP(spec)
  with torch.no_grad():
    ref_img = ref_image_fn(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    ref_txt = ref_text_fn(torch.from_numpy(ids.astype(np.int64))).numpy()
  img = module.apply({"params": params}, jnp.asarray(images), method="encode_image")
  txt = module.apply({"params": params}, jnp.asarray(ids), method="encode_text")
  assert img.shape == ref_img.shape and txt.shape == ref_txt.shape
  return _rel_err(img, ref_img), _rel_err(txt, ref_txt)


@pytest.mark.parametrize("patch,act", [(32, "quick_gelu"), (32, "gelu"), (16, "quick_gelu")])
def test_open_clip_layout_small(tmp_path, images, tok, patch, act):
  ref = oracle.open_clip_model(vision_layers=3, vision_width=128, patch_size=patch,
                               text_layers=3, text_width=128, text_heads=2, embed_dim=64,
                               quick_gelu=act == "quick_gelu")
  path = oracle.save_safetensors(ref, str(tmp_path / "open_clip.safetensors"))
  spec = model_sizes.get_clip_size("ViT-B/32", patch_size=patch, vision_width=128,
                                   vision_layers=3, vision_heads=2, text_width=128,
                                   text_layers=3, text_heads=2, embed_dim=64, act=act)
  ids = tok(TEXTS)
  np.testing.assert_array_equal(ids, oracle.modules()[1].tokenize(TEXTS).numpy())
  img_err, txt_err = _compare(ref.encode_image, ref.encode_text, path, spec, images, ids)
  assert img_err < RTOL and txt_err < RTOL, (img_err, txt_err)


def test_hf_layout_small(tmp_path, images, tok):
  ref = oracle.hf_clip_model(vision_layers=3, vision_width=128, patch_size=32,
                             vision_heads=2, text_layers=3, text_width=128, text_heads=2,
                             embed_dim=64)
  path = oracle.save_safetensors(ref, str(tmp_path / "hf.safetensors"))
  spec = model_sizes.get_clip_size("ViT-B/32", vision_width=128, vision_layers=3,
                                   vision_heads=2, text_width=128, text_layers=3,
                                   text_heads=2, embed_dim=64)

  def _features(out):  # transformers 5 returns a ModelOutput, 4.x a tensor
    return out if isinstance(out, torch.Tensor) else out.pooler_output

  img_err, txt_err = _compare(
      lambda x: _features(ref.get_image_features(pixel_values=x)),
      lambda t: _features(ref.get_text_features(input_ids=t)), path, spec, images, tok(TEXTS))
  assert img_err < RTOL and txt_err < RTOL, (img_err, txt_err)


def test_open_clip_vit_b32_true_shapes(tmp_path, images, tok):
  start = time.time()
  ref = oracle.open_clip_model(vision_layers=12, vision_width=768, patch_size=32,
                               text_layers=12, text_width=512, text_heads=8, embed_dim=512)
  spec = model_sizes.get_clip_size("ViT-B/32")
  n_ref = sum(p.numel() for p in ref.parameters())
  n_flax = sum(int(np.prod(s)) for s in weights.expected_shapes(spec).values())
  assert n_flax == n_ref == 151_277_313
  path = oracle.save_safetensors(ref, str(tmp_path / "vit_b32.safetensors"))
  img_err, txt_err = _compare(ref.encode_image, ref.encode_text, path, spec, images[:2],
                              tok(TEXTS[:3]))
  assert img_err < RTOL and txt_err < RTOL, (img_err, txt_err)
  print(f"ViT-B/32 oracle: image {img_err:.2e}, text {txt_err:.2e}, {time.time() - start:.1f}s")


def test_tokenizer_matches_open_clip(tmp_path, tok):
  strings = data.tokenizer_strings()
  assert len(strings) > 600
  ref = oracle.modules()[1].tokenize(strings).numpy()
  ours = tok(strings)
  bad = [s for s, a, b in zip(strings, ours, ref) if not np.array_equal(a, b)]
  assert not bad, bad[:5]
  # The tokenizer.json route gives the same ids.
  json_dir = tmp_path / "json"
  json_dir.mkdir()
  tok._tok.save(str(json_dir / "tokenizer.json"))  # pylint: disable=protected-access
  np.testing.assert_array_equal(tokenizer_lib.ClipTokenizer.from_dir(str(json_dir))(strings), ref)


def test_tokenizer_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="vocab.json and merges.txt"):
    tokenizer_lib.ClipTokenizer.from_dir(str(tmp_path))
