"""Tests of the RankIQA ranked-batch generator and crop evaluation."""

import numpy as np
from PIL import Image
import pytest
import skimage.data

from musiq_jax import rankiqa
from musiq_jax.datasets import distortions

CROP = 48


@pytest.fixture(scope="module")
def pristine():
  # Three packaged photos, downsized so the tests stay fast.
  photos = (skimage.data.astronaut, skimage.data.chelsea, skimage.data.coffee)
  return [np.asarray(Image.fromarray(f()).resize((120, 96), Image.LANCZOS))
          for f in photos]


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return np.inf if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _find_window(image, window):
  """All (top, left) where `window` occurs in `image`."""
  s = window.shape[0]
  return [(t, l) for t in range(image.shape[0] - s + 1)
          for l in range(image.shape[1] - s + 1)
          if np.array_equal(image[t:t + s, l:l + s], window)]


def test_documented_arrangement(pristine):
  cfg = rankiqa.RankBatchConfig(crop_size=CROP)  # RankIQA LIVE: 4 x 6 x 2.
  assert cfg.batch_size == 48
  batch = rankiqa.RankedBatchGenerator(pristine, cfg).batch(0)
  assert batch["image"].shape == (48, CROP, CROP, 3)
  assert batch["image"].dtype == np.uint8
  # Type-major, then level, then content.
  np.testing.assert_array_equal(batch["level"],
                                np.tile(np.repeat(np.arange(6), 2), 4))
  np.testing.assert_array_equal(
      batch["distortion"],
      np.repeat([distortions.DISTORTION_NAMES.index(n)
                 for n in rankiqa.RANKIQA_LIVE_TYPES], 12))
  np.testing.assert_array_equal(
      batch["group"], np.tile([0, 1], 24) + 2 * np.repeat(np.arange(4), 12))
  np.testing.assert_array_equal(batch["weight"], 1.0)
  for g in range(8):
    idx = np.flatnonzero(batch["group"] == g)
    # One image per level; one content and one type per group; the two
    # contents of a type differ.
    np.testing.assert_array_equal(batch["level"][idx], np.arange(6))
    assert len(set(batch["content"][idx])) == 1
    assert len(set(batch["distortion"][idx])) == 1
  for t in range(4):
    assert len(set(batch["content"][12 * t:12 * (t + 1)])) == 2
    # The pristine crop is a window of its source photo, and every level of
    # the group is cropped from that same window.
    for g in (2 * t, 2 * t + 1):
      idx = np.flatnonzero(batch["group"] == g)
      ref = batch["image"][idx[0]]
      assert _find_window(pristine[batch["content"][idx[0]]], ref)


def test_group_by_type_and_sampled_types(pristine):
  cfg = rankiqa.RankBatchConfig(
      distortion_names=distortions.DISTORTION_NAMES, types_per_batch=3,
      contents_per_type=1, levels=(0, 1, 2, 3, 4), crop_size=CROP,
      group_by="type")
  assert cfg.batch_size == 15  # TID-like: types x 5 levels x 1 content.
  gen = rankiqa.RankedBatchGenerator(pristine, cfg)
  batch = gen.batch(0)
  np.testing.assert_array_equal(batch["group"], np.repeat(np.arange(3), 5))
  np.testing.assert_array_equal(batch["level"], np.tile(np.arange(5), 3))
  assert len(set(batch["distortion"])) == 3
  # Different batches sample different types (over a few batches).
  seen = {tuple(gen.batch(k)["distortion"][::5]) for k in range(6)}
  assert len(seen) > 1
  with pytest.raises(ValueError):
    rankiqa.RankBatchConfig(distortion_names=("nope",))
  with pytest.raises(ValueError):
    rankiqa.RankBatchConfig(group_by="content")
  with pytest.raises(ValueError):
    rankiqa.RankedBatchGenerator(pristine, rankiqa.RankBatchConfig(
        crop_size=100))


def test_deterministic_and_resumable(pristine):
  cfg = rankiqa.RankBatchConfig(crop_size=CROP, seed=3)
  a = rankiqa.RankedBatchGenerator(pristine, cfg)
  b = rankiqa.RankedBatchGenerator(pristine, cfg)
  first = list(a.batches(num_batches=3))
  resumed = next(b.batches(start_index=2))
  for key in first[2]:
    np.testing.assert_array_equal(first[2][key], resumed[key])
  np.testing.assert_array_equal(first[0]["image"], b.batch(0)["image"])
  assert not np.array_equal(first[0]["image"], first[1]["image"])
  other = rankiqa.RankedBatchGenerator(
      pristine, rankiqa.RankBatchConfig(crop_size=CROP, seed=4)).batch(0)
  assert not np.array_equal(first[0]["image"], other["image"])


@pytest.mark.parametrize("crop_first", [True, False])
def test_levels_monotone_in_psnr(pristine, crop_first):
  cfg = rankiqa.RankBatchConfig(
      distortion_names=distortions.DISTORTION_NAMES, crop_size=CROP,
      crop_first=crop_first)
  gen = rankiqa.RankedBatchGenerator(pristine, cfg)
  for k in range(2):
    batch = gen.batch(k)
    for g in np.unique(batch["group"]):
      idx = np.flatnonzero(batch["group"] == g)
      idx = idx[np.argsort(batch["level"][idx])]
      ref = batch["image"][idx[0]]
      psnr = [_psnr(ref, batch["image"][i]) for i in idx]
      name = distortions.DISTORTION_NAMES[batch["distortion"][idx[0]]]
      assert psnr[0] == np.inf
      assert np.all(np.diff(psnr) < 0), (name, psnr)


def test_tf_dataset_matches_generator(pristine):
  tf = pytest.importorskip("tensorflow")
  cfg = rankiqa.RankBatchConfig(crop_size=32, seed=1)
  gen = rankiqa.RankedBatchGenerator(pristine, cfg)
  ds = gen.as_tf_dataset(num_batches=2, start_index=1)
  assert ds.element_spec["image"].shape == (48, 32, 32, 3)
  got = list(ds.as_numpy_iterator())
  assert len(got) == 2
  for k, batch in enumerate(got):
    expected = gen.batch(1 + k)
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key])
  del tf


def test_folder_source_gives_same_batches(pristine, tmp_path):
  for i, image in enumerate(pristine):
    Image.fromarray(image).save(tmp_path / f"{i:02d}.png")
  (tmp_path / "notes.txt").write_text("not an image")
  paths = rankiqa.list_image_folder(str(tmp_path))
  assert [p[-6:] for p in paths] == ["00.png", "01.png", "02.png"]
  cfg = rankiqa.RankBatchConfig(crop_size=32, seed=2)
  from_paths = rankiqa.RankedBatchGenerator(paths, cfg).batch(0)
  from_arrays = rankiqa.RankedBatchGenerator(pristine, cfg).batch(0)
  for key in from_arrays:
    np.testing.assert_array_equal(from_paths[key], from_arrays[key])
  with pytest.raises(ValueError):
    rankiqa.list_image_folder(str(tmp_path / "missing"))


def test_random_crops_and_crop_prediction(pristine):
  image = pristine[0]
  crops = rankiqa.random_crops(image, crop_size=CROP, num_crops=30, seed=5)
  assert crops.shape == (30, CROP, CROP, 3)
  np.testing.assert_array_equal(
      crops, rankiqa.random_crops(image, CROP, 30, seed=5))
  assert not np.array_equal(crops, rankiqa.random_crops(image, CROP, 30,
                                                        seed=6))
  for c in crops[:3]:
    assert _find_window(image, c)
  assert len({c.tobytes() for c in crops}) > 1

  def mean_pixel(batch):
    return batch.reshape(batch.shape[0], -1).mean(-1)

  per_crop = mean_pixel(crops.astype(np.float64))
  assert rankiqa.predict_with_crops(
      mean_pixel, image, CROP, 30, seed=5) == pytest.approx(per_crop.mean())
  assert rankiqa.predict_with_crops(
      mean_pixel, image, CROP, 30, reduce="median",
      seed=5) == pytest.approx(np.median(per_crop))
  with pytest.raises(ValueError):
    rankiqa.random_crops(image, crop_size=200)


def test_synthetic_pristine_split_is_a_subset():
  train = rankiqa.synthetic_pristine_images(
      split="train", max_side=48, contents=("astronaut", "coffee", "chelsea",
                                            "camera", "coins"))
  everything = rankiqa.synthetic_pristine_images(
      max_side=48, contents=("astronaut", "coffee", "chelsea", "camera",
                             "coins"))
  assert len(everything) == 5 and 0 < len(train) < 5
  assert all(im.dtype == np.uint8 and im.shape[-1] == 3 and
             max(im.shape[:2]) <= 48 for im in everything)
