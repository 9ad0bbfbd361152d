"""Scoring collections: streamed output, resume after SIGKILL, shards and
their merge, several devices, flat memory, dataset splits with metrics."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from conftest import xla_flags

from musiq_jax import collection
from musiq_jax import scorer as scorer_lib
import musiq_fixtures as mf
from test_predict import _run  # predict.main in-process.

NUM_IMAGES = 60


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """~60 small PNGs of one canvas group (one program to compile), one
  broken file, and a tiny released-layout single-scale checkpoint (a few
  tokens per image: cheap to run, the scales play no part here)."""
  root = tmp_path_factory.mktemp("collection")
  images = root / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(NUM_IMAGES):
    h, w = (64, 64) if i % 2 else (60, 64)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
        images / f"{i:03d}.png")
  (images / "030b.png").write_text("not a png")  # An error line, too.
  single = str(root / "single.npz")
  mf.write_original_npz(single, mf.original_musiq_shapes(
      num_scales=1, **mf.TINY), seed=2)
  return root, images, single


def _spawn(*args, env=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
  return subprocess.Popen([sys.executable, "-m", "musiq_jax.predict", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)


def _rows(path, fmt):
  with open(path, newline="") as f:
    if fmt == "json":
      return [json.loads(line) for line in f]
    return [dict(r) for r in csv.DictReader(f)]


def _by_image(rows):
  out = {}
  for r in rows:
    assert r["image"] not in out, f"{r['image']} twice"
    out[r["image"]] = (float(r["score"]) if r.get("score") not in (None, "")
                       else r["error"])
  return out


def _assert_same(got, want):
  assert sorted(got) == sorted(want)
  for k, v in want.items():
    if isinstance(v, float):
      assert got[k] == pytest.approx(v, abs=1e-5), k
    else:
      assert got[k] == v, k


def test_sigkill_then_resume_gives_every_image_once(folder, tmp_path):
  root, images, ckpt = folder
  common = [f"--ckpt_path={ckpt}", f"--image_path={images}",
            "--batch_size=2"]
  outs = {fmt: str(tmp_path / f"scores.{fmt}") for fmt in ("json", "csv")}
  procs = {fmt: _spawn(*common, f"--format={fmt}", f"--output={out}")
           for fmt, out in outs.items()}
  # Kill each as soon as some lines are on disk (a header alone is not).
  killed_at = {}
  deadline = time.time() + 120
  while len(killed_at) < len(procs) and time.time() < deadline:
    for fmt, p in procs.items():
      if fmt in killed_at:
        continue
      lines = (open(outs[fmt]).read().count("\n")
               if os.path.exists(outs[fmt]) else 0)
      if lines >= 5 or p.poll() is not None:
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_at[fmt] = lines
    time.sleep(0.005)
  for fmt, p in procs.items():
    assert p.returncode == -signal.SIGKILL, (fmt, p.stderr.read()[-2000:])
    n = len(_rows(outs[fmt], fmt))
    assert 3 <= n < NUM_IMAGES + 1, (fmt, n)  # Killed part-way.
  # A write torn by the kill: resume drops the partial last line.
  with open(outs["json"], "a") as f:
    f.write('{"image": "' + str(images / "059.png"))
  want = _by_image(json.loads(line) for line in _run(
      *common, "--format=json").stdout.splitlines())
  assert len(want) == NUM_IMAGES + 1
  assert isinstance(want[str(images / "030b.png")], str)
  for fmt, out in outs.items():
    before = len(_rows(out, fmt)) if fmt == "csv" else None
    res = _run(*common, f"--format={fmt}", f"--output={out}", "--resume")
    assert res.returncode == 1, res.stderr  # The broken file.
    assert "kept from" in res.stderr
    rows = _rows(out, fmt)
    _assert_same(_by_image(rows), want)
    # In input order, as an uninterrupted run.
    assert [r["image"] for r in rows] == list(want)
    if before is not None:
      with open(out) as f:
        assert f.read().count("image,score,error") == 1  # One header.


def test_two_shard_processes_on_two_devices_merge_to_one_run(folder,
                                                             tmp_path):
  # Each shard runs in its own process with 2 (forced) host devices: the
  # batches are split over both. The merge equals one process on one.
  _, images, ckpt = folder
  common = [f"--ckpt_path={ckpt}", f"--image_path={images}",
            "--batch_size=4", "--format=json"]
  out = str(tmp_path / "scores.json")
  env = {"XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=2")}
  procs = [_spawn(*common, f"--output={out}", "--num_shards=2",
                  f"--shard_index={i}", env=env) for i in range(2)]
  codes = []
  for p in procs:
    _, err = p.communicate(timeout=300)
    codes.append(p.returncode)
    assert p.returncode in (0, 1), err[-3000:]
    assert "on 2 devices" in err, err[-2000:]
  assert codes == [0, 1]  # 030b.png, the broken file, is #31: shard 1.
  shard0 = _rows(collection.shard_path(out, 2, 0), "json")
  assert len(shard0) == (NUM_IMAGES + 2) // 2
  merged = _run("--merge", f"--output={out}", "--format=json")
  assert merged.returncode == 0, merged.stderr
  single = [json.loads(line) for line in _run(
      *common, "--batch_size=2").stdout.splitlines()]
  rows = _rows(out, "json")
  assert [r["image"] for r in rows] == [r["image"] for r in single]
  _assert_same(_by_image(rows), _by_image(single))
  # An unfinished shard is refused, not merged short.
  path1 = collection.shard_path(out, 2, 1)
  with open(path1) as f:
    lines = f.readlines()
  with open(path1, "w") as f:
    f.writelines(lines[:-2])
  bad = _run("--merge", f"--output={out}", "--format=json")
  assert bad.returncode == 2 and "did not finish" in bad.stderr


MEMORY_SCRIPT = r"""
import resource, sys, threading, time
from absl import flags
from musiq_jax import predict

def rss_mb():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * resource.getpagesize() / 2**20

ckpt, folder, out = sys.argv[1:4]
samples = []  # (lines written, RSS MB)
stop = False
def watch():
  while not stop:
    try:
      with open(out, "rb") as f:
        n = f.read().count(b"\n")
    except OSError:
      n = 0
    samples.append((n, rss_mb()))
    time.sleep(0.02)
t = threading.Thread(target=watch)
t.start()
flags.FLAGS(["predict", "--ckpt_path=" + ckpt, "--image_path=" + folder,
             "--output=" + out, "--format=json", "--batch_size=8"])
rc = predict.main(["predict"])
stop = True
t.join()
at200 = max(r for n, r in samples if n <= 200)
after = [r for n, r in samples if n > 200]
print("RC", rc, "AT200", at200, "MAX", max(after), "N", len(after))
"""


def test_memory_stays_flat_over_the_number_of_images(folder, tmp_path):
  # 2,000 tiny 64x64 PNGs (12 KB decoded each: holding them all would add
  # 24 MB, holding their canvases more). Bound: the resident set while the
  # last 1,800 are scored stays within 12 MB of its level after the first
  # 200 (compilation and warm-up are done by then). The model sees 8x8
  # patches (its best.json says so): the same pipeline, 16x less compute.
  del folder
  from musiq_jax import checkpoint
  ckpt = str(tmp_path / "patch8.npz")
  mf.write_original_npz(ckpt, mf.original_musiq_shapes(
      num_scales=1, patch=8, **mf.TINY), seed=2)
  checkpoint.write_sidecar(ckpt, {"preprocessing": {
      "patch_size": 8, "patch_stride": 8, "longer_side_lengths": [],
      "max_seq_len_from_original_res": -1}})
  many = tmp_path / "many"
  many.mkdir()
  rng = np.random.default_rng(1)
  for i in range(2000):
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(
        many / f"{i:04d}.png", compress_level=0)
  out = str(tmp_path / "many.json")
  res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, ckpt,
                        str(many), out], capture_output=True, text=True,
                       timeout=300,
                       # 2,000 calls: XLA's optimisation pays (15 vs 76 s).
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                                JAX_DISABLE_MOST_OPTIMIZATIONS="0"))
  assert res.returncode == 0, res.stderr[-3000:]
  words = res.stdout.split()
  rc, at200, peak, n = (float(words[words.index(k) + 1])
                        for k in ("RC", "AT200", "MAX", "N"))
  assert rc == 0 and n > 3  # Sampled while the 2,000 were scored.
  assert len(_rows(out, "json")) == 2000
  assert peak - at200 < 12.0, (at200, peak)


def test_score_iter_is_lazy_ordered_and_bounded(folder):
  # A rare canvas group among many images of another: with a small window
  # its result is not held back until the end; order is kept; the input
  # generator is read only a bounded distance ahead.
  _, _, ckpt = folder
  scorer = scorer_lib.load_scorer(ckpt, batch_size=4)
  rng = np.random.default_rng(3)
  square = [rng.integers(0, 256, (64, 64, 3), np.uint8) for _ in range(14)]
  tall = rng.integers(0, 256, (120, 40, 3), np.uint8)  # Another group.
  images = square[:2] + [tall] + square[2:]
  read = []

  def gen():
    for i, im in enumerate(images):
      read.append(i)
      yield im

  batches = scorer.score_batches(gen(), window=6)
  first = next(batches)
  assert len(read) < len(images)  # Lazy: not all read for the first batch.
  batches = [first] + list(batches)
  results = [r for b in batches for r in b]
  # The rare one came out before the end (its partial batch was sent).
  tall_batch = [i for i, b in enumerate(batches)
                if any(r.image == "<image 2>" for r in b)]
  assert tall_batch[0] < len(batches) - 1, [len(b) for b in batches]
  assert [r.image for r in results] == [f"<image {i}>"
                                        for i in range(len(images))]
  want = scorer_lib.load_scorer(ckpt, batch_size=1).score(images)
  np.testing.assert_allclose([r.score for r in results],
                             [r.score for r in want], rtol=1e-5, atol=1e-5)


def test_iter_paths_is_sorted_and_lazy(tmp_path):
  for p in ("b/2.jpg", "b/1.png", "a.jpg", "c/d/3.jpeg", "notes.txt"):
    (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / p).write_bytes(b"")
  it = collection.iter_paths([str(tmp_path)], recursive=True)
  assert next(it) == str(tmp_path / "a.jpg")
  assert [os.path.relpath(p, tmp_path) for p in it] == [
      "b/1.png", "b/2.jpg", "c/d/3.jpeg"]
  assert list(collection.iter_paths([str(tmp_path)])) == [
      str(tmp_path / "a.jpg")]
  assert list(collection.shard(iter(range(7)), 3, 1)) == [1, 4]


def test_dataset_split_metrics_equal_compare(folder, tmp_path):
  # A fake KonIQ-10k (its files as distributed, tests/dataset_fixtures.py)
  # with 8 test images; predict --dataset scores the split and prints the
  # metrics that `compare` computes from the same predictions.
  import dataset_fixtures as df
  import tensorflow_datasets as tfds
  import musiq_jax.datasets  # pylint: disable=unused-import
  from musiq_jax import compare
  _, _, ckpt = folder
  manual = str(tmp_path / "koniq")
  names = df.make_koniq(manual, n=12, image=lambda i: mf.photo(
      ("chelsea", "coffee", "astronaut", "rocket")[i % 4])[
          i * 5:i * 5 + 48:2, i * 7:i * 7 + 64:2].copy())
  sets = ["training"] * 3 + ["validation"] + ["test"] * 8
  df.write_csv(os.path.join(manual, "koniq10k_distributions_sets.csv"),
               ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS",
                "SD", "set"],
               [[nm, 0.1, 0.2, 0.3, 0.3, 0.1, 15, 70.0, 0.5, s]
                for nm, s in zip(names, sets)])
  data_dir = str(tmp_path / "tfds")
  tfds.builder("koniq10k", data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual,
                                                   try_download_gcs=False))
  out = str(tmp_path / "koniq.json")
  res = _run(f"--ckpt_path={ckpt}", "--dataset=koniq10k", "--split=test",
             f"--data_dir={data_dir}", "--format=json", f"--output={out}",
             "--batch_size=3")
  assert res.returncode == 0, res.stderr
  rows = _rows(out, "json")
  assert len(rows) == 8 and all("mos" in r for r in rows)
  printed = json.loads([l for l in res.stderr.splitlines()
                        if l.startswith("metrics: ")][0][len("metrics: "):])
  workdir = tmp_path / "as_workdir"
  workdir.mkdir()
  (workdir / "results.json").write_text('{"model": "musiq"}')
  np.savez(workdir / "predictions_test.npz",
           prediction=[r["score"] for r in rows],
           label=[r["mos"] for r in rows],
           image_id=[r["image"] for r in rows])
  (row,) = compare.compare([str(workdir)], "test", bootstrap=0)
  assert printed["num_images"] == 8
  for key in ("srcc", "plcc", "krcc", "rmse"):
    assert printed[key] == pytest.approx(row[key], abs=1e-12), key
  assert np.isfinite(printed["srcc"]) and printed["rmse"] > 0
  # The labels are the split's MOS (MOS_zscore: 10 * index in the fixture).
  assert sorted(r["mos"] for r in rows) == pytest.approx(
      [10.0 * i for i in range(4, 12)])
