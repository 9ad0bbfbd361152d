"""Pictures: attention maps (normalisation, padding, geometry), HSE grid,
scatter and histograms render to PNGs of the expected size."""

import contextlib
import io
import os

from absl import flags
import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from musiq_jax import metrics
from musiq_jax import predict
from musiq_jax import preprocessing
from musiq_jax import visualize
from musiq_jax.models import musiq
import musiq_fixtures as mf
import tf_reference

# Two resized scales + a native scale cut to 16 tokens: every layout case
# (ARP resize with SAME padding, per-scale padding, a cut native scale).
PP = preprocessing.PreprocessConfig(longer_side_lengths=(64, 96),
                                    max_seq_len_from_original_res=16)
H, W = 70, 150  # Native grid 3 x 5 = 15 patches: 1 padding token of 16.


def _features(h=H, w=W, cfg=PP):
  image = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8)
  return image, preprocessing.preprocess_image(image, cfg)


def _png_size(path):
  assert os.path.getsize(path) > 0
  with Image.open(path) as im:
    im.verify()
  with Image.open(path) as im:
    assert im.format == "PNG"
    return im.size


@pytest.mark.parametrize("h,w,cfg", [
    (H, W, PP),
    (300, 451, preprocessing.PreprocessConfig()),
    (33, 31, preprocessing.PreprocessConfig(longer_side_lengths=(64,),
                                            max_seq_len_from_original_res=-1)),
    (200, 90, preprocessing.PreprocessConfig(longer_side_lengths=(),
                                             max_seq_len_from_original_res=4)),
])
def test_layouts_match_the_preprocessing(h, w, cfg):
  image, feats = _features(h, w, cfg)
  layouts = visualize.scale_layouts(h, w, cfg)
  assert sum(l.length for l in layouts) == feats["mask"].size
  for lay in layouts:
    seg = feats["mask"][lay.start:lay.start + lay.length]
    np.testing.assert_array_equal(seg[:lay.num_real], 1)
    np.testing.assert_array_equal(seg[lay.num_real:], 0)
    np.testing.assert_array_equal(
        feats["scale"][lay.start:lay.start + lay.num_real], lay.scale_id)
    # SAME padding: on an all-ones image the first patch's zero rows/columns
    # are the padding before it (TF's own extract_patches as the oracle).
    ones = tf.ones(lay.image_size + (3,))
    p, ch, cw = tf_reference.extract_patches(ones, cfg.patch_size,
                                             cfg.patch_stride)
    assert (int(ch), int(cw)) == (lay.count_h, lay.count_w)
    first = p.numpy()[0].reshape(cfg.patch_size, cfg.patch_size, 3)[..., 0]
    assert int(np.argmax(first.max(1) > 0)) == lay.offset[0]
    assert int(np.argmax(first.max(0) > 0)) == lay.offset[1]
  del image


def _uniform_weights(mask, layers=2, heads=3):
  t = mask.size
  w = np.tile(mask.astype(np.float64), (layers, heads, t, 1))
  return w / w.sum(-1, keepdims=True)


@pytest.mark.parametrize("method", visualize.ATTENTION_METHODS)
def test_uniform_attention_gives_uniform_maps(method):
  _, feats = _features()
  mask = np.concatenate([[1], feats["mask"]])
  att = visualize.cls_attention(_uniform_weights(mask), mask, method)
  np.testing.assert_allclose(att[feats["mask"] == 0], 0.0)
  maps = visualize.heat_maps(att, feats["mask"], H, W, PP)
  total_real = feats["mask"].sum()
  assert [m.layout.name for m in maps] == ["64px", "96px", "native"]
  for m in maps:
    lay = m.layout
    flat = m.grid.reshape(-1)
    np.testing.assert_allclose(flat[:lay.num_real], 1.0 / lay.num_real)
    np.testing.assert_allclose(flat[lay.num_real:], 0.0)
    assert m.grid.sum() == pytest.approx(1.0)
    assert m.mass == pytest.approx(lay.num_real / total_real)
  assert sum(m.mass for m in maps) == pytest.approx(1.0)


def test_one_hot_cls_attention_lands_on_its_patch():
  _, feats = _features()
  layouts = visualize.scale_layouts(H, W, PP)
  native = layouts[-1]
  k = native.start + 7  # Patch (1, 2) of the 3 x 5 native grid.
  t = feats["mask"].size + 1
  weights = np.tile(np.eye(t), (2, 2, 1, 1))
  weights[:, :, 0, :] = 0.0
  weights[:, :, 0, 1 + k] = 1.0
  mask = np.concatenate([[1], feats["mask"]])
  for method in visualize.ATTENTION_METHODS:
    maps = visualize.heat_maps(visualize.cls_attention(weights, mask, method),
                               feats["mask"], H, W, PP)
    for m in maps[:-1]:
      assert m.mass == 0.0 and not m.grid.any()
    expected = np.zeros((3, 5))
    expected[1, 2] = 1.0
    np.testing.assert_allclose(maps[-1].grid, expected, atol=1e-12)
    assert maps[-1].mass == pytest.approx(1.0)
    pixels = maps[-1].upsample()
    assert pixels.shape == (H, W)
    top, left = native.offset
    rows, cols = np.nonzero(pixels)
    assert (rows.min(), rows.max()) == (32 - top, 64 - top - 1)
    assert (cols.min(), cols.max()) == (64 - left, 96 - left - 1)
    np.testing.assert_allclose(pixels[rows, cols], 1.0)


def test_padding_gets_zero_even_if_the_weights_give_it_mass():
  _, feats = _features()
  mask = np.concatenate([[1], feats["mask"]])
  rng = np.random.default_rng(1)
  weights = rng.random((3, 2, mask.size, mask.size))
  weights /= weights.sum(-1, keepdims=True)  # Mass on padding keys too.
  for method in visualize.ATTENTION_METHODS:
    att = visualize.cls_attention(weights, mask, method)
    np.testing.assert_array_equal(att[feats["mask"] == 0], 0.0)
    maps = visualize.heat_maps(att, feats["mask"], H, W, PP)
    for m in maps:
      assert m.grid.sum() == pytest.approx(1.0)
      assert not m.grid.reshape(-1)[m.layout.num_real:].any()
    assert sum(m.mass for m in maps) == pytest.approx(1.0)


def test_rollout_is_the_product_of_residual_averaged_layers():
  rng = np.random.default_rng(2)
  weights = rng.random((3, 2, 5, 5))
  weights /= weights.sum(-1, keepdims=True)
  eye = np.eye(5)
  expected = eye
  for layer in weights.mean(1):
    expected = (0.5 * layer + 0.5 * eye) @ expected
  np.testing.assert_allclose(visualize.attention_rollout(weights), expected)
  np.testing.assert_allclose(visualize.attention_rollout(weights).sum(-1), 1.0)
  np.testing.assert_allclose(
      visualize.cls_attention(weights, method="last_layer"),
      weights[-1].mean(0)[0, 1:])


def test_heat_maps_reject_a_mask_from_other_preprocessing():
  _, feats = _features()
  other = preprocessing.PreprocessConfig(longer_side_lengths=(64, 96),
                                         max_seq_len_from_original_res=24)
  with pytest.raises(ValueError):
    visualize.heat_maps(np.ones(feats["mask"].size), feats["mask"], H, W,
                        other)


@pytest.fixture(scope="module")
def tiny_model():
  model = musiq.Model(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64,
                      resnet_width=32, num_scales=PP.num_scales)
  _, feats = _features()
  batch = {k: v[None] for k, v in feats.items()}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch)["params"]
  return model, params


def test_attention_maps_of_the_model(tiny_model, tmp_path):
  model, params = tiny_model
  image, feats = _features()
  weights, logits = visualize.attention_weights(model, params, feats)
  t = feats["mask"].size + 1
  assert weights.shape == (2, 2, t, t) and logits.shape == (1,)
  # The model itself gives padding keys no attention.
  np.testing.assert_allclose(weights[..., 1:][..., feats["mask"] == 0], 0.0,
                             atol=1e-6)
  maps = visualize.attention_maps(model, params, image, PP)
  assert set(maps) == set(visualize.ATTENTION_METHODS)
  for per_scale in maps.values():
    assert [m.grid.shape for m in per_scale] == [(1, 2), (2, 3), (3, 5)]
    assert sum(m.mass for m in per_scale) == pytest.approx(1.0, abs=1e-5)
    for m in per_scale:
      assert m.grid.sum() == pytest.approx(1.0, abs=1e-5)
  path = str(tmp_path / "att.png")
  visualize.plot_attention(image, maps, PP, path, title="x", panel_size=2.0,
                           dpi=50)
  assert _png_size(path) == (3 * 100, 2 * 100)


def test_hse_similarity_and_plot(tiny_model, tmp_path):
  _, params = tiny_model
  sim = visualize.hse_similarity(params)
  assert sim.shape == (10, 10, 10, 10)
  flat = sim.reshape(100, 100)
  np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-9)
  np.testing.assert_allclose(flat, flat.T, atol=1e-12)
  assert np.all(np.abs(flat) <= 1.0 + 1e-9)
  table = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])
  np.testing.assert_allclose(visualize.hse_similarity(table), sim)
  np.testing.assert_allclose(visualize.hse_similarity(
      {visualize.POS_EMBEDDING_KEY: table}), sim)
  path = str(tmp_path / "hse.png")
  visualize.plot_hse_similarity(sim, path, size=3.0, dpi=60)
  assert _png_size(path) == (180, 180)


def _eval_data(n=40, seed=0):
  rng = np.random.default_rng(seed)
  label = rng.uniform(1, 5, n)
  prediction = 0.3 * label + 0.2 * rng.standard_normal(n)
  return prediction, label


def test_scatter_data_and_plot(tmp_path):
  prediction, label = _eval_data()
  d = visualize.scatter_data(prediction, label)
  assert d["srcc"] == pytest.approx(metrics.srcc(prediction, label))
  assert d["plcc_fitted"] == pytest.approx(metrics.plcc_fitted(prediction,
                                                               label))
  assert np.all(np.diff(d["curve_x"]) >= 0)
  np.testing.assert_allclose(
      np.sort(d["curve_y"]), np.sort(metrics.fit_logistic(prediction, label)))
  path = str(tmp_path / "scatter.png")
  visualize.plot_scatter(prediction, label, path, title="test", size=(4, 3),
                         dpi=50)
  assert _png_size(path) == (200, 150)


def test_histograms_and_eval_plots(tmp_path):
  splits = {"validation": _eval_data(30, 1), "test": _eval_data(25, 2)}
  path = str(tmp_path / "hist.png")
  visualize.plot_histograms(splits, path, panel_size=(3, 2), dpi=50)
  assert _png_size(path) == (2 * 150, 100)
  # Training writes predictions_<split>.npz; the hook reads them back.
  workdir = tmp_path / "wd"
  workdir.mkdir()
  for split, (p, l) in splits.items():
    np.savez(workdir / f"predictions_{split}.npz", prediction=p, label=l,
             image_id=np.array(["a"] * p.size))
  read = visualize.read_predictions(str(workdir))
  assert sorted(read) == ["test", "validation"]
  paths = visualize.write_eval_plots(str(workdir), read)
  assert sorted(os.path.basename(p) for p in paths) == [
      "histograms.png", "scatter_test.png", "scatter_validation.png"]
  assert _png_size(paths[0]) == (450, 400)
  # Predictions alone (no MOS): a histogram, no scatter.
  only = visualize.write_eval_plots(str(tmp_path), {"unlabelled": [1., 2.]})
  assert [os.path.basename(p) for p in only] == ["histograms.png"]


def test_visualize_cli_writes_eval_plots_and_hse(tmp_path):
  workdir = tmp_path / "wd"
  workdir.mkdir()
  p, l = _eval_data()
  np.savez(workdir / "predictions_test.npz", prediction=p, label=l)
  mf.write_original_npz(workdir / "best.npz",
                        mf.original_musiq_shapes(**mf.TINY))
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert visualize.main([f"--workdir={workdir}"]) == 0
  names = sorted(os.path.basename(x) for x in out.getvalue().split())
  assert names == ["histograms.png", "hse_similarity.png",
                   "scatter_test.png"]
  assert _png_size(str(workdir / "hse_similarity.png")) == (600, 600)


def test_predict_cli_saves_one_attention_png_per_image(tmp_path):
  ckpt = tmp_path / "tiny.npz"
  mf.write_original_npz(ckpt, mf.original_musiq_shapes(**mf.TINY))
  images = tmp_path / "images"
  images.mkdir()
  mf.write_jpeg(images / "chelsea.jpg", mf.photo("chelsea")[::4, ::4])
  Image.fromarray(mf.photo("coffee")[::4, ::4]).save(images / "coffee.png")
  (images / "broken.jpg").write_text("not an image")
  out_dir = tmp_path / "att"
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["predict", f"--ckpt_path={ckpt}", f"--image_path={images}",
               f"--save_attention={out_dir}", "--format=json"])
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = predict.main(["predict"])
  flags.FLAGS.unparse_flags()
  assert rc == 1  # broken.jpg fails; the others are scored and drawn.
  assert sorted(os.listdir(out_dir)) == ["chelsea.png", "coffee.png"]
  for name in ("chelsea.png", "coffee.png"):
    w, h = _png_size(str(out_dir / name))
    assert (w, h) == (3 * 260, 2 * 260)  # 3 scales x 2 methods.


def test_training_curves_from_event_files(tmp_path):
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  writer = metric_writers.create_default_writer(str(tmp_path))
  for step in (2, 4, 6):
    writer.write_scalars(step, {"train_loss": 10.0 / step, "val_srcc": step})
  writer.flush()
  writer.close()
  scalars = visualize.read_scalars(str(tmp_path))
  np.testing.assert_array_equal(scalars["train_loss"][0], [2, 4, 6])
  np.testing.assert_allclose(scalars["train_loss"][1], [5.0, 2.5, 10 / 6],
                             rtol=1e-6)
  path = str(tmp_path / "curves.png")
  visualize.plot_curves(scalars, path, panel_size=(2, 2), dpi=50)
  assert _png_size(path) == (2 * 100, 100)  # Two of the default tags.
