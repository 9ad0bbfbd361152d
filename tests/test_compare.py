"""Tests of musiq_jax.compare on generated (fake) workdirs."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from musiq_jax import compare


def _make_workdir(root, name, prediction, label, image_id, num_params=1234,
                  split="test"):
  workdir = os.path.join(str(root), name)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"step": 10, "best_step": 10, "model": name,
               "num_params": num_params, "splits": {}}, f)
  np.savez(os.path.join(workdir, f"predictions_{split}.npz"),
           prediction=np.asarray(prediction, np.float64),
           label=np.asarray(label, np.float64),
           image_id=np.asarray(image_id, str))
  return workdir


def _data(n, noise, seed=0):
  rng = np.random.default_rng(seed)
  label = rng.uniform(0, 100, n)
  prediction = label + noise * rng.normal(size=n)
  ids = [f"img_{i:04d}" for i in range(n)]
  return prediction, label, ids


def test_metrics_equal_scipy_and_ci_contains_point(tmp_path):
  p1, label, ids = _data(200, 20.0)
  p2 = label + 40.0 * np.random.default_rng(1).normal(size=200)
  # The second workdir lists the same images in another order: compare must
  # align them by id.
  order = np.random.default_rng(3).permutation(200)
  w1 = _make_workdir(tmp_path, "a", p1, label, ids)
  w2 = _make_workdir(tmp_path, "b", p2[order], label[order],
                     np.asarray(ids)[order])
  rows = compare.compare([w1, w2], bootstrap=500, seed=0)
  for row, pred in zip(rows, (p1, p2)):
    assert row["srcc"] == pytest.approx(scipy.stats.spearmanr(pred, label)[0])
    assert row["plcc"] == pytest.approx(scipy.stats.pearsonr(pred, label)[0])
    assert row["krcc"] == pytest.approx(scipy.stats.kendalltau(pred, label)[0])
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean((pred - label)**2)))
    assert row["params"] == 1234
    for key in ("srcc", "plcc"):
      lo, hi = row[f"{key}_ci"]
      assert lo <= row[key] <= hi
  assert rows[0]["srcc"] > rows[1]["srcc"]


def test_bootstrap_spearman_matches_scipy():
  x = np.array([3.0, 1.0, 2.0, 2.0, 5.0])
  y = np.array([1.0, 2.0, 2.0, 4.0, 5.0])
  idx = np.array([[0, 1, 2, 3, 4], [4, 3, 3, 1, 0]])
  # Percentiles of two values bracket both: check each row directly instead.
  for row in idx:
    ci = compare.bootstrap_ci(x, y, row[None])
    assert ci["srcc"][0] == pytest.approx(
        scipy.stats.spearmanr(x[row], y[row])[0])
    assert ci["plcc"][0] == pytest.approx(
        scipy.stats.pearsonr(x[row], y[row])[0])


def test_ci_shrinks_with_more_images(tmp_path):
  widths = []
  for n in (50, 800):
    pred, label, ids = _data(n, 30.0)
    w = _make_workdir(tmp_path / str(n), "m", pred, label, ids)
    (row,) = compare.compare([w], bootstrap=400, seed=0)
    widths.append(row["srcc_ci"][1] - row["srcc_ci"][0])
  assert widths[1] < widths[0] / 2


def test_same_seed_same_ci(tmp_path):
  pred, label, ids = _data(100, 30.0)
  w = _make_workdir(tmp_path, "m", pred, label, ids)
  a = compare.compare([w], bootstrap=200, seed=5)[0]["srcc_ci"]
  b = compare.compare([w], bootstrap=200, seed=5)[0]["srcc_ci"]
  assert a == b


def test_mismatched_images_fail_naming_workdir(tmp_path):
  pred, label, ids = _data(30, 10.0)
  w1 = _make_workdir(tmp_path, "a", pred, label, ids)
  w2 = _make_workdir(tmp_path, "b", pred[:-1], label[:-1], ids[:-1])
  with pytest.raises(ValueError, match="'.*b'.*different images"):
    compare.compare([w1, w2], bootstrap=0)
  w3 = _make_workdir(tmp_path, "c", pred, label, ids[:-1] + ["other"])
  with pytest.raises(ValueError, match="c'.*missing e.g. \\['img_0029'\\]"):
    compare.compare([w1, w3], bootstrap=0)


def test_missing_predictions_fail(tmp_path):
  pred, label, ids = _data(10, 10.0)
  w = _make_workdir(tmp_path, "a", pred, label, ids, split="validation")
  with pytest.raises(FileNotFoundError, match="predictions_test.npz"):
    compare.compare([w], split="test")


def test_cli_writes_markdown_and_csv(tmp_path):
  p1, label, ids = _data(60, 10.0)
  p2, _, _ = _data(60, 30.0, seed=2)
  w1 = _make_workdir(tmp_path, "a", p1, label, ids, num_params=2_500_000)
  w2 = _make_workdir(tmp_path, "b", p2, label, ids, num_params=900)
  md, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
  out = subprocess.run(
      [sys.executable, "-m", "musiq_jax.compare", f"--workdir={w1}",
       f"--workdir={w2}", "--names=MUSIQ,CNN", f"--out={md}",
       f"--csv={csv_path}", "--bootstrap=100"],
      check=True, capture_output=True, text=True)
  text = md.read_text()
  assert text in out.stdout
  assert text.splitlines()[0] == "| model | params | SRCC | PLCC | KRCC | RMSE |"
  assert "| MUSIQ | 2.50M |" in text and "| CNN | 0.9K |" in text
  assert "60 images" in text
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert [r["model"] for r in rows] == ["MUSIQ", "CNN"]
  assert float(rows[0]["srcc_lo"]) <= float(rows[0]["srcc"]) <= float(
      rows[0]["srcc_hi"])
  assert float(rows[0]["srcc"]) == pytest.approx(
      scipy.stats.spearmanr(p1, label)[0], abs=1e-9)


@pytest.mark.parametrize("order", [("compare", "predict", "main"),
                                   ("main", "predict", "compare")])
def test_importing_every_cli_keeps_predicts_workdir_one_directory(order):
  # compare's --workdir repeats, predict's and main's take one directory; a
  # process that imports all three (a notebook, pytest) must see the latter.
  code = ("import importlib\n"
          f"for m in {list(order)!r}: importlib.import_module('musiq_jax.' + m)\n"
          "from absl import flags\n"
          "flags.FLAGS(['x', '--workdir=/a'])\n"
          "assert flags.FLAGS.workdir == '/a', flags.FLAGS.workdir\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-2000:]
