"""Preprocessing ops against the original's TF calls and the paper's formulas."""

import math

import numpy as np
import pytest
import tensorflow as tf

from musiq_jax import preprocessing as pp

CFG = pp.PreprocessConfig()


def _original_nn_table(grid, count):
  """The original's table: TF1 nearest-neighbour resize of range(G)."""
  g = tf.reshape(tf.range(grid, dtype=tf.int32), [grid, 1, 1])
  return tf.compat.v1.image.resize(
      g, [count, 1], method=tf.compat.v1.image.ResizeMethod.NEAREST_NEIGHBOR
  )[:, 0, 0].numpy()


@pytest.mark.parametrize("grid", [10, 4, 16])
def test_hash_index_matches_original_tables_and_paper(grid):
  for count_h in list(range(1, 41)) + [97, 128]:
    count_w = max(1, (count_h * 7) % 53)
    t_h, t_w = _original_nn_table(grid, count_h), _original_nn_table(
        grid, count_w)
    expected = (t_h[:, None] * grid + t_w[None, :]).reshape(-1)
    ours = pp.hashed_spatial_index(grid, count_h, count_w).numpy()
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(pp.hash_table(grid, count_h), t_h)
    # The paper's intent: t_i = i * G / (H / P), rounded down.
    paper = np.floor(np.arange(count_h) * grid / count_h).astype(int)
    assert np.abs(t_h - paper).max() <= 1
    assert np.all(np.diff(t_h) >= 0) and t_h.max() < grid


def test_hash_index_counts_below_and_above_grid():
  # Below G: indices spread out (skip rows); above G: rows repeat.
  np.testing.assert_array_equal(pp.hash_table(10, 4), [0, 2, 5, 7])
  np.testing.assert_array_equal(pp.hash_table(10, 20),
                                np.repeat(np.arange(10), 2))


def test_arp_sizes_match_original_rounding():
  rng = np.random.default_rng(0)
  shapes = [(768, 1024), (384, 512), (300, 451), (427, 640), (1, 1),
            (40, 20000), (1000, 1000), (37, 1001)]
  shapes += [tuple(rng.integers(1, 3000, 2)) for _ in range(40)]
  for h, w in shapes:
    for length in (224, 384):
      img = tf.zeros([h, w, 3])
      out = pp.resize_preserve_aspect_ratio(img, length)
      ratio = np.float32(length) / np.float32(max(h, w))
      expect = (max(int(np.round(np.float32(h) * ratio)), 1),
                max(int(np.round(np.float32(w) * ratio)), 1))
      assert tuple(out.shape[:2]) == expect == pp.arp_size(h, w, length)


def test_round_half_to_even_like_tf_round():
  # 1000x1002 at L=501: 1000 * 0.5 = 500.0 exactly; 1003x2006 at L=1003:
  # h * 0.5 = 501.5 -> 502 (half to even), not 502 by round-half-up either.
  assert pp.arp_size(1003, 2006, 1003) == (502, 1003)
  assert pp.arp_size(1005, 2010, 1005) == (502, 1005)  # 502.5 -> 502


def test_gaussian_resize_is_tf_gaussian_without_antialias():
  img = tf.random.stateless_uniform([100, 150, 3], seed=[1, 2]) * 2 - 1
  out = pp.resize_preserve_aspect_ratio(img, 64)
  ref = tf.image.resize(img, (43, 64), method="gaussian", antialias=False)
  np.testing.assert_array_equal(out.numpy(), ref.numpy())


def test_patches_use_centered_same_padding():
  h, w = 70, 100
  img = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3) + 1
  patches, ch, cw = pp.extract_patches(tf.constant(img), 32, 32)
  assert (int(ch), int(cw)) == (3, 4)
  # TF SAME: total pad (3*32-70)=26 rows -> 13 above; (4*32-100)=28 -> 14 left.
  padded = np.pad(img, ((13, 13), (14, 14), (0, 0)))
  first = padded[:32, :32].reshape(-1)
  np.testing.assert_array_equal(patches[0].numpy(), first)
  last = padded[64:96, 96:128].reshape(-1)
  np.testing.assert_array_equal(patches[-1].numpy(), last)


def test_scales_sorted_ascending_native_last_and_padded():
  cfg = pp.PreprocessConfig(longer_side_lengths=(384, 224))
  img = tf.zeros([300, 451, 3], tf.uint8)
  f = pp.preprocess_image(img, cfg)
  lens = pp.scale_lengths(300, 451, cfg)
  assert lens == (49, 144, 10 * 15)
  scale = f["scale"].numpy()
  mask = f["mask"].numpy()
  np.testing.assert_array_equal(scale[:49][mask[:49] == 1], 0)
  np.testing.assert_array_equal(scale[49:193][mask[49:193] == 1], 1)
  np.testing.assert_array_equal(scale[193:], 2)
  # 224-scale: 149x224 image -> 5x7 = 35 real tokens, 14 padding;
  # 384-scale: 255x384 -> 8x12 = 96 real tokens, 48 padding.
  assert mask[:49].sum() == 35 and mask[49:193].sum() == 8 * 12
  assert f["patches"].shape == (sum(lens), 3072)
  assert np.all(f["patches"].numpy()[mask == 0] == 0)


def test_native_scale_cut_pad_and_absent():
  img = tf.zeros([100, 100, 3], tf.uint8)  # 16 native patches.
  for native, n in ((-1, 16), (10, 10), (20, 20)):
    cfg = pp.PreprocessConfig(longer_side_lengths=(),
                              max_seq_len_from_original_res=native)
    f = pp.preprocess_image(img, cfg)
    assert f["mask"].shape[0] == n == pp.seq_len(100, 100, cfg)
    assert int(f["mask"].numpy().sum()) == min(16, n)
  cfg = pp.PreprocessConfig(max_seq_len_from_original_res=None)
  assert pp.preprocess_image(img, cfg)["mask"].shape[0] == 49 + 144
  assert cfg.num_scales == 2


def test_eager_equals_tf_data():
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in ((50, 80), (130, 40))]
  fn = pp.get_preprocess_fn(CFG)
  ds = tf.data.Dataset.from_generator(
      lambda: iter(images),
      output_signature=tf.TensorSpec([None, None, 3], tf.uint8)).map(fn)
  for img, graph in zip(images, ds.as_numpy_iterator()):
    eager = fn(tf.constant(img))
    for k in pp.FEATURE_KEYS:
      np.testing.assert_array_equal(graph[k], eager[k].numpy())


def test_value_range_and_concatenated_round_trip():
  img = tf.constant([[[0, 255, 128]]], tf.uint8)
  np.testing.assert_allclose(pp.normalize_value_range(img).numpy().ravel(),
                             [-1.0, 1.0, 128 / 255 * 2 - 1], atol=1e-7)
  f = {k: v.numpy() for k, v in pp.preprocess_image(
      tf.zeros([40, 60, 3], tf.uint8), CFG).items()}
  back = pp.from_concatenated(pp.to_concatenated(f))
  for k in pp.FEATURE_KEYS:
    np.testing.assert_array_equal(back[k], f[k])


def test_config_validation():
  with pytest.raises(ValueError, match="Unknown preprocessing keys"):
    pp.PreprocessConfig.from_dict({"patch_sise": 32})
  with pytest.raises(ValueError, match="no scale"):
    pp.preprocess_image(tf.zeros([8, 8, 3], tf.uint8),
                        pp.PreprocessConfig(longer_side_lengths=(),
                                            max_seq_len_from_original_res=None))
