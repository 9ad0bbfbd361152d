"""The one trainer: end to end, resume, SIGKILL, sharding, two processes.

MUSIQ (configs/synthetic.py:tiny) and one crop baseline (RankIQA's
fine-tune, configs/rankiqa_finetune.py:tiny) go through the same checks,
parametrised by config; every config is traced at its `:tiny` variant.
"""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import xla_flags

from musiq_jax import checkpoint
from musiq_jax import scorer as scorer_lib
from musiq_jax import trainer as trainer_lib
from ml_collections import config_flags  # pylint: disable=unused-import
import importlib.util

ROOT = os.path.dirname(os.path.dirname(__file__))


# The subprocess runs compare runs with each other (sharded vs one device,
# two processes vs one, killed vs uninterrupted), all compiled alike: XLA's
# full optimisation costs more than it saves in these few tiny steps.
FAST_COMPILE_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}

def load_config(path, arg=None):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# The in-process runs compile like the subprocess ones.
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="session")
def data_dir(tiny_data_dir):
  return tiny_data_dir  # synthetic_iqa/tiny, built once (conftest.py).


def _tiny(data_dir, **overrides):
  c = load_config(os.path.join(ROOT, "configs", "synthetic.py"), "tiny")
  c.data_dir = data_dir
  c.num_train_steps = 6
  c.eval_every_steps = 3
  c.checkpoint_every_steps = 2
  for k, v in overrides.items():
    c[k] = v
  return c


def test_end_to_end_results_best_npz_and_predict(data_dir, tmp_path):
  workdir = str(tmp_path / "wd")
  summary = trainer_lib.train_and_evaluate(_tiny(data_dir), workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results == json.loads(json.dumps(summary))
  assert results["step"] == 6
  for split in ("validation", "test"):
    m = results["splits"][split]
    assert m["num_images"] > 0
    assert set(m) >= {"srcc", "plcc", "plcc_fitted", "krcc", "rmse"}
  assert os.path.exists(os.path.join(workdir, "best.npz"))
  with np.load(os.path.join(workdir, "predictions_test.npz")) as p:
    assert p["prediction"].shape == (results["splits"]["test"]["num_images"],)
    assert len(set(p["image_id"].tolist())) == p["prediction"].size
  assert results["num_params"] > 0
  assert os.path.getsize(os.path.join(workdir, "scatter_test.png")) > 0
  assert glob.glob(os.path.join(workdir, "events.out.tfevents*"))
  scorer = scorer_lib.load_scorer(workdir=workdir)
  assert scorer.pp_config.longer_side_lengths == (64,)
  res = scorer.score([np.full((40, 60, 3), 100, np.uint8)])
  assert res[0].error is None and np.isfinite(res[0].score)


def test_grad_norm_metric_is_the_l2_norm_of_all_leaves():
  rng = np.random.default_rng(0)
  tree = {"a": rng.normal(size=(3, 4)).astype(np.float32),
          "b": [rng.normal(size=5).astype(np.float32),
                np.array(2.5, np.float32)]}
  want = np.linalg.norm(np.concatenate(
      [np.ravel(x) for x in jax.tree.leaves(tree)]).astype(np.float64))
  np.testing.assert_allclose(float(trainer_lib._global_norm(tree)), want, rtol=1e-6)


def test_ema_decay_warms_up_to_the_configured_decay():
  d = [float(trainer_lib.ema_decay_at(t, 0.99)) for t in (0, 1, 8, 10_000)]
  np.testing.assert_allclose(d[:3], [1 / 10, 2 / 11, 9 / 18], rtol=1e-6)
  assert d[3] == pytest.approx(0.99)


@pytest.mark.parametrize("accum", [1, 2])
def test_ema_params_average_the_optimizer_steps(accum):
  c = _tiny("unused", ema_decay=0.6)
  c.optimizer.name = "adam"
  c.optimizer.accum_steps = accum
  trainer = trainer_lib.Trainer(c, devices=jax.devices()[:1])
  state = trainer.init_state(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = trainer.device_batch({
      "patches": rng.uniform(-1, 1, (4, 24, 3072)).astype(np.float32),
      "spatial": rng.integers(0, 100, (4, 24)).astype(np.int32),
      "scale": rng.integers(0, 2, (4, 24)).astype(np.int32),
      "mask": np.ones((4, 24), np.int32),
      "label": rng.uniform(1, 5, 4).astype(np.float32),
      "valid": np.ones(4, np.float32)})
  expected = jax.device_get(state.params)
  step_decay = 0.6 ** (1 / accum)
  for t in range(6):
    state, _ = trainer.train_step(state, batch, jax.random.PRNGKey(1))
    d = min(step_decay, (1 + t) / (10 + t))
    expected = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * p, expected,
                            jax.device_get(state.params))
  got = jax.device_get(state.ema_params)
  for a, b, p in zip(jax.tree.leaves(got), jax.tree.leaves(expected),
                     jax.tree.leaves(jax.device_get(state.params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert any(not np.allclose(a, p) for a, p in zip(
      jax.tree.leaves(got), jax.tree.leaves(jax.device_get(state.params))))
  assert state.eval_params() is state.ema_params


def test_ema_is_what_gets_exported_and_resumed(data_dir, tmp_path):
  c = _tiny(data_dir, ema_decay=0.9, eval_every_steps=6)
  workdir = str(tmp_path / "ema")
  results = trainer_lib.train_and_evaluate(c, workdir)
  assert results["best_step"] == 6
  trainer = trainer_lib.Trainer(c)
  manager = trainer_lib.ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"))
  state, _, how = trainer_lib._restore_or_init(  # pylint: disable=protected-access
      trainer, manager, c, jax.random.PRNGKey(0))
  assert how == "resumed at 6"
  best = checkpoint.read_params(os.path.join(workdir, "best.npz"))
  ema = checkpoint.flatten(jax.device_get(state.ema_params))
  raw = checkpoint.flatten(jax.device_get(state.params))
  assert set(best) == set(ema)
  for k in best:
    np.testing.assert_array_equal(best[k], ema[k])
  assert any(not np.array_equal(best[k], raw[k]) for k in best)


@pytest.mark.parametrize("log_every,where", [
    (1, r"at step \d+"), (3, r"between steps 1 and 3")])
def test_nan_loss_stops_with_the_step(data_dir, tmp_path, log_every, where):
  # The logged train_loss is the mean over the window since the last log
  # line, so a NaN anywhere in it stops training, naming the window.
  c = _tiny(data_dir)
  c.optimizer.learning_rate = 1e30
  c.optimizer.grad_clip_norm = 0.0
  c.log_every_steps = log_every
  with pytest.raises(RuntimeError, match=where):
    trainer_lib.train_and_evaluate(c, str(tmp_path / "nan"))


# Config fields that change a run's length, data source or the values of
# its step's constants, not the program the step traces.
_NOT_IN_THE_STEP = ("dataset", "data_dir", "manual_dir", "num_train_steps",
                    "eval_every_steps", "checkpoint_every_steps",
                    "log_every_steps", "input.batch_size",
                    "input.eval_batch_size", "optimizer.learning_rate",
                    "optimizer.warmup_steps")


def _step_key(c):
  """The config without `_NOT_IN_THE_STEP`: equal keys trace equal steps."""
  flat = traverse_util.flatten_dict(json.loads(c.to_json_best_effort()),
                                    sep=".")
  return json.dumps({k: v for k, v in flat.items()
                     if k not in _NOT_IN_THE_STEP}, sort_keys=True)


def _config_names():
  """configs/*.py that are training configs (not the shared modules)."""
  return [os.path.basename(p)[:-3]
          for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
          if os.path.basename(p) not in ("__init__.py", "models.py",
                                         "base.py")]


def _config_variants():
  """(file, arg) for every config file's default and `:tiny` variants and
  the named words, less those whose step equals an earlier one's (e.g.
  KonIQ's and SPAQ's MUSIQ differ in learning rate and batch only)."""
  out = [(name, arg) for name in _config_names() for arg in (None, "tiny")]
  out += [("synthetic", "levels"), ("synthetic", "six_types"),
          ("glint", "small"), ("glint", "musiq_init"),
          ("liqe", "synthetic"), ("clipiqa", "zeroshot"),
          ("rankiqa_pretrain", "musiq"), ("rankiqa_finetune", "musiq")]
  keys = set()
  unique = []
  for name, arg in out:
    key = _step_key(load_config(os.path.join(ROOT, "configs", f"{name}.py"),
                                arg))
    if key not in keys:
      keys.add(key)
      unique.append((name, arg))
  return unique


def test_config_variants_skip_only_equal_steps():
  variants = _config_variants()
  assert ("koniq", None) in variants and ("koniq", "tiny") in variants
  # SPAQ's MUSIQ step is KonIQ's (learning rate and batch aside); KADID's
  # is not (its MOS range, 1..5, sets the head's initial bias).
  assert ("spaq", None) not in variants and ("kadid", None) in variants
  # Every other file's step is traced: the twins are KonIQ's recipe on
  # other data (test_every_config_file_loads still loads them).
  assert set(_config_names()) - {n for n, _ in variants} == {
      "livec", "paq2piq", "spaq"}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  from clip_fixtures import oracle  # pylint: disable=g-import-not-at-top
  from musiq_jax.clip import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  d = str(tmp_path_factory.mktemp("vocab"))
  tokenizer_lib.write_vocab_files(oracle.bpe_gz_path(), d)
  return d


@pytest.mark.parametrize("name,arg", _config_variants())
def test_every_config_traces_the_train_step(name, arg, tokenizer_dir):
  # Shapes only (jax.eval_shape): the paper sizes cost nothing to trace.
  c = load_config(os.path.join(ROOT, "configs", f"{name}.py"), arg)
  assert c.num_train_steps >= 0 and c.input.batch_size > 0
  if "tokenizer_dir" in c.init:
    c.init.tokenizer_dir = tokenizer_dir
  if arg == "tiny":
    assert c.num_train_steps <= 20
  trainer = trainer_lib.Trainer(c, devices=jax.devices()[:1])
  batch = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
           for k, v in trainer.task.example_batch(2).items()}
  state, out = jax.eval_shape(
      lambda s, b: trainer._step_fn(s, b, jax.random.PRNGKey(0)),  # pylint: disable=protected-access
      trainer.abstract_state, batch)
  assert out["loss"].shape == ()
  assert jax.tree.structure(state) == jax.tree.structure(
      trainer.abstract_state)


def test_every_config_file_loads():
  for name in _config_names():
    c = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
    assert hasattr(c, "keys"), name


def test_sharded_steps_equal_single_device():
  script = os.path.join(os.path.dirname(__file__), "sharding_check.py")
  env = dict(os.environ, **FAST_COMPILE_ENV,
             XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8"),
             TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, script], capture_output=True,
                       text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "OK synthetic" in out.stdout and "OK rankiqa_finetune" in out.stdout


def _free_port():
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
  script = os.path.join(os.path.dirname(__file__), "multihost_check.py")
  env = dict(os.environ, **FAST_COMPILE_ENV, TF_CPP_MIN_LOG_LEVEL="3")
  env["XLA_FLAGS"] = xla_flags()  # One CPU device per process.
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, script, str(i), "2", str(port),
       str(tmp_path / f"p{i}_")], stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=400)[0])
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
    assert "DONE" in out and " 2 4" in out  # 2 processes, 4 devices.
  single = subprocess.run(
      [sys.executable, script, "0", "1", "0", str(tmp_path / "single_")],
      capture_output=True, text=True, env=env, timeout=400)
  assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
  import sharding_check  # pylint: disable=g-import-not-at-top
  for name in sharding_check.CONFIGS:
    p0 = checkpoint.read_params(str(tmp_path / f"p0_{name}.npz"))
    p1 = checkpoint.read_params(str(tmp_path / f"p1_{name}.npz"))
    ref = checkpoint.read_params(str(tmp_path / f"single_{name}.npz"))
    assert set(p0) == set(ref), name
    for k in ref:
      np.testing.assert_array_equal(p0[k], p1[k])
      np.testing.assert_allclose(p0[k], ref[k], rtol=2e-4, atol=2e-5)
  # Evaluation: both processes name every valid row of the global batch, in
  # the order of their scores, as one process does.
  want = [f"photo_{i:02d}_{'x' * i}.jpg" for i in range(7)]
  ref = np.load(tmp_path / "single_synthetic_predictions.npz")
  assert list(ref["image_id"]) == want
  for i in range(2):
    got = np.load(tmp_path / f"p{i}_synthetic_predictions.npz")
    assert list(got["image_id"]) == want
    np.testing.assert_allclose(got["prediction"], ref["prediction"],
                               rtol=2e-4, atol=2e-5)


# The MUSIQ config and one crop baseline (trained from scratch), and when
# each run is killed: while checkpoint 4 is being written (an orbax tmp
# folder exists beside the complete checkpoint 2), or once checkpoint 2 is
# complete. Either way the next start must resume at 2 and end like the
# uninterrupted run. The kill during a write tests orbax's atomic commit,
# the same for every task, so the crop baseline (whose own part is skipping
# what its stream has fed) is killed after checkpoint 2.
KILL_CONFIGS = {"synthetic": "during", "rankiqa_finetune": "after"}


def _main_cmd(data_dir, workdir, name):
  return [sys.executable, "-m", "musiq_jax.main",
          f"--config={os.path.join(ROOT, 'configs', name + '.py')}:tiny",
          f"--workdir={workdir}", f"--config.data_dir={data_dir}",
          "--config.num_train_steps=6", "--config.eval_every_steps=3",
          "--config.checkpoint_every_steps=2"]


def _kill_when(proc, condition, timeout=600):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  start = time.time()
  while time.time() - start < timeout and proc.poll() is None:
    if condition():
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(0.02)
  proc.kill()
  return False


_ENV = dict(os.environ, **FAST_COMPILE_ENV, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="session")  # Outlives a worker's module switches.
def uninterrupted(data_dir, tmp_path_factory):
  """One uninterrupted run per config (a subprocess, like the killed ones)."""
  runs = {}

  def get(name):
    if name not in runs:
      ref = str(tmp_path_factory.mktemp(f"ref_{name}"))
      subprocess.run(_main_cmd(data_dir, ref, name), check=True, env=_ENV,
                     capture_output=True, timeout=900)
      runs[name] = ref
    return runs[name]

  return get


@pytest.mark.parametrize("name", sorted(KILL_CONFIGS))
def test_sigkill_and_resume_equals_uninterrupted(data_dir, tmp_path, name,
                                                 uninterrupted):
  # One run killed at its KILL_CONFIGS point; the next start resumes at 2
  # and must end exactly like the uninterrupted run.
  ref = uninterrupted(name)
  work = str(tmp_path / "killed")
  ckpts = os.path.join(work, "checkpoints")

  def names():
    return os.listdir(ckpts) if os.path.isdir(ckpts) else []

  def writing():
    return any("tmp" in n for n in names())

  points = {"during": lambda: "2" in names() and writing(),
            "after": lambda: "2" in names()}
  proc = subprocess.Popen(_main_cmd(data_dir, work, name), env=_ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  assert _kill_when(proc, points[KILL_CONFIGS[name]]), (
      "training ended before it was killed")
  assert not os.path.exists(os.path.join(work, "results.json"))
  if KILL_CONFIGS[name] == "during":  # A write was cut: only 2 is complete.
    assert "4" not in names() and writing(), names()
  out = subprocess.run(_main_cmd(data_dir, work, name), env=_ENV, text=True,
                       capture_output=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed at 2" in out.stdout, out.stdout[-2000:]
  with open(os.path.join(ref, "results.json")) as f1, open(
      os.path.join(work, "results.json")) as f2:
    assert json.load(f1) == json.load(f2)
  a = checkpoint.read_params(os.path.join(ref, "best.npz"))
  b = checkpoint.read_params(os.path.join(work, "best.npz"))
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_config_words_and_dataset_presets():
  with pytest.raises(ValueError, match=r"koniq\.py: unknown argument.*tinny"):
    load_config(os.path.join(ROOT, "configs", "koniq.py"), "tinny")
  c = load_config(os.path.join(ROOT, "configs", "koniq.py"))
  # 30 epochs of KonIQ's 7058 training images at batch 32, validated and
  # checkpointed once an epoch, on the 0..100 MOS scale.
  assert (c.num_train_steps, c.eval_every_steps) == (30 * 7058 // 32,
                                                     7058 // 32)
  assert c.checkpoint_every_steps == c.eval_every_steps
  assert tuple(c.mos_range) == (0.0, 100.0) and c.dataset == "koniq10k"
  c = load_config(os.path.join(ROOT, "configs", "livec.py"))
  assert c.eval_every_steps == 5 * 920 // 32
