"""Each real-dataset builder builds offline from a tiny fake copy of its layout."""

import csv
import os

import numpy as np
from PIL import Image
import pytest
import scipy.io
import tensorflow_datasets as tfds

import musiq_jax.datasets  # pylint: disable=unused-import  # registers builders
from musiq_jax import image_io


def _img(path, h=12, w=16, seed=0, fmt="JPEG"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  px = np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)
  Image.fromarray(px).save(path, format=fmt)


def _csv(path, header, rows):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def _build(name, manual, data_dir, config=None):
  b = tfds.builder(name, data_dir=data_dir, config=config)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual, try_download_gcs=False))
  return tfds.builder(name, data_dir=data_dir, config=config)


def _load(builder, split):
  ds = builder.as_dataset(split, decoders={"image": tfds.decode.SkipDecoding()})
  return list(tfds.as_numpy(ds))


def make_koniq(root, n=10, sizes=(12, 16)):
  names = [f"{1000 + i}.jpg" for i in range(n)]
  sets = ["training"] * (n - 4) + ["validation"] * 2 + ["test"] * 2
  for i, name in enumerate(names):
    _img(os.path.join(root, "1024x768", name), *sizes, seed=i)
  _csv(os.path.join(root, "koniq10k_scores_and_distributions.csv"),
       ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD",
        "MOS_zscore"],
       [[nm, 1, 2, 3, 4, 5, 15, 1 + i * 0.3, 0.5, 10.0 * i]
        for i, nm in enumerate(names)])
  _csv(os.path.join(root, "koniq10k_distributions_sets.csv"),
       ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD",
        "set"], [[nm, 1, 2, 3, 4, 5, 15, 3, 0.5, s]
                 for nm, s in zip(names, sets)])
  return names


def test_koniq10k(tmp_path):
  manual = str(tmp_path / "m")
  make_koniq(manual)
  b = _build("koniq10k", manual, str(tmp_path / "d"))
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {
      "train": 6, "validation": 2, "test": 2}
  ex = {e["image_id"].decode(): e for e in _load(b, "train+validation+test")}
  e = ex["1003.jpg"]
  assert e["mos"] == pytest.approx(30.0) and e["mos_1to5"] == pytest.approx(1.9)
  assert (e["height"], e["width"]) == (12, 16)
  # Stored bytes decode (tf.data path) to exactly the prediction pixels.
  want = image_io.read_image(os.path.join(manual, "1024x768", "1003.jpg"))
  got = image_io.tf_decode(e["image"]).numpy()
  np.testing.assert_array_equal(got, want)


def test_koniq10k_bad_mos_names_row(tmp_path):
  manual = str(tmp_path / "m")
  make_koniq(manual)
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
  make_koniq(manual)
  _csv(os.path.join(manual, "koniq10k_scores_and_distributions.csv"),
       ["name", "score"], [["1000.jpg", 3]])
  with pytest.raises(ValueError, match=r"missing column\(s\)"):
    _build("koniq10k", manual, str(tmp_path / "d"))


def test_missing_image_fails_or_is_skipped(tmp_path):
  manual = str(tmp_path / "m")
  make_koniq(manual)
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


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_spaq(tmp_path, fmt):
  manual = str(tmp_path / "m")
  header = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast",
            "Noisiness", "Sharpness"]
  rows = [[f"{i + 1:05d}.jpg", 10.0 + i, 50, 51, 52, 53, 54]
          for i in range(12)]
  for i, r in enumerate(rows):
    _img(os.path.join(manual, "TestImage", r[0]), 12 + i, 20, seed=i)
  path = os.path.join(manual, "Annotations",
                      f"MOS and Image attribute scores.{fmt}")
  if fmt == "csv":
    _csv(path, header, rows)
  else:
    import openpyxl  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.dirname(path))
    wb = openpyxl.Workbook()
    wb.active.append(header)
    for r in rows:
      wb.active.append(r)
    wb.save(path)
  b = _build("spaq", manual, str(tmp_path / "d"))
  sizes = {k: v.num_examples for k, v in b.info.splits.items()}
  assert sum(sizes.values()) == 12 and min(sizes.values()) >= 1
  ex = {e["image_id"].decode(): e for e in _load(b, "train+validation+test")}
  assert ex["00003.jpg"]["mos"] == pytest.approx(12.0)
  assert ex["00003.jpg"]["sharpness"] == pytest.approx(54.0)
  assert ex["00003.jpg"]["height"] == 14


def test_spaq_resized_config(tmp_path):
  manual = str(tmp_path / "m")
  _img(os.path.join(manual, "TestImage", "00001.jpg"), 30, 40)
  _img(os.path.join(manual, "TestImage", "00002.jpg"), 40, 30)
  _img(os.path.join(manual, "TestImage", "00003.jpg"), 40, 30)
  _csv(os.path.join(manual, "Annotations", "MOS and Image attribute scores.csv"),
       ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast",
        "Noisiness", "Sharpness"],
       [[f"0000{i}.jpg", 50, 1, 1, 1, 1, 1] for i in (1, 2, 3)])
  cfg = musiq_jax.datasets.spaq.SPAQConfig(name="s15", shorter_side=15)
  b = _build("spaq", manual, str(tmp_path / "d"), config=cfg)
  sizes = {(int(e["height"]), int(e["width"]))
           for e in _load(b, "train+validation+test")}
  assert sizes == {(15, 20), (20, 15)}


def test_paq2piq(tmp_path):
  manual = str(tmp_path / "m")
  names = [f"voc_emotic_ava/img{i}.jpg" for i in range(6)] + [
      "blur_dataset/big0.jpg", "blur_dataset/big1.jpg"]
  for i, n in enumerate(names):
    _img(os.path.join(manual, n), 10, 14, seed=i)
  _csv(os.path.join(manual, "labels_image.csv"), ["name_image", "mos_image"],
       [[n, 50 + i] for i, n in enumerate(names)])
  _csv(os.path.join(manual, "labels=640_padded.csv"),
       ["name_image", "mos_image", "is_valid"],
       [[n, 50, i >= 4] for i, n in enumerate(names[:6])])
  _csv(os.path.join(manual, "labels>640.csv"), ["name_image", "mos_image"],
       [[n, 50] for n in names[6:]])
  b = _build("paq2piq", manual, str(tmp_path / "d"))
  assert {k: v.num_examples for k, v in b.info.splits.items()} == {
      "train": 4, "validation": 2, "test": 2}
  test_ids = sorted(e["image_id"].decode() for e in _load(b, "test"))
  assert test_ids == names[6:]


def test_ava(tmp_path):
  manual = str(tmp_path / "m")
  lines = []
  for i in range(25):
    counts = np.random.default_rng(i).integers(0, 20, 10)
    counts[0] += 1
    lines.append(" ".join(map(str, [i + 1, 9000 + i, *counts, 0, 0, 1])))
    _img(os.path.join(manual, "images", f"{9000 + i}.jpg"), 8, 10, seed=i)
  open(os.path.join(manual, "AVA.txt"), "w").write("\n".join(lines) + "\n")
  os.makedirs(os.path.join(manual, "aesthetics_image_lists"))
  open(os.path.join(manual, "aesthetics_image_lists", "generic_test.jpgl"),
       "w").write("9000\n9001\n9002\n")
  b = _build("ava", manual, str(tmp_path / "d"))
  assert b.info.splits["test"].num_examples == 3
  assert b.info.splits["validation"].num_examples == 1
  assert b.info.splits["train"].num_examples == 21
  e = {x["image_id"].decode(): x for x in _load(b, "test")}["9001"]
  counts = np.array(lines[1].split()[2:12], float)
  np.testing.assert_allclose(e["distribution"], counts / counts.sum(),
                             rtol=1e-6)
  assert e["mos"] == pytest.approx(
      np.sum(counts * np.arange(1, 11)) / counts.sum(), rel=1e-6)


def test_live_challenge(tmp_path):
  manual = str(tmp_path / "m")
  names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{i}.JPG" for i in range(10)]
  for i, n in enumerate(names):
    folder = "Images/trainingImages" if n.startswith("t") else "Images"
    _img(os.path.join(manual, folder, n), 9, 11, seed=i,
         fmt="BMP" if n.endswith("bmp") else "JPEG")
  os.makedirs(os.path.join(manual, "Data"))
  cell = np.empty((len(names), 1), dtype=object)
  for i, n in enumerate(names):
    cell[i, 0] = np.array([n])
  scipy.io.savemat(os.path.join(manual, "Data", "AllImages_release.mat"),
                   {"AllImages_release": cell})
  scipy.io.savemat(os.path.join(manual, "Data", "AllMOS_release.mat"),
                   {"AllMOS_release": np.arange(len(names), dtype=float)[None]
                                      * 5})
  scipy.io.savemat(os.path.join(manual, "Data", "AllStdDev_release.mat"),
                   {"AllStdDev_release": np.ones((1, len(names)))})
  b = _build("live_challenge", manual, str(tmp_path / "d"))
  ex = {e["image_id"].decode(): e for e in _load(b, "train+validation+test")}
  assert sorted(ex) == sorted(names[7:])  # The 7 training pictures dropped.
  assert ex["3.JPG"]["mos"] == pytest.approx(50.0)


def test_kadid10k_split_by_reference(tmp_path):
  manual = str(tmp_path / "m")
  rows = []
  for ref in range(1, 11):
    _img(os.path.join(manual, "images", f"I{ref:02d}.png"), 8, 8, ref,
         fmt="PNG")
    for t in (1, 2):
      for lvl in (1, 2):
        n = f"I{ref:02d}_{t:02d}_{lvl:02d}.png"
        _img(os.path.join(manual, "images", n), 8, 8, ref * 10 + t, fmt="PNG")
        rows.append([n, f"I{ref:02d}.png", 5 - lvl, 0.25])
  _csv(os.path.join(manual, "dmos.csv"), ["dist_img", "ref_img", "dmos", "var"],
       rows)
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
