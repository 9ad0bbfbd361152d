"""The persistent compilation cache: written by one process, read by the next."""

import os
import subprocess
import sys

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
"""


def _run(*args):
  out = subprocess.run([sys.executable, "-c", _PROGRAM, *args],
                       capture_output=True, text=True, cwd=_ROOT, check=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  lines = dict(l.split(" ", 1) for l in out.stdout.splitlines()
               if l.startswith(("DIR", "HITS")))
  return lines["DIR"], int(lines["HITS"])


def test_second_process_loads_what_the_first_compiled(tmp_path):
  cache = str(tmp_path / "xla")
  assert _run("x", f"--compilation_cache_dir={cache}") == (cache, 0)
  written = sorted(os.listdir(cache))
  assert written  # The first process wrote its programs...
  path, hits = _run("x", f"--compilation_cache_dir={cache}")
  assert path == cache and hits >= 1  # ... the second loaded them
  assert sorted(os.listdir(cache)) == written  # and compiled nothing new.
  # Opted out: no cache, nothing read.
  assert _run("x", f"--compilation_cache_dir={cache}",
              "--nocompilation_cache") == ("None", 0)
