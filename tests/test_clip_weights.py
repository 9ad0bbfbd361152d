"""Weight files: clear errors for missing/mismatched weights; the PyTorch converter."""

import os
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_fixtures import oracle  # pylint: disable=g-import-not-at-top

from musiq_jax.clip import convert_torch  # pylint: disable=g-import-not-at-top
from musiq_jax.clip import model_sizes
from musiq_jax.clip import weights

SMALL = dict(vision_width=64, vision_layers=1, vision_heads=1, text_width=32,
             text_layers=1, text_heads=1, embed_dim=16)


def _spec(**kw):
  return model_sizes.get_clip_size("tiny", **{**SMALL, **kw})


@pytest.fixture(scope="module")
def ref_model():
  return oracle.open_clip_model(vision_layers=1, vision_width=64, patch_size=32,
                                text_layers=1, text_width=32, text_heads=1, embed_dim=16)


@pytest.fixture()
def ref_file(tmp_path, ref_model):
  return oracle.save_safetensors(ref_model, str(tmp_path / "ref.safetensors"))


def test_loads_complete_file(ref_file):
  params = weights.load_clip_params(ref_file, _spec())
  assert params["visual"]["conv1"]["kernel"].shape == (32, 32, 3, 64)
  assert params["text"]["transformer"]["resblocks_0"]["attn"]["in_proj"]["kernel"].shape == (32, 96)


def test_missing_keys_named(tmp_path, ref_file):
  state = load_file(ref_file)
  del state["visual.ln_post.bias"]
  del state["transformer.resblocks.0.attn.in_proj_weight"]
  path = str(tmp_path / "broken.safetensors")
  save_file(state, path)
  with pytest.raises(weights.WeightLoadError) as e:
    weights.load_clip_params(path, _spec())
  msg = str(e.value)
  assert "broken.safetensors" in msg and "2 missing keys" in msg
  assert "visual/ln_post/bias" in msg and "text/transformer/resblocks_0/attn/in_proj/kernel" in msg


def test_unexpected_and_mismatched_keys_named(tmp_path, ref_file):
  state = load_file(ref_file)
  state["visual.extra_head.weight"] = np.zeros((3, 3), np.float32)
  path = str(tmp_path / "extra.safetensors")
  save_file(state, path)
  with pytest.raises(weights.WeightLoadError, match=r"1 unexpected keys: \['visual/extra_head/kernel'\]"):
    weights.load_clip_params(path, _spec())
  # The right file for the wrong size: shape mismatches are listed with both shapes.
  with pytest.raises(weights.WeightLoadError) as e:
    weights.load_clip_params(ref_file, _spec(embed_dim=32))
  assert "shape mismatches" in str(e.value)
  assert "visual/proj: file (64, 16) vs model (64, 32)" in str(e.value)
  # A deeper model than the file: the missing layer is named.
  with pytest.raises(weights.WeightLoadError, match="visual/transformer/resblocks_1/ln_1/scale"):
    weights.load_clip_params(ref_file, _spec(vision_layers=2))


def test_missing_or_foreign_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
    weights.load_clip_params(str(tmp_path / "nowhere.safetensors"), _spec())
  pt = tmp_path / "LIQE.pt"
  pt.write_bytes(b"")
  with pytest.raises(weights.WeightLoadError, match="convert_torch"):
    weights.load_clip_params(str(pt), _spec())


def test_converter_handles_liqe_style_checkpoint(tmp_path, ref_model, ref_file):
  # LIQE-style: a DataParallel ("module.") fp16 state dict inside a wrapping dict.
  state = {f"module.{k}": v.half() for k, v in ref_model.state_dict().items()
           if not k.endswith("attn_mask")}
  src = str(tmp_path / "LIQE.pt")
  torch.save({"epoch": 3, "state_dict": state}, src)
  dst = str(tmp_path / "liqe.safetensors")
  convert_torch.main(["--input", src, "--output", dst])
  converted = weights.load_clip_params(dst, _spec())
  reference = weights.load_clip_params(ref_file, _spec())
  for a, b in zip(*(jax_leaves(t) for t in (converted, reference))):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)  # fp16 round trip
  assert not any(k.startswith("module.") for k in load_file(dst))


def test_converter_validates_size(tmp_path, ref_model):
  src = str(tmp_path / "model.bin")
  torch.save(ref_model.state_dict(), src)
  with pytest.raises(weights.WeightLoadError, match="shape mismatches"):
    convert_torch.convert(src, str(tmp_path / "out.safetensors"), clip_size="ViT-B/32")


def test_merge_into_head_params(ref_file):
  import jax  # pylint: disable=g-import-not-at-top
  from musiq_jax.clip import heads  # pylint: disable=g-import-not-at-top
  spec = _spec()
  head = heads.ClipLinearProbe(spec)
  params = jax.jit(head.init)(jax.random.key(0), np.zeros((1, 224, 224, 3), np.float32))["params"]
  merged = weights.merge_clip_params(params, weights.load_clip_params(ref_file, spec))
  np.testing.assert_array_equal(merged["head"]["kernel"], params["head"]["kernel"])
  assert not np.allclose(merged["clip"]["visual"]["proj"], params["clip"]["visual"]["proj"])


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
