"""Package layering: model modules are leaves.

No module under musiq_jax/models/ may import musiq_jax.configs (configs
import models, not the reverse) or musiq_jax.checkpoint (which imports the
models to convert their weights): either would make a package cycle. Read
from the source with `ast`, so a lazy import inside a function counts too.
"""

import ast
import glob
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "musiq_jax")
FORBIDDEN = ("musiq_jax.configs", "musiq_jax.checkpoint")


def imported_modules(path):
  """Every module an import statement in `path` names (with `from` parts)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return names


def _bad(names):
  return sorted(n for n in names
                if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))


@pytest.mark.parametrize("path", sorted(glob.glob(
    os.path.join(PKG, "models", "*.py"))), ids=os.path.basename)
def test_model_modules_import_no_configs_or_checkpoint(path):
  assert not _bad(imported_modules(path)), path


def test_the_check_sees_both_import_forms(tmp_path):
  p = tmp_path / "m.py"
  p.write_text("def f():\n  from musiq_jax import checkpoint\n"
               "import musiq_jax.configs.glint\nfrom musiq_jax.models "
               "import vit\n")
  assert _bad(imported_modules(str(p))) == ["musiq_jax.checkpoint",
                                            "musiq_jax.configs.glint"]
