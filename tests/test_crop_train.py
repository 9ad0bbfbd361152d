"""RankIQA through musiq_jax.crop_train: pretrain -> finetune on tiny data."""

import json
import os

import jax
import numpy as np
import pytest

import conftest
from musiq_jax import checkpoint
from musiq_jax import crop_train



def load_config(name, arg=None):
  return conftest.load_config(name, arg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Runs both stages once (tiny configs); returns their workdirs + config."""
  root = tmp_path_factory.mktemp("rankiqa")
  data_dir = str(root / "tfds")
  pre, ft = str(root / "pretrain"), str(root / "finetune")
  c = load_config("rankiqa_pretrain.py", "tiny")
  c.data_dir = data_dir
  crop_train.train_and_evaluate(c, pre)
  c = load_config("rankiqa_finetune.py", "tiny")
  c.data_dir = data_dir
  c.init.pretrained_workdir = pre
  c.num_train_steps = 2
  c.eval_every_steps = 2
  crop_train.train_and_evaluate(c, ft)
  return pre, ft, c


@pytest.mark.parametrize("stage", [0, 1])
def test_results_and_predictions_in_train_py_format(runs, stage):
  workdir = runs[stage]
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  assert set(res) == {"step", "best_step", "model", "num_params", "splits"}
  assert res["model"].startswith("small_cnn/tiny/")
  assert res["num_params"] > 0
  for split in ("validation", "test"):
    m = res["splits"][split]
    assert set(m) == {"srcc", "plcc", "plcc_fitted", "krcc", "rmse",
                      "num_images"}
    with np.load(os.path.join(workdir, f"predictions_{split}.npz")) as d:
      assert set(d.files) == {"prediction", "label", "image_id"}
      assert d["prediction"].shape == (m["num_images"],)
      assert len(set(d["image_id"].tolist())) == m["num_images"]
      assert np.all(np.isfinite(d["prediction"]))
  assert os.path.exists(os.path.join(workdir, "best.npz"))


def test_finetune_loads_backbone_and_reinitialises_head(runs):
  pre, _, config = runs
  pretrained = checkpoint.read_params(os.path.join(pre, "best.npz"))
  model = crop_train.make_model(config)
  init = model.init(jax.random.PRNGKey(config.seed), config.crop_size, config)
  loaded, source = crop_train.load_pretrained(config, init)
  assert source == os.path.join(pre, "best.npz")
  flat_loaded = checkpoint.flatten(jax.device_get(loaded))
  flat_init = checkpoint.flatten(jax.device_get(init))
  assert any(k.startswith("head/") for k in flat_loaded)
  for k, v in flat_loaded.items():
    if k.startswith("head/"):
      np.testing.assert_array_equal(v, flat_init[k])
    else:
      np.testing.assert_array_equal(v, pretrained[k])
  # The ranking loss is shift-invariant, so the head bias may stay 0 in both;
  # the trained kernel must differ from the fresh one.
  assert not np.array_equal(flat_loaded["head/kernel"],
                            pretrained["head/kernel"])


def test_finetune_sidecar_names_the_stage(runs):
  _, ft, _ = runs
  with open(os.path.join(ft, "best.json")) as f:
    info = json.load(f)
  assert info["stage"] == "finetune" and info["trainer"] == "crop"


def test_missing_pretrained_workdir_fails_clearly(tmp_path):
  c = load_config("rankiqa_finetune.py", "tiny")
  c.init.pretrained_workdir = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="pretraining stage first"):
    crop_train.load_pretrained(c, {})


def test_unknown_backbone_fails():
  c = load_config("rankiqa_pretrain.py", "tiny")
  c.model_name = "vgg16"
  with pytest.raises(ValueError, match="small_cnn"):
    crop_train.make_model(c)
