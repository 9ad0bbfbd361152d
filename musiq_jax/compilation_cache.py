"""A persistent XLA compilation cache, on by default for the command lines.

`predict` and `main` call `enable()` first thing: compiled programs are
written to `--compilation_cache_dir` (default `~/.cache/musiq_jax/xla`, or
`$MUSIQ_JAX_CACHE_DIR`), and a later process on the same machine that
builds the same program (same model, token bucket, batch size, jax and
XLA versions) loads it instead of compiling again. This uses JAX's own
persistent cache (`jax_compilation_cache_dir`, see
https://docs.jax.dev/en/latest/persistent_compilation_cache.html).
Opt out with `--nocompilation_cache`.

JAX's cache key is a hash of the lowered program, so a cached process still
traces and lowers every program before it can look it up (about a second
for the scorer's). `ProgramStore` (in `DIR/programs`) keeps the compiled
executables themselves (`jax.experimental.serialize_executable`) under a key
that needs no tracing: what the caller says built the program (for
`load_scorer`: the model, preprocessing and read-out configs), the argument
shapes, the versions of jax, jaxlib and flax, the devices, `XLA_FLAGS`, and
a hash of this package's source, so that a change of any of them is a miss
and compiles anew. Programs that fail to load are compiled again.
"""

import functools
import hashlib
import json
import os
import pickle
import tempfile
from typing import Any, Callable, Dict, Optional, Sequence

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

_STORE = flags.DEFINE_bool(
    "program_store", True,
    "With the compilation cache, also keep the scorer's compiled programs in "
    "--compilation_cache_dir/programs under a key that needs no tracing, so "
    "that a later process skips tracing and lowering too "
    "(--noprogram_store: JAX's cache alone).")

_PROGRAMS = "programs"  # ProgramStore's subfolder of the cache directory.
_store = None  # The ProgramStore of the enabled cache, if any.


def enable(path: Optional[str] = None) -> Optional[str]:
  """Turns JAX's persistent compilation cache on; returns its directory.

  `path` None: the flags' choice (None when `--nocompilation_cache`, or
  when flags are not parsed yet: then `DEFAULT_DIR`). Also sets up the
  `ProgramStore` (`program_store()`) unless `--noprogram_store`. Every program is
  cached however fast it compiled (JAX's default skips those under 1 s,
  which on a fast machine are most of the scorer's).
  """
  global _store
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
  use_store = _STORE.value if flags.FLAGS.is_parsed() else True
  _store = ProgramStore(os.path.join(path, _PROGRAMS)) if use_store else None
  logging.info("XLA compilation cache: %s", path)
  return path


def program_store() -> Optional["ProgramStore"]:
  """The store of compiled programs once `enable` turned the cache on."""
  return _store


def tree_digest(root: str) -> str:
  """sha256 of the names and contents of the Python files under `root`."""
  h = hashlib.sha256()
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
          h.update(f.read())
  return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _source_digest() -> str:
  """This package's `tree_digest`: a change of its code is a miss."""
  return tree_digest(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def _static_environment() -> str:
  """The versions, devices and flags fixed for the life of a process."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  devices = jax.local_devices()
  return json.dumps({
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "backend": jax.default_backend(),
      "platform_version": devices[0].client.platform_version,
      "devices": [d.device_kind for d in devices],
      "process_count": jax.process_count(),
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
      "source": _source_digest(),
  }, sort_keys=True)


def _environment() -> str:
  """What besides the program decides what XLA compiles, as a string: the
  process's versions and devices, and the jax options that change the
  compiled program (read at each call: they can change in a process)."""
  import jax  # pylint: disable=g-import-not-at-top
  return _static_environment() + json.dumps({
      "x64": bool(jax.config.jax_enable_x64),
      "matmul_precision": str(jax.config.jax_default_matmul_precision),
      "disable_most_optimizations": bool(
          jax.config.read("jax_disable_most_optimizations")),
  }, sort_keys=True)


def signature(tree: Any) -> str:
  """A pytree's structure with its leaves' shapes and dtypes, as a string."""
  import jax  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree.flatten(tree)
  return str(treedef) + repr([(tuple(x.shape), str(x.dtype)) for x in leaves])


class ProgramStore:
  """Compiled XLA programs on disk, found without tracing them.

  `compiled(jitted, key, args, static)` returns the executable of
  `jitted.lower(*args, **static).compile()`: from this process's memory,
  else from the file of `key` (plus the environment, see the module doc),
  else by compiling it (through JAX's own persistent cache) and saving it.
  The caller's `key` must name everything that decides the traced program
  other than the arguments' shapes, which are added here.
  """

  def __init__(self, path: str):
    self.path = path
    self._memory: Dict[str, Any] = {}
    self.loaded = 0  # Programs read from disk by this process.
    self.saved = 0   # Programs this process compiled and wrote.

  def _file(self, key: str, args: Sequence[Any], static: Dict[str, Any]
            ) -> str:
    digest = hashlib.sha256("\0".join(
        [_environment(), key, signature(args),
         repr(sorted(static.items()))]).encode()).hexdigest()
    return os.path.join(self.path, digest[:40] + ".bin")

  def compiled(self, jitted: Callable, key: str, args: Sequence[Any],
               static: Optional[Dict[str, Any]] = None):
    """The compiled program of `jitted` for these arguments; see the class."""
    from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
    static = static or {}
    path = self._file(key, args, static)
    program = self._memory.get(path)
    if program is not None:
      return program
    if os.path.exists(path):
      try:
        with open(path, "rb") as f:
          program = serialize_executable.deserialize_and_load(
              *pickle.load(f))
        self.loaded += 1
      except Exception as e:  # pylint: disable=broad-except
        # A truncated or foreign file: compile, and overwrite it below.
        logging.warning("Compiling again: cannot load the program %s (%s: "
                        "%s).", path, type(e).__name__, e)
        program = None
    if program is None:
      program = jitted.lower(*args, **static).compile()
      if self._save(path, serialize_executable.serialize(program)):
        self.saved += 1
    self._memory[path] = program
    return program

  def _save(self, path: str, payload) -> bool:
    """Writes atomically (a reader never sees half a file); a failure to
    write only costs the next process a compilation."""
    tmp = None
    try:
      os.makedirs(self.path, exist_ok=True)
      fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".tmp")
      with os.fdopen(fd, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
      os.replace(tmp, path)
      return True
    except (OSError, pickle.PicklingError, TypeError) as e:
      logging.warning("Could not save %s: %s", path, e)
      if tmp is not None and os.path.exists(tmp):
        os.remove(tmp)
      return False

  def value(self, key: str, make: Callable[[], Any]) -> Any:
    """A small picklable value stored by `key` (plus the environment),
    made by `make()` when missing: e.g. the shapes of a model's params,
    which otherwise cost a trace of its `init`."""
    digest = hashlib.sha256(
        ("value\0" + _environment() + "\0" + key).encode()).hexdigest()
    path = os.path.join(self.path, digest[:40] + ".pkl")
    if path in self._memory:
      return self._memory[path]
    value = None
    if os.path.exists(path):
      try:
        with open(path, "rb") as f:
          value = pickle.load(f)
      except Exception:  # pylint: disable=broad-except
        value = None
    if value is None:
      value = make()
      self._save(path, value)
    self._memory[path] = value
    return value
