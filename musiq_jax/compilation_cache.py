"""A persistent XLA compilation cache, on by default for the command lines.

`predict` and `main` call `enable()` first thing: compiled programs are
written to `--compilation_cache_dir` (default `~/.cache/musiq_jax/xla`, or
`$MUSIQ_JAX_CACHE_DIR`), and a later process on the same machine that
builds the same program (same model, token bucket, batch size, jax and
XLA versions) loads it instead of compiling again. This uses JAX's own
persistent cache (`jax_compilation_cache_dir`, see
https://docs.jax.dev/en/latest/persistent_compilation_cache.html).
Opt out with `--nocompilation_cache`.
"""

import os
from typing import Optional

from absl import flags
from absl import logging

DEFAULT_DIR = os.environ.get(
    "MUSIQ_JAX_CACHE_DIR", os.path.join("~", ".cache", "musiq_jax", "xla"))

_ENABLED = flags.DEFINE_bool(
    "compilation_cache", True,
    "Keep compiled XLA programs in --compilation_cache_dir so that the next "
    "process does not compile them again (--nocompilation_cache: off).")
_DIR = flags.DEFINE_string(
    "compilation_cache_dir", DEFAULT_DIR,
    "Directory of the persistent XLA compilation cache.")


def enable(path: Optional[str] = None) -> Optional[str]:
  """Turns JAX's persistent compilation cache on; returns its directory.

  `path` None: the flags' choice (None when `--nocompilation_cache`, or
  when flags are not parsed yet: then `DEFAULT_DIR`). Every program is
  cached however fast it compiled (JAX's default skips those under 1 s,
  which on a fast machine are most of the scorer's).
  """
  if path is None:
    if flags.FLAGS.is_parsed():
      if not _ENABLED.value:
        return None
      path = _DIR.value
    else:
      path = DEFAULT_DIR
  path = os.path.expanduser(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:  # A read-only home: run without the cache.
    logging.warning("Compilation cache off: cannot create %s (%s).", path, e)
    return None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  logging.info("XLA compilation cache: %s", path)
  return path
