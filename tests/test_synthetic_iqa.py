"""synthetic_iqa builds offline, deterministically, with content-disjoint splits."""

import collections

import numpy as np
import pytest
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
