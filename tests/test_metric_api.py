"""`musiq_jax.create_metric`: pyiqa-style names, inputs and checks."""

import numpy as np
from PIL import Image
import pytest

import musiq_jax
from musiq_jax import checkpoint
import musiq_fixtures as mf


@pytest.fixture(scope="module")
def released(tmp_path_factory):
  """A folder laid out as gs://gresearch/musiq (tiny random weights):
  koniq_ckpt.npz, ava_ckpt.npz (10 outputs) and
  full_size_single_scale/koniq_ckpt.npz (one scale)."""
  root = tmp_path_factory.mktemp("released")
  (root / "full_size_single_scale").mkdir()
  mf.write_original_npz(root / "koniq_ckpt.npz",
                        mf.original_musiq_shapes(**mf.TINY), seed=1)
  mf.write_original_npz(root / "ava_ckpt.npz", mf.original_musiq_shapes(
      num_classes=10, **mf.TINY), seed=2)
  mf.write_original_npz(root / "full_size_single_scale" / "koniq_ckpt.npz",
                        mf.original_musiq_shapes(num_scales=1, **mf.TINY),
                        seed=3)
  return root


def test_names_and_their_settings():
  names = musiq_jax.list_models()
  for n in ("musiq", "musiq-koniq", "musiq-spaq", "musiq-paq2piq",
            "musiq-ava", "musiq-koniq-single", "musiq-ava-single"):
    assert n in names
  from musiq_jax import metric
  # pyiqa/default_model_configs.py: '~0, ~100' for the MOS datasets,
  # '1, 10' for AVA; musiq_arch.py: AVA has 10 classes.
  assert metric.MODELS["musiq-ava"].num_classes == 10
  assert metric.MODELS["musiq-ava"].score_range == (1.0, 10.0)
  assert metric.MODELS["musiq-spaq"].score_range == (0.0, 100.0)
  assert metric.MODELS["musiq"] == metric.MODELS["musiq-koniq"]
  assert metric.MODELS["musiq-paq2piq-single"].file == (
      "full_size_single_scale/paq2piq_ckpt.npz")
  with pytest.raises(ValueError, match="unknown metric"):
    musiq_jax.create_metric("musiq-kadid", ckpt_path="x.npz")
  with pytest.raises(ValueError, match="gs://gresearch/musiq/spaq_ckpt.npz"):
    musiq_jax.create_metric("musiq-spaq")


def test_a_name_checks_the_file_it_is_given(released):
  m = musiq_jax.create_metric("musiq-koniq", ckpt_path=released)
  assert m.lower_better is False and m.score_range == (0.0, 100.0)
  assert m.scorer.source == str(released / "koniq_ckpt.npz")
  single = musiq_jax.create_metric("musiq-koniq-single", ckpt_path=released)
  assert single.scorer.source.endswith("full_size_single_scale/koniq_ckpt.npz")
  assert single.scorer.pp_config.num_scales == 1
  ava = musiq_jax.create_metric("musiq-ava", ckpt_path=released)
  assert ava.scorer.num_classes == 10
  # The wrong file for a name is an error, not other scores.
  with pytest.raises(checkpoint.CheckpointError, match="num_classes"):
    musiq_jax.create_metric("musiq-ava",
                            ckpt_path=released / "koniq_ckpt.npz")
  with pytest.raises(checkpoint.CheckpointError, match="single_scale"):
    musiq_jax.create_metric(
        "musiq-spaq-single", ckpt_path=released / "koniq_ckpt.npz")


def test_inputs_pyiqa_users_pass(released, tmp_path):
  # The single-scale model: the inputs are the point, not the scales.
  m = musiq_jax.create_metric("musiq-koniq-single", ckpt_path=released,
                              batch_size=2)
  ref = m.scorer
  a = mf.photo("chelsea")[:96:2, :128:2].copy()  # 48 x 64
  b = mf.photo("coffee")[:80:2, :60:2].copy()    # 40 x 30
  folder = tmp_path / "photos"
  folder.mkdir()
  Image.fromarray(a).save(folder / "a.png")
  Image.fromarray(b).save(folder / "b.png")
  want = [r.score for r in ref.score([a, b])]
  # A path, a directory, uint8 HWC and NHWC, float [0, 1], a mixed list.
  assert m(str(folder / "a.png")) == pytest.approx(want[:1], abs=1e-5)
  np.testing.assert_allclose(m(folder), want, atol=1e-5)
  np.testing.assert_allclose(m(np.stack([a, a])), [want[0]] * 2, atol=1e-5)
  np.testing.assert_allclose(m(a.astype(np.float32) / 255), want[:1],
                             atol=1e-4)
  mixed = m([b, str(folder / "a.png"), a[None] / 255.0, folder])
  np.testing.assert_allclose(mixed, [want[1], want[0], want[0]] + want,
                             atol=1e-4)
  assert mixed.dtype == np.float64
  # Checked, with errors that say what to do.
  with pytest.raises(ValueError, match="in \\[0, 1\\]"):
    m(a.astype(np.float32))  # 0..255 floats.
  with pytest.raises(ValueError, match="NHWC"):
    m(np.zeros((1, 3, 32, 32), np.float32))  # NCHW, pyiqa's layout.
  with pytest.raises(ValueError, match="int64"):
    m(a.astype(np.int64))
  with pytest.raises(ValueError, match="missing.png"):
    m(str(folder / "missing.png"))
  with pytest.raises(TypeError, match="dict"):
    m({"a": a})
