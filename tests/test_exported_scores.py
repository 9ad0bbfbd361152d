"""An exported model scores the way it trained: read-out and whole photo.

For every head, a tiny model is trained for one step and
`python -m musiq_jax.predict --workdir=WORKDIR` (its `main`, in-process) must
give, for the test images, the scores of the run's own evaluation
(`predictions_test.npz`). And a photo larger than the training images is
scored with all its native patches, not the training cap.
"""

import json
import os
import shutil

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config
import dataset_fixtures as df
import musiq_fixtures as mf
from test_predict import _run as _predict_cli  # predict.main in-process.
from musiq_jax import image_io
from musiq_jax import preprocessing
from musiq_jax import scorer as scorer_lib
from musiq_jax import tasks
from musiq_jax import trainer

# Pictures for the fake datasets: crops of real photos (scores then differ).
_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins")


def _photo_crop(i, h=48, w=64):
  p = mf.photo(_PHOTOS[i % len(_PHOTOS)])
  if p.ndim == 2:
    p = np.repeat(p[..., None], 3, axis=-1)
  y, x = (7 * i) % (p.shape[0] - 2 * h), (11 * i) % (p.shape[1] - 2 * w)
  return np.ascontiguousarray(p[y:y + 2 * h:2, x:x + 2 * w:2])


# Few-step runs: XLA's full optimisation costs more than it saves.
pytestmark = pytest.mark.usefixtures("fast_compile")

# Every example of these runs fits in this many tokens (asserted): one
# padded shape for training and evaluation, so few programs to compile.
MAX_SEQ_LEN = 24


def _few_steps(c, data_dir):
  """One optimizer step that moves the head (Adam 1e-3, no warmup), one
  validation pass to pick it, one pass over test."""
  c.data_dir = data_dir
  c.num_train_steps = 1
  c.eval_every_steps = 1
  c.checkpoint_every_steps = 1
  c.log_every_steps = 1
  c.eval_splits = ("test",)
  c.input.batching = "padded"
  c.input.max_seq_len = MAX_SEQ_LEN
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 0
  return c


def regression_config(tmp, tiny_data_dir):
  del tmp  # synthetic_iqa/tiny is built once per test run (conftest.py).
  return _few_steps(load_config("synthetic", "tiny"), tiny_data_dir)


def levels_config(tmp, _):
  """Rating levels over KonIQ's 0..100 MOS (a fake KonIQ-10k)."""
  manual = str(tmp / "koniq")
  df.make_koniq(manual, n=12, image=_photo_crop)
  c = _few_steps(load_config("koniq", "tiny"), str(tmp / "tfds"))
  c.manual_dir = manual
  c.head = "levels"
  c.model.num_classes = 5
  c.loss = ml_collections.ConfigDict(dict(soft=False))
  assert tuple(c.mos_range) == (0.0, 100.0)
  return c


def distribution_config(tmp, _):
  """AVA's 10-bin distribution head with the EMD loss (a fake AVA)."""
  manual = str(tmp / "ava")
  # 45 pictures: 3 test (generic_test.jpgl), 2 validation (5% of the rest),
  # enough for a validation SRCC to pick the exported step.
  df.make_ava(manual, n=45, image=_photo_crop)
  c = _few_steps(load_config("ava", "tiny"), str(tmp / "tfds"))
  c.manual_dir = manual
  assert c.head == "distribution" and c.model.num_classes == 10
  return c


HEADS = {"regression": regression_config, "levels": levels_config,
         "distribution": distribution_config}


def _write_test_images(config, folder):
  """The test split's stored images as files; returns {file: image_id}."""
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  ds = builder.as_dataset("test",
                          decoders={"image": tfds.decode.SkipDecoding()})
  os.makedirs(folder)
  files = {}
  for i, e in enumerate(tfds.as_numpy(ds)):
    _, fmt = image_io.canonical_bytes(e["image"])
    path = os.path.join(folder, f"{i:03d}.{'jpg' if fmt == 'jpeg' else fmt}")
    with open(path, "wb") as f:
      f.write(e["image"])
    files[path] = e["image_id"].decode()
  return files


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fast_compile, tiny_data_dir):
  """head -> (config, workdir) of a few-step run; trained once per module."""
  del fast_compile
  runs = {}

  def get(head):
    if head not in runs:
      tmp = tmp_path_factory.mktemp(head)
      config = HEADS[head](tmp, tiny_data_dir)
      workdir = str(tmp / "workdir")
      trainer.train_and_evaluate(config, workdir)
      runs[head] = (config, workdir)
    return runs[head]
  return get


@pytest.mark.parametrize("head", sorted(HEADS))
def test_predict_workdir_gives_the_runs_test_scores(trained, head, tmp_path):
  config, workdir = trained(head)
  with open(os.path.join(workdir, "best.json")) as f:
    sidecar = json.load(f)
  assert sidecar["head"] == head
  assert sidecar["preprocessing"]["max_seq_len_from_original_res"] == -1
  assert sidecar["train_max_seq_len_from_original_res"] == 16
  assert sidecar["eval_max_seq_len_from_original_res"] == -1
  with np.load(os.path.join(workdir, "predictions_test.npz")) as p:
    want = dict(zip(p["image_id"].tolist(), p["prediction"].tolist()))
  files = _write_test_images(config, str(tmp_path / "test_images"))
  assert sorted(files.values()) == sorted(want)
  eval_pp = tasks.pp_config(config, train=False)
  assert eval_pp.max_seq_len_from_original_res == -1
  for path in files:  # Nothing was cut in evaluation.
    h, w = image_io.read_image(path).shape[:2]
    assert preprocessing.seq_len(h, w, eval_pp) <= MAX_SEQ_LEN
  out = _predict_cli(f"--workdir={workdir}", f"--image_path={tmp_path}/"
                     "test_images", "--format=json", "--batch_size=3")
  assert out.returncode == 0, out.stderr
  got = {files[r["image"]]: r["score"]
         for r in map(json.loads, out.stdout.splitlines())}
  ids = sorted(want)
  np.testing.assert_allclose([got[i] for i in ids], [want[i] for i in ids],
                             rtol=1e-4, atol=1e-4)
  assert np.ptp([want[i] for i in ids]) > 0  # The scores say something.
  lo, hi = config.mos_range
  if head == "levels":
    # Level centres over 0..100 (10, 30, ..., 90), not the released
    # models' softmax mean of 1..5.
    assert all(lo + 10 - 1e-3 <= got[i] <= hi - 10 + 1e-3 for i in ids)


def test_a_larger_photo_is_scored_with_every_native_patch(trained, tmp_path):
  config, workdir = trained("regression")
  assert config.pp.max_seq_len_from_original_res == 16  # Training cap.
  photo = mf.photo("chelsea")  # 300 x 451: 10 x 15 patches.
  path = mf.write_jpeg(str(tmp_path / "big.jpg"), photo)
  native = preprocessing.num_patches(300, 451, 32)
  assert native == 150 > 16
  scorer = scorer_lib.load_scorer(workdir=workdir)
  feats = scorer.preprocess(path)
  resized = preprocessing.seq_len(300, 451, preprocessing.PreprocessConfig(
      longer_side_lengths=(64,), max_seq_len_from_original_res=None))
  assert int(feats["mask"].sum()) == resized + native
  assert int((feats["scale"][feats["mask"] > 0] == 1).sum()) == native

  def cli(*extra):
    out = _predict_cli(f"--workdir={workdir}", f"--image_path={path}",
                       "--format=json", *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["score"]

  whole = cli()
  # The training cap, asked for explicitly, is another score.
  assert abs(whole - cli("--max_seq_len_from_original_res=16")) > 1e-4
  # A best.json of an older export (its eval cap as the preprocessing) still
  # scores the whole photo.
  old_dir = tmp_path / "old_export"
  old_dir.mkdir()
  shutil.copy(os.path.join(workdir, "best.npz"), old_dir / "best.npz")
  with open(os.path.join(workdir, "best.json")) as f:
    old = json.load(f)
  old["preprocessing"]["max_seq_len_from_original_res"] = 16
  with open(old_dir / "best.json", "w") as f:
    json.dump(old, f)
  workdir = str(old_dir)
  assert cli() == pytest.approx(whole, abs=1e-6)


# The crop tasks (musiq_jax.tasks): RankIQA's ranking stage and LIQE's
# multi-crop CLIP head, each scored with its own eval crops and pooling.
# "rank_musiq": MUSIQ as the ranked backbone (configs/rankiqa_pretrain.py:musiq).
CROP_TASKS = {"rank": ("rankiqa_pretrain", "tiny"), "crops": ("liqe", "tiny"),
              "rank_musiq": ("rankiqa_pretrain", "musiq,tiny")}


@pytest.mark.parametrize("task", sorted(CROP_TASKS))
def test_predict_workdir_scores_a_crop_baseline_like_its_run(
    task, tmp_path_factory, tmp_path, tiny_data_dir):
  from clip_fixtures import oracle  # pylint: disable=g-import-not-at-top
  from musiq_jax.clip import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp(task)
  c = load_config(*CROP_TASKS[task])
  assert c.task == task.split("_")[0] and c.dataset == "synthetic_iqa/tiny"
  c.data_dir = tiny_data_dir
  c.num_train_steps = 2
  c.eval_every_steps = 2
  c.eval_splits = ("test",)
  if "tokenizer_dir" in c.init:
    c.init.tokenizer_dir = str(root / "vocab")
    tokenizer_lib.write_vocab_files(oracle.bpe_gz_path(), c.init.tokenizer_dir)
  workdir = str(root / "workdir")
  trainer.train_and_evaluate(c, workdir)
  with open(os.path.join(workdir, "best.json")) as f:
    assert json.load(f)["task"] == c.task
  with np.load(os.path.join(workdir, "predictions_test.npz")) as p:
    want = dict(zip(p["image_id"].tolist(), p["prediction"].tolist()))
  files = _write_test_images(c, str(tmp_path / "test_images"))
  assert sorted(files.values()) == sorted(want)
  out = _predict_cli(f"--workdir={workdir}", f"--image_path={tmp_path}/"
                     "test_images", "--format=json")
  assert out.returncode == 0, out.stderr
  got = {files[r["image"]]: r["score"]
         for r in map(json.loads, out.stdout.splitlines())}
  ids = sorted(want)
  np.testing.assert_allclose([got[i] for i in ids], [want[i] for i in ids],
                             rtol=1e-5, atol=1e-5)
  assert np.ptp([want[i] for i in ids]) > 0
