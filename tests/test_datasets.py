"""Each real-dataset builder builds offline from a tiny copy of its download.

The copies (tests/dataset_fixtures.py) have the file names, headers, .mat
variables and folder nesting of each dataset as distributed, from the sources
named there; every builder is built from the folder the download unpacks to
and from the folder holding it.
"""

import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import dataset_fixtures as df
import musiq_jax.datasets  # pylint: disable=unused-import  # registers builders
from musiq_jax import image_io

LAYOUTS = ("unpacked", "holder")


def _base(tmp_path, builder, layout):
  """(manual_dir, dataset folder): the same folder, or manual_dir/<top>."""
  manual = str(tmp_path / "m")
  if layout == "unpacked":
    return manual, manual
  return manual, os.path.join(manual, df.TOP_FOLDERS[builder])


def _build(name, manual, data_dir, config=None):
  b = tfds.builder(name, data_dir=data_dir, config=config)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual, try_download_gcs=False))
  return tfds.builder(name, data_dir=data_dir, config=config)


def _load(builder, split):
  ds = builder.as_dataset(split, decoders={"image": tfds.decode.SkipDecoding()})
  return list(tfds.as_numpy(ds))


def _sizes(builder):
  return {k: v.num_examples for k, v in builder.info.splits.items()}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_koniq10k(tmp_path, layout):
  manual, base = _base(tmp_path, "koniq10k", layout)
  # The split file where the subpic/koniq repository keeps it (metadata/).
  df.make_koniq(base, split_file_in_metadata=layout == "holder")
  b = _build("koniq10k", manual, str(tmp_path / "d"))
  assert _sizes(b) == {"train": 6, "validation": 2, "test": 2}
  ex = {e["image_id"].decode(): e for e in _load(b, "train+validation+test")}
  e = ex["1003.jpg"]
  assert e["mos"] == pytest.approx(30.0) and e["mos_1to5"] == pytest.approx(1.9)
  assert e["mos_std"] == pytest.approx(0.5)
  assert (e["height"], e["width"]) == (12, 16)
  # Stored bytes decode (tf.data path) to exactly the prediction pixels.
  want = image_io.read_image(os.path.join(base, "1024x768", "1003.jpg"))
  got = image_io.tf_decode(e["image"]).numpy()
  np.testing.assert_array_equal(got, want)


def test_koniq10k_sd_from_the_split_file(tmp_path):
  # The score file's SD column is not checked against a primary source;
  # without it, SD comes from the split file (which has one).
  manual = str(tmp_path / "m")
  names = df.make_koniq(manual)
  df.write_csv(os.path.join(manual, "koniq10k_scores_and_distributions.csv"),
               ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS",
                "MOS_zscore"],
               [[n, 1, 2, 3, 4, 5, 15, 3.0, 50.0] for n in names])
  b = _build("koniq10k", manual, str(tmp_path / "d"))
  assert all(e["mos_std"] == pytest.approx(0.5)
             for e in _load(b, "train+validation+test"))


def test_koniq10k_bad_mos_names_row(tmp_path):
  manual = str(tmp_path / "m")
  df.make_koniq(manual)
  p = os.path.join(manual, "koniq10k_scores_and_distributions.csv")
  text = open(p).read().splitlines()
  parts = text[3].split(",")
  parts[-1] = "nan"
  text[3] = ",".join(parts)
  open(p, "w").write("\n".join(text) + "\n")
  with pytest.raises(ValueError, match=r"line 4: column 'MOS_zscore'"):
    _build("koniq10k", manual, str(tmp_path / "d"))


def test_koniq10k_wrong_columns(tmp_path):
  manual = str(tmp_path / "m")
  df.make_koniq(manual)
  df.write_csv(os.path.join(manual, "koniq10k_scores_and_distributions.csv"),
               ["name", "score"], [["1000.jpg", 3]])
  with pytest.raises(ValueError, match=r"missing column\(s\)"):
    _build("koniq10k", manual, str(tmp_path / "d"))


def test_koniq10k_missing_split_file_says_where_to_get_it(tmp_path):
  manual = str(tmp_path / "m")
  df.make_koniq(manual)
  os.remove(os.path.join(manual, "koniq10k_distributions_sets.csv"))
  with pytest.raises(ValueError, match="subpic/koniq"):
    _build("koniq10k", manual, str(tmp_path / "d"))


def test_missing_image_fails_or_is_skipped(tmp_path):
  manual = str(tmp_path / "m")
  df.make_koniq(manual)
  os.remove(os.path.join(manual, "1024x768", "1002.jpg"))
  with open(os.path.join(manual, "1024x768", "1004.jpg"), "wb") as f:
    f.write(b"not a jpeg")
  with pytest.raises(ValueError, match=r"line \d+: .*1002\.jpg.*not found"):
    _build("koniq10k", manual, str(tmp_path / "d1"))
  cfg = musiq_jax.datasets.koniq10k.KonIQConfig(name="1024x768_skip",
                                                on_bad_image="skip")
  b = _build("koniq10k", manual, str(tmp_path / "d2"), config=cfg)
  assert sum(v.num_examples for v in b.info.splits.values()) == 8
  skipped = sum(b.info.metadata["skipped_images"].values(), [])
  assert len(skipped) == 2 and any("1002.jpg" in s for s in skipped)


def test_empty_manual_dir_gives_instructions(tmp_path):
  os.makedirs(tmp_path / "m")
  with pytest.raises(ValueError, match="koniq10k_1024x768.zip"):
    _build("koniq10k", str(tmp_path / "m"), str(tmp_path / "d"))
  (tmp_path / "m" / "other.txt").write_text("x")
  with pytest.raises(ValueError, match=r"koniq10k/koniq10k_scores_and"):
    _build("koniq10k", str(tmp_path / "m"), str(tmp_path / "d"))


@pytest.mark.parametrize("fmt,layout", [("xlsx", "unpacked"),
                                        ("xlsx", "holder"),
                                        ("csv", "unpacked")])
def test_spaq(tmp_path, fmt, layout):
  manual, base = _base(tmp_path, "spaq", layout)
  df.make_spaq(base, fmt=fmt)
  b = _build("spaq", manual, str(tmp_path / "d"))
  sizes = _sizes(b)
  assert sum(sizes.values()) == 12 and min(sizes.values()) >= 1
  ex = {e["image_id"].decode(): e for e in _load(b, "train+validation+test")}
  assert ex["00003.jpg"]["mos"] == pytest.approx(12.0)
  assert ex["00003.jpg"]["sharpness"] == pytest.approx(54.0)
  assert ex["00003.jpg"]["height"] == 14


def test_spaq_resized_config(tmp_path):
  manual = str(tmp_path / "m")
  sizes = [(30, 40), (40, 30), (40, 30)]
  df.make_spaq(manual, n=3, fmt="csv",
               image=lambda i: df.random_image(*sizes[i])(i))
  cfg = musiq_jax.datasets.spaq.SPAQConfig(name="s15", shorter_side=15)
  b = _build("spaq", manual, str(tmp_path / "d"), config=cfg)
  got = {(int(e["height"]), int(e["width"]))
         for e in _load(b, "train+validation+test")}
  assert got == {(15, 20), (20, 15)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_paq2piq(tmp_path, layout, caplog):
  manual, base = _base(tmp_path, "paq2piq", layout)
  names, split = df.make_paq2piq(base)
  caplog.set_level(logging.WARNING)
  b = _build("paq2piq", manual, str(tmp_path / "d"))
  assert _sizes(b) == {"train": 5, "validation": 2, "test": 2}
  ex = {}
  for s in ("train", "validation", "test"):
    for e in _load(b, s):
      ex[e["image_id"].decode()] = (s, float(e["mos"]))
  assert {n: s for n, (s, _) in ex.items()} == split
  assert ex[names[2]][1] == pytest.approx(52.0)
  # The picture in neither split file went to train, and the log says so.
  assert split["EE371R/rq59.jpg"] == "train"
  assert "1 picture(s)" in caplog.text and "EE371R/rq59.jpg" in caplog.text


def test_paq2piq_test_file_under_fastiqa_name(tmp_path):
  manual = str(tmp_path / "m")
  df.make_paq2piq(manual)
  os.rename(os.path.join(manual, "labels640.csv"),
            os.path.join(manual, "labels>640.csv"))
  b = _build("paq2piq", manual, str(tmp_path / "d"))
  assert b.info.splits["test"].num_examples == 2


def test_paq2piq_wrong_header_is_named(tmp_path):
  manual = str(tmp_path / "m")
  names, _ = df.make_paq2piq(manual)
  df.write_csv(os.path.join(manual, "labels_image.csv"),
               ["name_image", "mos_image"], [[n, 50] for n in names])
  with pytest.raises(ValueError, match=r"labels_image.csv: missing column"):
    _build("paq2piq", manual, str(tmp_path / "d"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ava(tmp_path, layout):
  manual, base = _base(tmp_path, "ava", layout)
  lines, test_ids = df.make_ava(base)
  b = _build("ava", manual, str(tmp_path / "d"))
  assert _sizes(b) == {"test": 3, "validation": 1, "train": 21}
  test = {x["image_id"].decode(): x for x in _load(b, "test")}
  assert sorted(test) == test_ids  # Bare ids, not file names.
  e = test["9001"]
  counts = np.array(lines[1].split()[2:12], float)
  np.testing.assert_allclose(e["distribution"], counts / counts.sum(),
                             rtol=1e-6)
  assert e["mos"] == pytest.approx(
      np.sum(counts * np.arange(1, 11)) / counts.sum(), rel=1e-6)


def test_ava_missing_pictures_need_skip(tmp_path):
  manual = str(tmp_path / "m")
  df.make_ava(manual)
  os.remove(os.path.join(manual, "images", "9005.jpg"))
  with pytest.raises(ValueError, match="on_bad_image='skip'"):
    _build("ava", manual, str(tmp_path / "d1"))
  cfg = musiq_jax.datasets.ava.Ava.BUILDER_CONFIGS[0]
  import dataclasses  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(cfg, name="skip", on_bad_image="skip")
  b = _build("ava", manual, str(tmp_path / "d2"), config=cfg)
  assert sum(_sizes(b).values()) == 24


@pytest.mark.parametrize("layout", LAYOUTS + ("nested_twice",))
def test_live_challenge(tmp_path, layout):
  manual, base = _base(tmp_path, "live_challenge",
                       "holder" if layout != "unpacked" else layout)
  if layout == "nested_twice":
    base = os.path.join(base, "ChallengeDB_release")
  names = df.make_live_challenge(base)
  b = _build("live_challenge", manual, str(tmp_path / "d"))
  ex = {e["image_id"].decode(): e for e in _load(b, "train+validation+test")}
  assert sorted(ex) == sorted(names[7:])  # The 7 training pictures dropped.
  assert ex["103.bmp"]["mos"] == pytest.approx(50.0)


def test_live_challenge_keeps_training_pictures_on_request(tmp_path):
  manual = str(tmp_path / "m")
  names = df.make_live_challenge(manual)
  cfg = musiq_jax.datasets.live_challenge.LiveCConfig(name="all",
                                                      num_dropped=0)
  b = _build("live_challenge", manual, str(tmp_path / "d"), config=cfg)
  got = {e["image_id"].decode() for e in _load(b, "train+validation+test")}
  assert got == set(names)  # t1.bmp .. read from Images/trainingImages/.


@pytest.mark.parametrize("layout", LAYOUTS)
def test_kadid10k_split_by_reference(tmp_path, layout):
  manual, base = _base(tmp_path, "kadid10k", layout)
  df.make_kadid(base)
  b = _build("kadid10k", manual, str(tmp_path / "d"))
  refs = {}
  for split in ("train", "validation", "test"):
    exs = _load(b, split)
    assert exs, split
    refs[split] = {int(e["content_id"]) for e in exs}
    for e in exs:
      name = e["image_id"].decode()
      assert int(e["distortion_type"]) == int(name[4:6])
      assert int(e["distortion_level"]) == int(name[7:9])
      assert e["mos_std"] == pytest.approx(0.5)
  assert not refs["train"] & refs["test"]
  assert not refs["train"] & refs["validation"]
  assert not refs["validation"] & refs["test"]
