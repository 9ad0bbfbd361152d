"""Shared pytest setup: tests import helpers from this folder."""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `predict` and `main` turn on the persistent XLA compilation cache
# (musiq_jax/compilation_cache.py): keep the tests' programs out of the
# user's ~/.cache, in one folder per test process that its subprocesses
# (the CLI runs) share.
os.environ.setdefault("MUSIQ_JAX_CACHE_DIR",
                      tempfile.mkdtemp(prefix="musiq_jax_test_xla_"))

# The tests compile many small programs and run each a few times: XLA's
# optimisation costs more than it saves there, so the suite runs with it off
# (`jax_disable_most_optimizations`; test_models, test_performance_paths,
# test_clip_oracle and test_visualize: 201 s with it on, 108 s off). A test
# whose programs run long sets it back ("0" in its subprocess's
# environment); `JAX_DISABLE_MOST_OPTIMIZATIONS=0 make test` runs everything
# optimised (the `fast_compile` tests aside).
# With optimisation off, XLA:CPU's legacy loop emitters compile and run
# faster than its newer fusion emitters: a tiny MUSIQ train step compiled
# and ran once in 6.6 s instead of 10.7 s, then stepped in 0.75 s instead
# of 2.3 s. Both are set in the environment before jax starts, so that the
# tests' subprocesses inherit them.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def xla_flags(*extra: str) -> str:
  """`XLA_FLAGS` for a test subprocess: the tests' flags plus `extra`."""
  return " ".join((TEST_XLA_FLAGS,) + extra)


if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", "")).strip()

import importlib.util  # pylint: disable=g-import-not-at-top,wrong-import-order

import jax  # pylint: disable=g-import-not-at-top,wrong-import-order
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-order

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs")


def load_config(name: str, arg=None):
  """`configs/<name>.py` (or a path) loaded as a file, then get_config(arg)."""
  if not os.path.dirname(name):  # A bare name: one of configs/.
    name = os.path.join(CONFIG_DIR,
                        name if name.endswith(".py") else f"{name}.py")
  path = name
  spec = importlib.util.spec_from_file_location(
      "cfg_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(scope="module")
def fast_compile():
  """XLA's full optimisation costs more than it saves in few-step runs."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


TINY_DATASET = "synthetic_iqa/tiny"


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A TFDS data_dir holding synthetic_iqa/tiny, built once per test run.

  The build (~10 s) is shared by every module that only reads the tiny
  dataset, and by both pytest-xdist workers: the folder sits above the
  workers' own temp folders and the first worker builds it under a file
  lock while the other waits. Tests that build other datasets keep their
  own data_dir.
  """
  import fcntl  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # Shared by the workers of this run.
  data_dir = base / "shared_tfds"
  with open(base / "shared_tfds.lock", "w") as lock:  # Closing unlocks.
    fcntl.flock(lock, fcntl.LOCK_EX)
    from musiq_jax.datasets import build  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if not tfds.builder(TINY_DATASET, data_dir=str(data_dir)).is_prepared():
      build.build(TINY_DATASET, str(data_dir))
  return str(data_dir)
