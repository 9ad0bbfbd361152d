"""Original-layout .npz import/export: round trip, errors naming keys and files."""

import logging

import jax
import ml_dtypes
import numpy as np
import pytest

from musiq_jax import checkpoint
from musiq_jax.configs import models as model_sizes
from musiq_jax.models import musiq
import musiq_fixtures as mf


def _init_tree(**kw):
  cfg = model_sizes.get_model_config("tiny")
  cfg.update(kw)
  model = musiq.Model(num_scales=3, **cfg)
  x = {"patches": np.zeros((1, 2, 3072), np.float32),
       "spatial": np.zeros((1, 2), np.int32),
       "scale": np.zeros((1, 2), np.int32), "mask": np.ones((1, 2), np.int32)}
  # Shapes only (no compile): a constant stands in for init values.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
  return jax.tree.map(lambda s: np.full(s.shape, 0.25, s.dtype), shapes)


def _raw_params(path):
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files if k.startswith("opt/target/")}


def test_import_export_round_trip_is_bit_exact(tmp_path):
  src = tmp_path / "orig.npz"
  written = mf.write_original_npz(src, mf.original_musiq_shapes(**mf.TINY))
  assert written["gn_root/scale"].shape == (1, 1, 1, 32)
  params = checkpoint.load_params(str(src), _init_tree())
  linen = mf.linen_layout(written)
  flat = checkpoint.flatten(params)
  assert flat.keys() == linen.keys()
  for k, v in flat.items():
    np.testing.assert_array_equal(v, linen[k])
  out = tmp_path / "export.npz"
  checkpoint.export_npz(params, str(out))
  exported, original = _raw_params(out), _raw_params(src)
  assert exported.keys() == original.keys()
  for k in original:
    assert exported[k].shape == original[k].shape, k
    assert exported[k].dtype == original[k].dtype, k
    np.testing.assert_array_equal(exported[k], original[k])
  # The optimizer state beside opt/target is not a parameter.
  with np.load(src) as z:
    assert "opt/state/step" in z.files
  assert not any(k.startswith("opt/state") for k in np.load(out).files)


def test_both_groupnorm_layouts_load_and_say_which(tmp_path, caplog):
  written = mf.random_params(mf.original_musiq_shapes(**mf.TINY), seed=1)
  legacy = mf.linen_layout(written)  # (C,): our exports before the fix.
  assert legacy["block1/unit1/gn3/bias"].shape == (128,)
  paths = {}
  for name, flat in (("original", written), ("legacy", legacy)):
    paths[name] = str(tmp_path / f"{name}.npz")
    np.savez(paths[name], **{"opt/target/" + k: v for k, v in flat.items()})
  caplog.set_level(logging.INFO, logger="absl")  # absl.app may have raised it.
  loaded = {n: checkpoint.flatten(checkpoint.load_params(p, _init_tree()))
            for n, p in paths.items()}
  for k in legacy:
    np.testing.assert_array_equal(loaded["original"][k], legacy[k])
    np.testing.assert_array_equal(loaded["legacy"][k], legacy[k])
  text = caplog.text
  assert f"{paths['original']}: 10 GroupNorm" in text and "(1, 1, 1, C)" in text
  assert f"{paths['legacy']}: 10 GroupNorm" in text
  assert "earlier musiq_jax exports" in text
  # Either way, export writes the original layout.
  out = str(tmp_path / "out.npz")
  checkpoint.export_npz(checkpoint.unflatten(loaded["legacy"]), out)
  assert _raw_params(out)["opt/target/gn_root/scale"].shape == (1, 1, 1, 32)


def test_other_groupnorm_shapes_are_still_errors(tmp_path):
  flat = mf.random_params(mf.original_musiq_shapes(**mf.TINY))
  flat["block1/unit1/gn1/scale"] = np.ones((1, 1, 32), np.float32)
  flat["gn_root/bias"] = np.ones((1, 1, 1, 16), np.float32)
  path = tmp_path / "bad_gn.npz"
  np.savez(path, **{"opt/target/" + k: v for k, v in flat.items()})
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.load_params(str(path), _init_tree())
  msg = str(e.value)
  assert "block1/unit1/gn1/scale: checkpoint (1, 1, 32)" in msg
  assert "gn_root/bias: checkpoint (16,) vs model (32,)" in msg


def test_stored_dtypes(tmp_path, caplog):
  flat = mf.random_params(mf.original_musiq_shapes(**mf.TINY))
  half = tmp_path / "half.npz"
  np.savez(half, **{"opt/target/" + k: v.astype(np.float16)
                    for k, v in flat.items()})
  caplog.set_level(logging.INFO, logger="absl")  # absl.app may have raised it.
  params = checkpoint.flatten(checkpoint.load_params(str(half), _init_tree()))
  assert params["embedding/kernel"].dtype == np.float32
  np.testing.assert_array_equal(
      params["embedding/kernel"],
      flat["embedding/kernel"].astype(np.float16).astype(np.float32))
  assert "float16 -> float32" in caplog.text
  # np.savez writes bfloat16 as raw 2-byte records: a clear error.
  bf16 = tmp_path / "bf16.npz"
  np.savez(bf16, **{"opt/target/" + k: v.astype(ml_dtypes.bfloat16)
                    for k, v in flat.items()})
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.read_params(str(bf16))
  assert str(bf16) in str(e.value) and "bfloat16" in str(e.value)
  assert "'|V2'" in str(e.value)
  ints = tmp_path / "ints.npz"
  np.savez(ints, **{"opt/target/" + k: np.zeros(v.shape, np.int32)
                    for k, v in flat.items()})
  with pytest.raises(checkpoint.CheckpointError, match="floating point"):
    checkpoint.read_params(str(ints))


def test_renamed_and_missing_keys_are_listed(tmp_path):
  shapes = mf.original_musiq_shapes(**mf.TINY)
  params = mf.random_params(shapes)
  params["Transformer/encoderblock_1/LayerNorm_9/scale"] = params.pop(
      "Transformer/encoderblock_1/LayerNorm_2/scale")
  del params["embedding/bias"]
  path = tmp_path / "bad.npz"
  np.savez(path, **{"opt/target/" + k: v for k, v in params.items()})
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.load_params(str(path), _init_tree())
  msg = str(e.value)
  assert str(path) in msg
  assert "Transformer/encoderblock_1/LayerNorm_2/scale" in msg
  assert "embedding/bias" in msg
  assert "unexpected" in msg and "Transformer/encoderblock_1/LayerNorm_9" in msg


def test_dont_load_allows_a_new_head_and_shape_mismatch_is_named(tmp_path):
  path = tmp_path / "ava.npz"
  mf.write_original_npz(path, mf.original_musiq_shapes(num_classes=10,
                                                        **mf.TINY))
  init = _init_tree(num_classes=1)
  with pytest.raises(checkpoint.CheckpointError, match="head/kernel"):
    checkpoint.load_params(str(path), init)
  params = checkpoint.load_params(str(path), init, dont_load=("head/.*",))
  np.testing.assert_array_equal(params["head"]["kernel"],
                                init["head"]["kernel"])


def test_hash_grid_is_resampled_at_load_time(tmp_path):
  shapes = mf.original_musiq_shapes(**mf.TINY)
  params = mf.random_params(shapes)
  # A table linear in the grid row: resampling 10 -> 5 rows must give the
  # row centres 2k + 0.5 away from the border (any symmetric kernel does).
  rows = np.repeat(np.arange(10, dtype=np.float32), 10)
  params["Transformer/posembed_input/pos_embedding"] = np.broadcast_to(
      rows[None, :, None], (1, 100, 32)).copy()
  path = tmp_path / "g10.npz"
  np.savez(path, **{"opt/target/" + k: v for k, v in params.items()})
  loaded = checkpoint.load_params(str(path),
                                  _init_tree(spatial_pos_grid_size=5))
  table = np.asarray(loaded["Transformer"]["posembed_input"]["pos_embedding"])
  assert table.shape == (1, 25, 32)
  grid = table.reshape(5, 5, 32)
  np.testing.assert_allclose(grid[1:4, :, 0],
                             np.repeat([[2.5], [4.5], [6.5]], 5, axis=1),
                             rtol=1e-5)
  assert np.all(np.diff(grid[:, 0, 0]) > 0)


def test_malformed_files_name_the_file(tmp_path):
  cases = {"missing.npz": None, "empty.npz": b"", "text.npz": b"hello",
           "cut.npz": None}
  src = tmp_path / "ok.npz"
  mf.write_original_npz(src, mf.original_musiq_shapes(**mf.TINY))
  for name, content in cases.items():
    path = tmp_path / name
    if name == "cut.npz":
      path.write_bytes(src.read_bytes()[:5000])
    elif content is not None:
      path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError) as e:
      checkpoint.read_params(str(path))
    assert str(path) in str(e.value)
  other = tmp_path / "other.npz"
  np.savez(other, weights=np.zeros(3))
  with pytest.raises(checkpoint.CheckpointError, match="opt/target"):
    checkpoint.read_params(str(other))
  pickled = tmp_path / "pickled.npz"
  np.savez(pickled, **{"opt/target/x": np.array([{"a": 1}], dtype=object)})
  with pytest.raises(checkpoint.CheckpointError, match="pickle"):
    checkpoint.read_params(str(pickled))


def test_infer_model_config_from_shapes():
  for kw, expect in (
      (dict(), dict(num_classes=1, num_scales=3)),
      (dict(num_classes=10), dict(num_classes=10, num_scales=3)),
      (dict(num_scales=1), dict(num_classes=1, num_scales=1))):
    flat = mf.random_params(mf.original_musiq_shapes(**kw))
    cfg = checkpoint.infer_model_config(flat)
    assert cfg == dict(hidden_size=384, num_layers=14, num_heads=6,
                       mlp_dim=1152, spatial_pos_grid_size=10,
                       use_scale_emb=True, representation_size=None,
                       resnet_width=64, resnet_num_layers=5,
                       resnet_num_groups=32, patch_input="rgb", **expect)


def test_infer_patch_input_from_root_channels():
  for patch_input in ("rgb", "rgb_mscn"):
    flat = checkpoint.flatten(_init_tree(patch_input=patch_input))
    assert checkpoint.infer_model_config(flat)["patch_input"] == patch_input
    raw = checkpoint.flatten(_init_tree(patch_input=patch_input,
                                        resnet_num_layers=None))
    assert checkpoint.infer_model_config(raw)["patch_input"] == patch_input
  flat = checkpoint.flatten(_init_tree())
  flat["conv_root/kernel"] = np.zeros((7, 7, 4, 32), np.float32)
  with pytest.raises(checkpoint.CheckpointError, match="4 channels"):
    checkpoint.infer_model_config(flat)
