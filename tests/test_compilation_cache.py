"""The persistent compilation cache: written by one process, read by the next."""

import json
import os
import subprocess
import sys

import numpy as np

from musiq_jax import compilation_cache
import musiq_fixtures as mf

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROGRAM = """
import sys
from absl import flags
from musiq_jax import compilation_cache
flags.FLAGS(["prog"] + sys.argv[2:])
print("DIR", compilation_cache.enable())
import jax, jax.numpy as jnp
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if "cache_hits" in name else None)
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print("HITS", len(hits))
print("STORE", compilation_cache.program_store() is not None)
"""


def _run(*args):
  out = subprocess.run([sys.executable, "-c", _PROGRAM, *args],
                       capture_output=True, text=True, cwd=_ROOT, check=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  lines = dict(l.split(" ", 1) for l in out.stdout.splitlines()
               if l.startswith(("DIR", "HITS", "STORE")))
  _run.store = lines["STORE"] == "True"
  return lines["DIR"], int(lines["HITS"])


def test_second_process_loads_what_the_first_compiled(tmp_path):
  cache = str(tmp_path / "xla")
  assert _run("x", f"--compilation_cache_dir={cache}") == (cache, 0)
  written = sorted(os.listdir(cache))
  assert written  # The first process wrote its programs...
  path, hits = _run("x", f"--compilation_cache_dir={cache}")
  assert path == cache and hits >= 1  # ... the second loaded them
  assert sorted(os.listdir(cache)) == written  # and compiled nothing new.
  assert _run.store  # The program store comes with the cache...
  _run("x", f"--compilation_cache_dir={cache}", "--noprogram_store")
  assert not _run.store  # ... unless --noprogram_store.
  # Opted out: no cache, nothing read.
  assert _run("x", f"--compilation_cache_dir={cache}",
              "--nocompilation_cache") == ("None", 0)


# A process scoring two photos of different sizes (two programs) with a tiny
# MUSIQ; prints what it traced and what the program store did.
_SCORE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import jax
traces = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, d, **kw: traces.append(name) if name.endswith(
        "jaxpr_trace_duration") else None)
from musiq_jax import compilation_cache, scorer
cache, ckpt, photos, cut = sys.argv[2:6]
if cache != "-":
  compilation_cache.enable(cache)
s = scorer.load_scorer(ckpt, max_seq_len_from_original_res=int(cut))
scores = [r.score for r in s.score(photos.split(","))]
store = compilation_cache.program_store()
print("RESULT", json.dumps({
    "scores": scores, "traces": len(traces),
    "loaded": store.loaded if store else None,
    "saved": store.saved if store else None,
    "programs": s.num_compilations()}))
"""


def _score(cache, ckpt, photos, cut=-1):
  out = subprocess.run(
      [sys.executable, "-c", _SCORE, os.path.dirname(__file__), cache, ckpt,
       ",".join(photos), str(cut)],
      capture_output=True, text=True, cwd=_ROOT, check=True,
      # Fast compiles (XLA's full optimisation is slower than these runs).
      env=dict(os.environ, JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="1"))
  line = [l for l in out.stdout.splitlines() if l.startswith("RESULT")][0]
  return json.loads(line.split(" ", 1)[1]), out.stderr


def test_program_store_second_process_traces_nothing(tmp_path):
  ckpt = str(tmp_path / "tiny.npz")
  mf.write_original_npz(ckpt, mf.original_musiq_shapes(**mf.TINY), seed=3)
  photos = []
  for name, size in (("chelsea", (300, 451)), ("astronaut", (512, 512))):
    photos.append(str(tmp_path / f"{name}.jpg"))
    mf.write_jpeg(photos[-1], mf.photo(name)[:size[0], :size[1]])
  cache = str(tmp_path / "xla")
  first, _ = _score(cache, ckpt, photos)
  assert first["saved"] == first["programs"] == 2 and first["loaded"] == 0
  assert first["traces"] >= 2
  programs = os.path.join(cache, "programs")
  written = sorted(f for f in os.listdir(programs) if f.endswith(".bin"))
  assert len(written) == 2
  # The next process loads both programs and the params' shapes: it traces
  # nothing at all, and its scores are the same executable's.
  second, _ = _score(cache, ckpt, photos)
  assert second["traces"] == 0
  assert (second["loaded"], second["saved"], second["programs"]) == (2, 0, 2)
  assert second["scores"] == first["scores"]
  # Without the store (jax.jit alone), the same scores.
  plain, _ = _score("-", ckpt, photos)
  assert plain["loaded"] is None and plain["traces"] >= 2
  np.testing.assert_allclose(plain["scores"], first["scores"], atol=1e-6)
  # A damaged file is compiled again (with a warning) and rewritten.
  with open(os.path.join(programs, written[0]), "r+b") as f:
    f.truncate(100)
  third, err = _score(cache, ckpt, photos)
  assert (third["loaded"], third["saved"]) == (1, 1)
  assert "Compiling again: cannot load the program" in err
  assert third["scores"] == first["scores"]
  # Another preprocessing (the native scale cut to 16 tokens) is another
  # program: nothing is loaded for it.
  cut, _ = _score(cache, ckpt, photos, cut=16)
  assert cut["loaded"] == 0 and cut["saved"] >= 1
  assert cut["scores"] != first["scores"]


def test_program_key_holds_the_environment(monkeypatch, tmp_path):
  store = compilation_cache.ProgramStore(str(tmp_path))
  args = (np.zeros([2, 3], np.float32),)
  base = store._file("k", args, {})  # pylint: disable=protected-access
  assert store._file("k", args, {}) == base  # pylint: disable=protected-access
  assert store._file("k2", args, {}) != base  # pylint: disable=protected-access
  assert store._file("k", (np.zeros([2, 4], np.float32),), {}) != base  # pylint: disable=protected-access
  assert store._file("k", args, {"grid": (1, 2)}) != base  # pylint: disable=protected-access
  compilation_cache._static_environment.cache_clear()  # pylint: disable=protected-access
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
  try:
    assert store._file("k", args, {}) != base  # pylint: disable=protected-access
  finally:
    monkeypatch.undo()
    compilation_cache._static_environment.cache_clear()  # pylint: disable=protected-access
  # So is a jax option that changes the compiled program, read when used.
  import jax  # pylint: disable=g-import-not-at-top
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", not old)
  try:
    assert store._file("k", args, {}) != base  # pylint: disable=protected-access
  finally:
    jax.config.update("jax_disable_most_optimizations", old)
  assert store._file("k", args, {}) == base  # pylint: disable=protected-access
  # The package's source is in the key: any change of a .py file changes
  # its digest (other files do not).
  src = tmp_path / "src"
  (src / "models").mkdir(parents=True)
  (src / "a.py").write_text("x = 1\n")
  (src / "models" / "b.py").write_text("y = 2\n")
  digest = compilation_cache.tree_digest(str(src))
  (src / "notes.txt").write_text("not code")
  assert compilation_cache.tree_digest(str(src)) == digest
  (src / "models" / "b.py").write_text("y = 3\n")
  assert compilation_cache.tree_digest(str(src)) != digest
