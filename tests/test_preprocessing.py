"""Preprocessing against the original's TF calls (tf_reference) and the paper.

The oracle is TensorFlow itself: `tf.image.resize(method="gaussian")` (TF2,
antialias=False), `tf.image.extract_patches(padding="SAME")` and the TF1
nearest-neighbour hash tables, as the original MUSIQ calls them
(tests/tf_reference.py). Ours is one definition of each op run three ways:
jax.numpy (the scorer's device program), NumPy (host) and TF kernels
(tf.data).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from musiq_jax import preprocessing as pp
from musiq_jax import scorer as scorer_lib
import musiq_fixtures as mf
import tf_reference as ref

CFG = pp.PreprocessConfig()
CONFIGS = {
    "default": CFG,
    # Overlapping patches, a third scale, the native scale cut to 40 tokens.
    "stride8_cut": pp.PreprocessConfig(
        patch_size=16, patch_stride=8, longer_side_lengths=(96, 32, 64),
        max_seq_len_from_original_res=40),
    # Gaps between patches (stride > patch), padding the native scale.
    "stride12_pad": pp.PreprocessConfig(
        patch_size=8, patch_stride=12, longer_side_lengths=(40,),
        max_seq_len_from_original_res=200),
    "no_native": pp.PreprocessConfig(max_seq_len_from_original_res=None),
    "native_only": pp.PreprocessConfig(longer_side_lengths=()),
}


# ----------------------------------------------------------------------------
# The Gaussian resize.
# ----------------------------------------------------------------------------
def _resize_cases():
  """(h, w, th, tw): >= 50 resizes of every kind the ARP resize meets."""
  cases = [
      # Upscaling (small photos, and 1-pixel images to 224 x 224).
      (5, 7, 9, 13), (16, 16, 64, 64), (10, 3, 17, 30), (1, 1, 224, 224),
      (2, 3, 224, 336), (31, 20, 384, 248), (7, 7, 8, 8), (3, 4, 5, 5),
      # The longer side equal to the target (TF2 resizes, i.e. blurs, anyway).
      (37, 50, 37, 50), (50, 37, 50, 37), (224, 100, 224, 100), (1, 1, 1, 1),
      (64, 64, 64, 64), (9, 2, 9, 2),
      # Downscaling, by integer and non-integer factors.
      (100, 150, 43, 64), (64, 64, 7, 9), (61, 47, 13, 11), (300, 451, 149, 224),
      (768, 1024, 168, 224), (768, 1024, 288, 384), (97, 13, 96, 13),
      (200, 200, 3, 3), (45, 60, 44, 59), (33, 31, 32, 30),
      # 1-pixel sides.
      (1, 40, 1, 20), (40, 1, 20, 1), (1, 1, 3, 5), (1, 7, 1, 5), (3, 1, 7, 1),
      (1, 300, 1, 224), (300, 1, 224, 1), (2, 1, 1, 1),
      # Extreme aspect ratios (the shorter side clamped to 1 pixel).
      (2000, 3, 224, 1), (3, 2000, 1, 224), (1500, 8, 384, 2),
      (5, 1000, 2, 384), (4000, 10, 224, 1), (600, 2, 384, 1),
  ]
  rng = np.random.default_rng(7)
  while len(cases) < 60:  # Random photos at random ARP sizes.
    h, w = (int(v) for v in rng.integers(1, 700, 2))
    length = int(rng.choice([32, 96, 224, 384, 500]))
    cases.append((h, w) + pp.arp_size(h, w, length))
  return cases


RESIZE_CASES = _resize_cases()
# Every case runs through one jitted program per group: images padded to the
# group's largest input, outputs to its largest output (padding has zero
# weight), so 60 resizes compile 3 programs, not 60.
_GROUPS = {"small": (1024, 1024, 512, 512), "tall": (4000, 10, 400, 10),
           "wide": (10, 2000, 10, 400)}


def _group(case):
  h, w, th, tw = case
  for name, (mh, mw, mth, mtw) in _GROUPS.items():
    if h <= mh and w <= mw and th <= mth and tw <= mtw:
      return name
  raise ValueError(case)


@functools.lru_cache(maxsize=None)
def _jax_resize():
  return jax.jit(lambda x, ri, rw, ci, cw: pp.resize_with_spans(
      x, ri, rw, ci, cw, jnp))


def _padded_spans(in_size, out_size, max_out):
  index, weights = pp.gaussian_resize_spans(in_size, out_size)
  i = np.zeros((max_out, pp.SPAN), np.int32)
  w = np.zeros((max_out, pp.SPAN), np.float32)
  i[:out_size], w[:out_size] = index, weights
  return i, w


def test_resize_cases_cover_the_acceptance_list():
  assert len(RESIZE_CASES) >= 50
  kinds = {
      "up": any(th > h and tw > w for h, w, th, tw in RESIZE_CASES),
      "same": any((h, w) == (th, tw) for h, w, th, tw in RESIZE_CASES),
      "one_pixel": any(min(h, w, th, tw) == 1 for h, w, th, tw in
                       RESIZE_CASES),
      "extreme": any(max(h, w) / min(h, w) >= 400 for h, w, _, _ in
                     RESIZE_CASES),
  }
  assert all(kinds.values()), kinds


@pytest.mark.parametrize("group", sorted(_GROUPS))
def test_jax_gaussian_resize_equals_tf_resize(group):
  mh, mw, mth, mtw = _GROUPS[group]
  rng = np.random.default_rng(len(group))
  cases = [c for c in RESIZE_CASES if _group(c) == group]
  assert cases
  for h, w, th, tw in cases:
    img = rng.uniform(-1, 1, (h, w, 3)).astype(np.float32)
    want = tf.image.resize(img, (th, tw), method="gaussian",
                           antialias=False).numpy()
    canvas = np.zeros((mh, mw, 3), np.float32)
    canvas[:h, :w] = img
    got = np.asarray(_jax_resize()(canvas, *_padded_spans(h, th, mth),
                                   *_padded_spans(w, tw, mtw)))[:th, :tw]
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0,
                               err_msg=f"{h}x{w} -> {th}x{tw}")
    # NumPy, unpadded: the same op on the host.
    ours = pp.resize_with_spans(img, *pp.gaussian_resize_spans(h, th),
                                *pp.gaussian_resize_spans(w, tw), np)
    np.testing.assert_allclose(ours, want, atol=1e-6, rtol=0)


def test_resize_spans_follow_tf_kernel():
  # Renormalised weights sum to 1; an integer downscale by 2 samples at
  # pixel borders (x + 0.5) * 2 = 2x + 1, so the two nearest pixels share
  # the weight equally (Gaussian sigma 0.5, radius 1.5, taps at +-0.5 and
  # +-1.5; the latter are exactly at the radius, hence 0).
  index, weights = pp.gaussian_resize_spans(8, 4)
  np.testing.assert_allclose(weights.sum(1), 1, rtol=1e-6)
  for x in range(1, 3):
    nz = weights[x] > 0
    np.testing.assert_array_equal(index[x][nz], [2 * x, 2 * x + 1])
    np.testing.assert_allclose(weights[x][nz], [0.5, 0.5])
  # At the border the kernel is cut and renormalised: more weight inside.
  _, up = pp.gaussian_resize_spans(10, 10)
  g = np.exp(-2 * np.array([0.0, 1.0]) ** 2)
  np.testing.assert_allclose(up[0][:2], g / g.sum(), rtol=1e-6)
  assert not weights.flags.writeable  # Cached arrays are read-only.


def test_arp_sizes_match_original_rounding():
  rng = np.random.default_rng(0)
  shapes = [(768, 1024), (384, 512), (300, 451), (427, 640), (1, 1),
            (40, 20000), (1000, 1000), (37, 1001)]
  shapes += [tuple(int(v) for v in rng.integers(1, 3000, 2))
             for _ in range(40)]
  for h, w in shapes:
    for length in (224, 384):
      want = tuple(int(v) for v in ref.arp_size(h, w, length))
      assert want == pp.arp_size(h, w, length), (h, w, length)
  # And the sizes the TF resize itself produces, on a few.
  for h, w in shapes[:6]:
    out = ref.resize_preserve_aspect_ratio(tf.zeros([h, w, 1]), 224)
    assert tuple(out.shape[:2]) == pp.arp_size(h, w, 224)


def test_round_half_to_even_like_tf_round():
  # 1003x2006 at L=1003: h * 0.5 = 501.5 -> 502 (half to even);
  # 1005x2010 at L=1005: 502.5 -> 502, not 503 as round-half-up would.
  assert pp.arp_size(1003, 2006, 1003) == (502, 1003)
  assert pp.arp_size(1005, 2010, 1005) == (502, 1005)


# ----------------------------------------------------------------------------
# Patches, hash indices, layout.
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [10, 4, 16])
def test_hash_index_matches_original_tables_and_paper(grid):
  for count_h in list(range(1, 41)) + [97, 128]:
    count_w = max(1, (count_h * 7) % 53)
    t_h = ref.original_nn_table(grid, count_h).numpy()
    want = ref.hashed_spatial_index(grid, count_h, count_w).numpy()
    np.testing.assert_array_equal(
        pp.hashed_spatial_index(grid, count_h, count_w), want)
    np.testing.assert_array_equal(pp.hash_table(grid, count_h), t_h)
    # The paper's intent: t_i = i * G / (H / P), rounded down.
    paper = np.floor(np.arange(count_h) * grid / count_h).astype(int)
    assert np.abs(t_h - paper).max() <= 1
    assert np.all(np.diff(t_h) >= 0) and t_h.max() < grid


def test_hash_index_counts_below_and_above_grid():
  np.testing.assert_array_equal(pp.hash_table(10, 4), [0, 2, 5, 7])
  np.testing.assert_array_equal(pp.hash_table(10, 20),
                                np.repeat(np.arange(10), 2))


@pytest.mark.parametrize("patch,stride", [(32, 32), (16, 8), (8, 12)])
def test_patches_use_centered_same_padding(patch, stride):
  h, w = 70, 100
  img = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3) + 1
  ours, ch, cw = pp.extract_patches(img, patch, stride)
  want, tch, tcw = ref.extract_patches(tf.constant(img), patch, stride)
  assert (ch, cw) == (int(tch), int(tcw))
  np.testing.assert_array_equal(ours, want.numpy())
  if patch == stride == 32:
    # TF SAME: total pad (3*32-70)=26 rows -> 13 above; (4*32-100)=28 -> 14.
    padded = np.pad(img, ((13, 13), (14, 14), (0, 0)))
    np.testing.assert_array_equal(ours[0], padded[:32, :32].reshape(-1))
    np.testing.assert_array_equal(ours[-1],
                                  padded[64:96, 96:128].reshape(-1))


def test_scales_sorted_ascending_native_last_and_padded():
  cfg = pp.PreprocessConfig(longer_side_lengths=(384, 224))
  f = pp.preprocess_image(np.zeros([300, 451, 3], np.uint8), cfg)
  lens = pp.scale_lengths(300, 451, cfg)
  assert lens == (49, 144, 10 * 15)
  scale, mask = f["scale"], f["mask"]
  np.testing.assert_array_equal(scale[:49][mask[:49] == 1], 0)
  np.testing.assert_array_equal(scale[49:193][mask[49:193] == 1], 1)
  np.testing.assert_array_equal(scale[193:], 2)
  # 224-scale: 149x224 image -> 5x7 = 35 real tokens, 14 padding;
  # 384-scale: 255x384 -> 8x12 = 96 real tokens, 48 padding.
  assert mask[:49].sum() == 35 and mask[49:193].sum() == 8 * 12
  assert f["patches"].shape == (sum(lens), 3072)
  assert np.all(f["patches"][mask == 0] == 0)


def test_native_scale_cut_pad_and_absent():
  img = np.zeros([100, 100, 3], np.uint8)  # 16 native patches.
  for native, n in ((-1, 16), (10, 10), (20, 20)):
    cfg = pp.PreprocessConfig(longer_side_lengths=(),
                              max_seq_len_from_original_res=native)
    f = pp.preprocess_image(img, cfg)
    assert f["mask"].shape[0] == n == pp.seq_len(100, 100, cfg)
    assert int(f["mask"].sum()) == min(16, n)
  cfg = pp.PreprocessConfig(max_seq_len_from_original_res=None)
  assert pp.preprocess_image(img, cfg)["mask"].shape[0] == 49 + 144
  assert cfg.num_scales == 2


def _photos(short=False):
  """Real photos of varied sizes (skimage), incl. odd and extreme shapes."""
  photos = [mf.photo("chelsea"), mf.photo("coffee")[:2, :150],
            mf.photo("rocket")[:37, :29], mf.photo("coffee")[:123, :301],
            mf.photo("astronaut")[::3, ::2], np.full((1, 1, 3), 77, np.uint8)]
  return photos[:3] if short else photos


def _assert_tokens_equal(ours, want, name):
  """Patches to 1e-6; spatial, scale and mask (the last three columns of
  the original's layout) exactly."""
  a, b = pp.to_concatenated(ours), pp.to_concatenated(want)
  assert a.shape == b.shape, (name, a.shape, b.shape)
  np.testing.assert_allclose(a[:, :-3], b[:, :-3], atol=1e-6, rtol=0,
                             err_msg=name)
  np.testing.assert_array_equal(a[:, -3:], b[:, -3:], err_msg=name)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_device_tokens_equal_tf_pipeline_on_photos(name, fast_compile):
  # The scorer's jitted path: bucketed canvas, batch of 2, padded length.
  del fast_compile  # Each photo compiles a program; XLA's full optimisation
  # changes no float32 result here, only the compile time.
  cfg = CONFIGS[name]
  scorer = scorer_lib.Scorer(model=None, params=None, pp_config=cfg,
                             batch_size=2)
  run = jax.jit(scorer.device_tokens, static_argnames=("grid",))
  photos = _photos(short=True)
  for i, photo in enumerate(photos):
    canvas, plans, grid = scorer.canvas_batch([photo])
    assert canvas.shape[0] == 2  # Filled with an empty example.
    feats = jax.tree.map(np.asarray, run(canvas, plans, grid=grid))
    want = ref.preprocess_image(photo, cfg)
    n = want["mask"].shape[0]
    got = {k: v[0, :n] for k, v in feats.items()}
    _assert_tokens_equal(got, want, f"{name} photo {i} {photo.shape}")
    # Bucket padding and the empty example are all zero.
    for k, v in feats.items():
      assert not np.any(v[0, n:]) and not np.any(v[1]), k


@pytest.mark.parametrize("name", ["default", "stride8_cut", "stride12_pad"])
def test_host_and_tf_data_tokens_equal_tf_pipeline(name):
  cfg = CONFIGS[name]
  photos = _photos()
  ds = tf.data.Dataset.from_generator(
      lambda: iter(photos),
      output_signature=tf.TensorSpec([None, None, 3], tf.uint8)).map(
          lambda im: pp.tf_preprocess_image(im, cfg))
  for i, (photo, graph) in enumerate(zip(photos, ds.as_numpy_iterator())):
    want = ref.preprocess_image(photo, cfg)
    _assert_tokens_equal(graph, want, f"tf.data {name} {i}")
    _assert_tokens_equal(pp.preprocess_image(photo, cfg), want,
                         f"numpy {name} {i}")


def test_canvas_grids_hold_their_images_and_stay_small():
  fixed = 49 + 144
  worst = 0.0
  lengths, programs, photo_lengths, photo_programs = set(), set(), set(), set()
  for h in range(1, 1400, 37):
    for w in range(1, 1400, 41):
      ch, cw = pp.grid_count(h, 32), pp.grid_count(w, 32)
      length = scorer_lib.length_bucket(fixed + ch * cw)
      grid = pp.canvas_grid(ch, cw, length - fixed)
      assert grid[0] >= ch and grid[1] >= cw
      if max(ch, cw) > 8:
        worst = max(worst, grid[0] * grid[1] / (length - fixed))
      lengths.add(length)
      programs.add((length, grid))  # What a compiled program depends on.
      if 0.5 <= cw / ch < 2:  # Photos: 1:2 portrait .. 2:1 landscape.
        photo_lengths.add(length)
        photo_programs.add((length, grid))
  assert worst <= math.sqrt(2) + 1e-9
  # For photos, at most twice the programs of length buckets alone (one
  # canvas per bucket and orientation); ~40 aspect classes of 1:1400 to
  # 1400:1 still need far fewer programs than the 1330 sizes.
  assert len(photo_programs) <= 2 * len(photo_lengths)
  assert len(programs) < 1330 / 4


def test_plans_are_cached_and_read_only():
  a = pp.make_plan(300, 451, CFG, (16, 16), 512)
  assert pp.make_plan(300, 451, CFG, (16, 16), 512) is a
  assert not a["mask"].flags.writeable
  assert a["mask"].shape == (512,) and a["mask"].sum() == 35 + 96 + 150
  with pytest.raises(ValueError, match="cannot hold"):
    pp.make_plan(300, 451, CFG, (8, 8))
  with pytest.raises(ValueError, match="more than the length"):
    pp.make_plan(300, 451, CFG, None, 100)


def test_value_range_and_concatenated_round_trip():
  img = np.array([[[0, 255, 128]]], np.uint8)
  np.testing.assert_allclose(pp.normalize_value_range(img).ravel(),
                             [-1.0, 1.0, 128 / 255 * 2 - 1], atol=1e-7)
  np.testing.assert_array_equal(
      pp.normalize_value_range(img),
      ref.normalize_value_range(tf.constant(img)).numpy())
  f = pp.preprocess_image(np.zeros([40, 60, 3], np.uint8), CFG)
  back = pp.from_concatenated(pp.to_concatenated(f))
  for k in pp.FEATURE_KEYS:
    np.testing.assert_array_equal(back[k], f[k])


def test_config_validation():
  with pytest.raises(ValueError, match="Unknown preprocessing keys"):
    pp.PreprocessConfig.from_dict({"patch_sise": 32})
  with pytest.raises(ValueError, match="no scale"):
    pp.preprocess_image(np.zeros([8, 8, 3], np.uint8),
                        pp.PreprocessConfig(longer_side_lengths=(),
                                            max_seq_len_from_original_res=None))
