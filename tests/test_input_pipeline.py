"""Input pipeline: exact-once eval, bounded bucket shapes, flips, shards."""

import collections

import numpy as np
import pytest

import musiq_jax.datasets  # pylint: disable=unused-import
from musiq_jax import input_pipeline as ip
from conftest import TINY_DATASET as NAME
from musiq_jax import preprocessing

CFG = preprocessing.PreprocessConfig(
    patch_size=16, patch_stride=16, longer_side_lengths=(32,),
    max_seq_len_from_original_res=-1)


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir):
  return tiny_data_dir  # Built once per test run (conftest.py).


def _ids(batches):
  return [i.decode() for b in batches for i, v in zip(b["image_id"],
                                                      b["valid"]) if v > 0]


@pytest.mark.parametrize("batching", ["padded", "bucketed"])
def test_eval_visits_every_example_once(data_dir, batching):
  n = ip.get_num_examples(NAME, "train", data_dir=data_dir)
  batches = list(ip.get_dataset(NAME, "train", data_dir=data_dir,
                                pp_config=CFG, batch_size=8, train=False,
                                batching=batching, num_buckets=3))
  ids = _ids(batches)
  assert len(ids) == len(set(ids)) == n == 93
  for b in batches:
    assert b["patches"].shape[0] == 8
    assert b["patches"].dtype == np.float32 and b["mask"].dtype == np.int32
    assert b["label"].dtype == np.float32 and b["valid"].dtype == np.float32
    pad = b["valid"] == 0
    assert not b["mask"][pad].any()  # Dummy examples are fully masked.
    assert (b["label"][~pad] > 1).all()
  assert sum(int((b["valid"] == 0).sum()) for b in batches) > 0


def test_bucketed_shapes_bounded_and_less_padding(data_dir):
  kw = dict(data_dir=data_dir, pp_config=CFG, batch_size=4, train=False)
  padded = ip.batch_stats(ip.get_dataset(NAME, "train", batching="padded",
                                         **kw))
  bucketed = ip.batch_stats(ip.get_dataset(NAME, "train", batching="bucketed",
                                           num_buckets=2, **kw))
  assert padded["num_shapes"] == 1
  assert bucketed["num_shapes"] <= 2
  assert bucketed["real_fraction"] > padded["real_fraction"]


def test_bucket_boundaries_minimise_padding():
  lengths = [10] * 50 + [11] * 5 + [40] * 30 + [100] * 2
  assert ip.bucket_boundaries(lengths, 3) == [11, 40, 100]
  assert ip.bucket_boundaries(lengths, 8) == [10, 11, 40, 100]
  assert ip.bucket_boundaries(lengths, 2, max_len=50) == [11, 50]


def test_flip_only_in_train(data_dir):
  kw = dict(data_dir=data_dir, pp_config=CFG, batch_size=93, repeat=1)
  ev = next(iter(ip.get_dataset(NAME, "train", train=False, **kw)))
  tr = next(iter(ip.get_dataset(NAME, "train", train=True, seed=3,
                                shuffle_buffer=1, **kw)))
  ev2 = next(iter(ip.get_dataset(NAME, "train", train=False, **kw)))
  np.testing.assert_array_equal(ev["patches"], ev2["patches"])
  ref = {i: p for i, p in zip(ev["image_id"], ev["patches"])}
  same = flipped = 0
  for i, p in zip(tr["image_id"], tr["patches"]):
    if np.array_equal(p, ref[i]):
      same += 1
    else:
      flipped += 1
  assert same > 10 and flipped > 10  # Random, about half each.


def test_random_crops_shrink_images_deterministically(data_dir):
  kw = dict(data_dir=data_dir, pp_config=CFG, batch_size=93, repeat=1,
            train=True, seed=3, shuffle_buffer=1)
  plain = next(iter(ip.get_dataset(NAME, "train", **kw)))
  crop = next(iter(ip.get_dataset(NAME, "train", crop_min_fraction=0.5, **kw)))
  again = next(iter(ip.get_dataset(NAME, "train", crop_min_fraction=0.5,
                                   **kw)))
  np.testing.assert_array_equal(crop["patches"], again["patches"])
  np.testing.assert_array_equal(crop["label"], plain["label"])
  tokens, plain_tokens = crop["mask"].sum(1), plain["mask"].sum(1)
  # Crops keep 50..100% of each side: never more tokens, usually fewer.
  assert (tokens <= plain_tokens).all()
  assert (tokens < plain_tokens).mean() > 0.5
  with pytest.raises(ValueError, match="crop_min_fraction"):
    ip.make_dataset(NAME, "train", crop_min_fraction=0.0, **kw)


def test_channel_shuffle_permutes_colours_and_keeps_labels(data_dir):
  kw = dict(data_dir=data_dir, pp_config=CFG, batch_size=93, repeat=1,
            train=True, seed=3, shuffle_buffer=1)
  plain = next(iter(ip.get_dataset(NAME, "train", **kw)))
  mixed = next(iter(ip.get_dataset(NAME, "train", channel_shuffle=True, **kw)))
  again = next(iter(ip.get_dataset(NAME, "train", channel_shuffle=True, **kw)))
  np.testing.assert_array_equal(mixed["patches"], again["patches"])
  np.testing.assert_array_equal(mixed["label"], plain["label"])
  np.testing.assert_array_equal(mixed["mask"], plain["mask"])
  perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
  used = collections.Counter()
  for p, m in zip(plain["patches"], mixed["patches"]):
    p, m = p.reshape(p.shape[0], -1, 3), m.reshape(m.shape[0], -1, 3)
    matches = [o for o in perms if np.array_equal(p[..., list(o)], m)]
    assert matches, "not a permutation of the channels of the same image"
    if len(matches) == 1:  # Colour images: the permutation is determined.
      used[matches[0]] += 1
  assert len(used) >= 4 and used[(0, 1, 2)] < sum(used.values()) / 2


def test_mos_proxy_is_symmetric_in_the_colour_channels():
  # Why channel_shuffle keeps synthetic_iqa's labels exactly.
  from musiq_jax.datasets import distortions, synthetic_iqa
  rng = np.random.default_rng(0)
  ref = synthetic_iqa.load_content("astronaut", 64)
  for name in ("jpeg", "white_noise", "gaussian_blur"):
    img = distortions.apply_distortion(ref, name, 3, rng)
    want = synthetic_iqa.mos_proxy(ref, img)
    for order in ([2, 1, 0], [1, 2, 0]):
      got = synthetic_iqa.mos_proxy(ref[..., order], img[..., order])
      np.testing.assert_allclose(got, want, rtol=1e-6)


def test_train_stream_resumes_with_skip(data_dir):
  kw = dict(data_dir=data_dir, pp_config=CFG, batch_size=4, train=True,
            seed=5, batching="bucketed", num_buckets=2, crop_min_fraction=0.7)
  full = ip.get_dataset(NAME, "train", **kw)
  first = [b for _, b in zip(range(7), full)]
  resumed = next(iter(ip.get_dataset(NAME, "train", skip_batches=6, **kw)))
  for k in ("patches", "label", "mask"):
    np.testing.assert_array_equal(first[6][k], resumed[k])


def test_process_shards_are_disjoint_and_cover(data_dir):
  seen = collections.Counter()
  for p in range(3):
    ids = _ids(ip.get_dataset(NAME, "train", data_dir=data_dir, pp_config=CFG,
                              batch_size=8, train=False, process_index=p,
                              process_count=3))
    assert len(ids) == ip.get_num_examples(NAME, "train", data_dir=data_dir,
                                           process_index=p, process_count=3)
    seen.update(ids)
  assert len(seen) == 93 and max(seen.values()) == 1


def test_bad_arguments(data_dir):
  with pytest.raises(ValueError, match="batching"):
    ip.make_dataset(NAME, "train", data_dir=data_dir, pp_config=CFG,
                    batch_size=2, train=False, batching="ragged")
  with pytest.raises(ValueError, match="process_index"):
    ip.process_split("train", 3, 2)
