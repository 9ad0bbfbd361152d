"""synthetic_iqa builds offline, deterministically, with content-disjoint splits."""

import collections

import numpy as np
import pytest
import skimage.data
import tensorflow_datasets as tfds

import musiq_jax.datasets  # pylint: disable=unused-import
from musiq_jax.datasets import distortions
from musiq_jax.datasets import synthetic_iqa


def _records(data_dir):
  b = tfds.builder("synthetic_iqa/tiny", data_dir=data_dir)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False))
  out = {}
  for split in ("train", "validation", "test"):
    ds = b.as_dataset(split, decoders={"image": tfds.decode.SkipDecoding()})
    for e in tfds.as_numpy(ds):
      out[e["image_id"].decode()] = (split, e)
  return out


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
  return (_records(str(tmp_path_factory.mktemp("a"))),
          _records(str(tmp_path_factory.mktemp("b"))))


def test_deterministic(two_builds):
  a, b = two_builds
  assert sorted(a) == sorted(b) and len(a) == 5 * 31
  for k in a:
    assert a[k][0] == b[k][0]
    for f in a[k][1]:
      np.testing.assert_array_equal(a[k][1][f], b[k][1][f], err_msg=(k, f))


def test_content_disjoint_splits(two_builds):
  recs, _ = two_builds
  contents = collections.defaultdict(set)
  for split, e in recs.values():
    contents[split].add(int(e["content_id"]))
  assert all(contents[s] for s in ("train", "validation", "test"))
  assert not contents["train"] & contents["test"]
  assert not contents["train"] & contents["validation"]
  assert not contents["validation"] & contents["test"]


def test_mos_decreases_with_level(two_builds):
  recs, _ = two_builds
  by = collections.defaultdict(list)
  pristine = []
  for _, e in recs.values():
    if int(e["distortion_level"]) == 0:
      pristine.append(float(e["mos"]))
      continue
    by[(int(e["distortion_type"]), int(e["distortion_level"]))].append(
        float(e["mos"]))
  assert len(pristine) == 5 and np.allclose(pristine, pristine[0])
  for t in range(1, 7):
    means = [np.mean(by[(t, lvl)]) for lvl in range(1, 6)]
    assert means[0] < pristine[0]
    assert all(np.diff(means) < 0), (t, means)
  assert 1.0 <= min(float(e["mos"]) for _, e in recs.values())
  assert max(float(e["mos"]) for _, e in recs.values()) <= 5.0


def test_distortion_api():
  image = synthetic_iqa.load_content("chelsea", 64)
  assert image.dtype == np.uint8 and image.shape == (43, 64, 3)
  rng = np.random.default_rng(0)
  for name in distortions.DISTORTION_NAMES:
    assert len(distortions.DISTORTIONS[name]) == 5
    out = distortions.apply_distortion(image, name, 3, rng)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image), name
  np.testing.assert_array_equal(
      distortions.apply_distortion(image, "jpeg", 0, rng), image)
  with pytest.raises(ValueError, match="Unknown distortion"):
    distortions.apply_distortion(image, "fog", 1, rng)
  with pytest.raises(ValueError, match="needs rng"):
    distortions.apply_distortion(image, "white_noise", 1)


def test_continuous_strength_interpolates_the_level_table():
  image = synthetic_iqa.load_content("chelsea", 64)
  for name in distortions.DISTORTION_NAMES:
    table = distortions.DISTORTIONS[name]
    assert distortions.parameter_at(name, 0) == distortions.IDENTITY[name]
    for level in range(1, 6):
      assert distortions.parameter_at(name, level) == table[level - 1]
    mid = distortions.parameter_at(name, 2.5)
    assert min(table[1], table[2]) <= mid <= max(table[1], table[2]), name
    # An integer strength is exactly the fixed level, noise included.
    np.testing.assert_array_equal(
        distortions.apply_distortion_at(image, name, 3.0,
                                        np.random.default_rng(5)),
        distortions.apply_distortion(image, name, 3,
                                     np.random.default_rng(5)))
  # The label falls as the strength grows between the levels too.
  ref = synthetic_iqa.load_content("astronaut", 96)
  mos = [synthetic_iqa.mos_proxy(ref, distortions.apply_distortion_at(
      ref, "gaussian_blur", s)) for s in (1.0, 1.5, 2.0, 2.5, 3.0)]
  assert all(np.diff(mos) < 0), mos
  with pytest.raises(ValueError, match="out of range"):
    distortions.parameter_at("jpeg", 5.5)


def test_local_distortions():
  image = synthetic_iqa.load_content("astronaut", 64)  # 64 x 64.
  pix = distortions.apply_distortion(image, "pixelate", 1)  # Factor 2.
  assert not np.array_equal(pix, image)
  np.testing.assert_array_equal(pix[0::2, 0::2], pix[1::2, 1::2])
  rng = np.random.default_rng(0)
  noisy = distortions.apply_distortion(image, "impulse_noise", 5, rng)
  changed = np.any(noisy != image, axis=-1)
  # Level 5 hits 12% of the pixels; hit pixels are black or white.
  assert 0.06 < changed.mean() < 0.18
  assert set(np.unique(noisy[changed])) <= {0, 255}
  with pytest.raises(ValueError, match="needs rng"):
    distortions.apply_distortion(image, "impulse_noise", 1)


def _build(config, data_dir):
  b = synthetic_iqa.SyntheticIqa(config=config, data_dir=data_dir)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False))
  return {split: list(tfds.as_numpy(b.as_dataset(split)))
          for split in ("train", "validation", "test")}


def test_rich_training_split_leaves_evaluation_splits_unchanged(
    tmp_path, monkeypatch):
  loads = []
  load_content = synthetic_iqa.load_content
  monkeypatch.setattr(synthetic_iqa, "load_content", lambda name, side: (
      loads.append((name, side)), load_content(name, side))[1])
  common = dict(max_side=48, contents=("astronaut", "coffee", "chelsea",
                                       "camera", "coins"),
                distortion_names=("gaussian_blur", "impulse_noise"))
  plain = _build(synthetic_iqa.SyntheticConfig(name="plain", **common),
                 str(tmp_path / "a"))
  rich = _build(synthetic_iqa.SyntheticConfig(
      name="rich", train_views=2, train_strengths=3,
      extra_train_contents=("gravel",), dead_leaves=2, **common),
                str(tmp_path / "b"))
  for split in ("validation", "test"):
    key = lambda e: e["image_id"]
    for a, b in zip(sorted(plain[split], key=key),
                    sorted(rich[split], key=key)):
      assert a["image_id"] == b["image_id"] and a["mos"] == b["mos"]
      np.testing.assert_array_equal(a["image"], b["image"])
  train_refs = {e["reference"].decode() for e in plain["train"]}
  rich_refs = {e["reference"].decode() for e in rich["train"]}
  leaves = {"dead_leaves_0", "dead_leaves_1"}
  assert rich_refs == train_refs | {"gravel"} | leaves
  eval_refs = {e["reference"].decode() for s in ("validation", "test")
               for e in rich[s]}
  assert not rich_refs & eval_refs
  # Crops and dead-leaves textures come from the training photos only (the
  # evaluation photos are never loaded at twice the size).
  assert {n for n, side in loads if side == 96} == train_refs | {"gravel"}
  # Per view: the pristine photo + 2 types x 3 strengths; photos have 2
  # views, generated contents 1.
  assert len(rich["train"]) == (len(rich_refs) - 2) * 2 * 7 + 2 * 7
  crops = [e for e in rich["train"] if b"@crop1/" in e["image_id"]]
  assert len(crops) == (len(rich_refs) - 2) * 7
  generated = [e for e in rich["train"] if e["reference"].decode() in leaves]
  assert len({e["image_id"] for e in generated}) == 14
  assert all(max(e["height"], e["width"]) == 48 for e in generated)
  levels = {int(e["distortion_level"]) for e in rich["train"]
            if int(e["distortion_type"]) > 0}
  assert levels <= {1, 2, 3, 4, 5} and len(levels) > 1
  # A view's pristine image scores the maximum; its distortions less (a
  # very weak strength may leave an image unchanged, so not all of them).
  pristine = [e["mos"] for e in rich["train"] if e["distortion_type"] == 0]
  other = [e["mos"] for e in rich["train"] if e["distortion_type"] > 0]
  np.testing.assert_allclose(pristine, 4.8622, atol=1e-3)
  assert max(other) <= max(pristine) and np.mean(np.less(other, 4.86)) > 0.8


def test_extra_contents_must_not_overlap_the_split_contents(tmp_path):
  cfg = synthetic_iqa.SyntheticConfig(
      name="bad", max_side=32,
      contents=("astronaut", "coffee", "chelsea", "camera", "coins"),
      extra_train_contents=("coffee",))
  with pytest.raises(ValueError, match="extra_train_contents"):
    _build(cfg, str(tmp_path))


def test_dead_leaves_is_seeded_covered_and_uses_its_sources():
  rng = lambda seed: np.random.default_rng(seed)
  a = synthetic_iqa.dead_leaves(rng(0), 40, 56, supersample=1)
  assert a.shape == (40, 56, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(
      a, synthetic_iqa.dead_leaves(rng(0), 40, 56, supersample=1))
  assert np.any(a != synthetic_iqa.dead_leaves(rng(1), 40, 56, supersample=1))
  # Without anti-aliasing every pixel is one leaf's flat colour: few
  # colours, each covering a region; large leaves leave large regions.
  colours, counts = np.unique(a.reshape(-1, 3), axis=0, return_counts=True)
  assert 3 < len(colours) < a.shape[0] * a.shape[1] / 4
  assert counts.max() > 40
  # Textured: a constant grey source under per-channel gains in [0.6, 1.2]
  # bounds every pixel, flat or textured; supersampling averages leaves.
  grey = np.full((64, 64, 3), 100, np.uint8)
  b = synthetic_iqa.dead_leaves(rng(2), 24, 32, [grey], texture_fraction=1.0)
  assert b.min() >= 60 and b.max() <= 120 and b.std() > 1
  # Stopped before covering: the holes take the mean colour, not black.
  c = synthetic_iqa.dead_leaves(rng(3), 64, 64, [grey], max_leaves=3,
                                max_radius=4, supersample=1)
  assert c.min() >= 60
  with pytest.raises(ValueError, match="min_radius"):
    synthetic_iqa.dead_leaves(rng(0), 8, 8, min_radius=9, max_radius=4)


def test_fixed_evaluation_contents(tmp_path):
  common = dict(max_side=32, contents=("astronaut", "coffee", "chelsea",
                                       "camera", "coins"),
                distortion_names=("gaussian_blur",))
  got = _build(synthetic_iqa.SyntheticConfig(
      name="fixed", validation_contents=("coins",),
      test_contents=("astronaut", "camera"), **common), str(tmp_path))
  refs = {s: {e["reference"].decode() for e in got[s]} for s in got}
  assert refs == {"train": {"coffee", "chelsea"}, "validation": {"coins"},
                  "test": {"astronaut", "camera"}}
  for bad, match in (
      (dict(validation_contents=("coins",)), "both be given"),
      (dict(validation_contents=("coins",), test_contents=("coins",)),
       "disjoint"),
      (dict(validation_contents=("clock",), test_contents=("camera",)),
       "not in contents")):
    with pytest.raises(ValueError, match=match):
      _build(synthetic_iqa.SyntheticConfig(name="bad", **bad, **common),
             str(tmp_path / "bad"))


def test_demo_leaves_out_the_motion_blurred_clock():
  demo = synthetic_iqa.SyntheticIqa.builder_configs["demo"]
  assert "clock" not in demo.contents + demo.extra_train_contents
  # scikit-image documents the photo as blurred: not a pristine reference.
  assert "blur" in skimage.data.clock.__doc__.lower()
  assert demo.test_contents == ("astronaut", "camera", "chelsea")
