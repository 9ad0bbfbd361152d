"""Every notebook in colabs/ runs top to bottom with tiny parameters on CPU.

The cell tagged "parameters" is replaced by the test's values (tiny model,
few steps, temporary paths), as papermill would inject them; any cell error
fails the test. The notebooks must also be stored without outputs.
"""

import glob
import os
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))


def _params(name, tmp, data_dir):
  data_dir = repr(data_dir)
  if name == "inference":
    return (f'CKPT_PATH = None\nIMAGE_PATHS = None\n'
            f'SKIMAGE_PHOTOS = ("chelsea",)\nMAX_SIDE = 96\n'
            f'OUT_DIR = {str(tmp / "out")!r}\nSEED = 0\n')
  if name == "train_synthetic":
    return (f'CONFIG = "tiny"\nNUM_TRAIN_STEPS = 4\nEVAL_EVERY_STEPS = 2\n'
            f'DATA_DIR = {data_dir}\nWORKDIR = {str(tmp / "wd")!r}\n'
            f'FRESH = True\n')
  if name == "baselines":
    return (f'WORKDIRS = None\nRUNS_ROOT = {str(tmp / "runs")!r}\n'
            f'CONFIGS = {{"MUSIQ tiny": "tiny", '
            f'"MUSIQ tiny + levels": "levels_tiny"}}\n'
            f'NUM_TRAIN_STEPS = 2\nDATA_DIR = {data_dir}\nSPLIT = "test"\n'
            f'BOOTSTRAP = 50\n')
  raise AssertionError(f"No test parameters for notebook {name}; add them "
                       "to tests/test_notebooks.py")


def test_there_are_notebooks():
  names = {os.path.basename(p) for p in NOTEBOOKS}
  assert names >= {"inference.ipynb", "train_synthetic.ipynb",
                   "baselines.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path, monkeypatch, tiny_data_dir):
  name = os.path.splitext(os.path.basename(path))[0]
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code), (
      f"{name}: store notebooks without outputs")
  tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, f"{name}: exactly one cell tagged 'parameters'"
  assert "pip install" in code[0].source and "find_spec" in code[0].source
  tagged[0].source = _params(name, tmp_path, tiny_data_dir)
  # The kernel inherits the environment: CPU only, quiet TF, and cheap
  # compiles (compile time dominates these tiny runs).
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  client = nbclient.NotebookClient(
      nb, timeout=300, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}})
  start = time.time()
  client.execute()  # Raises CellExecutionError naming the failing cell.
  print(f"{name}: {time.time() - start:.1f} s")
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})]
  assert images, f"{name}: no picture displayed"
