"""GlintIQA and the CLIP heads train by their configs through musiq_jax.main.

Each config's test-sized variant ("runlocal") runs end to end on
synthetic_iqa/tiny: build, train, pick the best step by validation SRCC,
score validation/test, write results.json / predictions / best.npz in the
format `musiq_jax.compare` reads. The CPU-sized numbers of the comparison
table come from the same configs' "small"/"synthetic" variants.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_fixtures import oracle  # pylint: disable=g-import-not-at-top
from conftest import load_config  # pylint: disable=g-import-not-at-top

from musiq_jax import checkpoint  # pylint: disable=g-import-not-at-top
from musiq_jax import compare
from musiq_jax import crop_models
from musiq_jax import crop_train
from musiq_jax.clip import prompts
from musiq_jax.clip import tokenizer as tokenizer_lib




pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("crop_baselines")


@pytest.fixture(scope="module")
def tokenizer_dir(root):
  d = str(root / "vocab")
  os.makedirs(d)
  tokenizer_lib.write_vocab_files(oracle.bpe_gz_path(), d)
  return d


def _run(name, arg, root, **overrides):
  config = load_config(name, arg)
  config.data_dir = str(root / "tfds")
  for k, v in overrides.items():
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  workdir = str(root / f"{name}_{arg}")
  summary = crop_train.train_and_evaluate(config, workdir)
  return config, workdir, summary


def _check_workdir(workdir, model_prefix):
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  assert res["model"].startswith(model_prefix), res["model"]
  assert res["num_params"] > 0
  for split in ("validation", "test"):
    m = res["splits"][split]
    with np.load(os.path.join(workdir, f"predictions_{split}.npz")) as d:
      assert d["prediction"].shape == (m["num_images"],)
      assert np.all(np.isfinite(d["prediction"]))
    assert np.isfinite(m["rmse"])
  assert os.path.exists(os.path.join(workdir, "best.npz"))
  return res


def test_glint_trains_by_its_config(root):
  config, workdir, summary = _run("glint", "runlocal", root,
                                  num_train_steps=4, eval_every_steps=2)
  res = _check_workdir(workdir, "glint/tiny/finetune")
  assert res["best_step"] in (2, 4)
  # best.npz holds the GlintIQA tree and scores like the in-memory model.
  model = crop_train.make_model(config)
  init = model.init(jax.random.PRNGKey(0), config.crop_size, config)
  params = checkpoint.load_params(os.path.join(workdir, "best.npz"),
                                  jax.device_get(init))
  assert set(checkpoint.flatten(params)) == set(checkpoint.flatten(init))
  assert summary["num_params"] == sum(
      int(np.prod(np.shape(v))) for v in jax.tree.leaves(init))


def test_liqe_trains_by_its_config_with_distortion_labels(root,
                                                          tokenizer_dir):
  config, workdir, _ = _run("liqe", "runlocal", root,
                            **{"init.tokenizer_dir": tokenizer_dir})
  _check_workdir(workdir, "liqe/tiny/finetune")
  # Scores are LIQE's expected level mapped onto the MOS range 1..5.
  with np.load(os.path.join(workdir, "predictions_test.npz")) as d:
    assert np.all((d["prediction"] >= 1.0) & (d["prediction"] <= 5.0))
  assert config.input.distortion_key == "distortion_type"


def test_clipiqa_trains_only_its_context(root, tokenizer_dir):
  config, workdir, _ = _run("clipiqa", "runlocal", root,
                            **{"init.tokenizer_dir": tokenizer_dir})
  _check_workdir(workdir, "clipiqa/tiny/finetune")
  model = crop_train.make_model(config)
  init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # as run
  init = checkpoint.flatten(jax.device_get(
      model.init(init_rng, config.crop_size, config)))
  trained = checkpoint.read_params(os.path.join(workdir, "best.npz"))
  moved = {k for k in init if not np.array_equal(init[k], trained[k])}
  assert moved == {"context"}, sorted(moved)[:5]


def test_multi_crop_evaluation_batched_equals_one_by_one(root,
                                                         tokenizer_dir):
  # The CLIP-IQA run of the test above; its best params scored with 1 and
  # with 5 images per call (the last call padded) must agree.
  config = load_config("clipiqa", "runlocal")
  config.data_dir = str(root / "tfds")
  config.init.tokenizer_dir = tokenizer_dir
  model = crop_train.make_model(config)
  init = model.init(jax.random.PRNGKey(0), config.crop_size, config)
  params = jax.tree.map(jnp.asarray, checkpoint.load_params(
      str(root / "clipiqa_runlocal" / "best.npz"), jax.device_get(init)))
  predict = jax.jit(lambda p, x: crop_train._predict(p, x, model=model))  # pylint: disable=protected-access
  out = {}
  for per_call in (1, 5):
    config.eval.images_per_call = per_call
    preds = {}
    crop_train.evaluate(config, predict, params, "validation", preds,
                        multi_crop=True)
    out[per_call] = np.asarray(preds["prediction"])
  assert out[1].shape == (31,)
  np.testing.assert_allclose(out[5], out[1], rtol=1e-5, atol=1e-6)


def test_baselines_join_the_comparison_table(root, tokenizer_dir):
  # Runs of the tests above (module-scoped root) plus the tiny MUSIQ-free
  # table: compare reads every crop workdir as train.py's.
  dirs = [str(root / d) for d in ("glint_runlocal", "liqe_runlocal",
                                  "clipiqa_runlocal")]
  dirs = [d for d in dirs if os.path.exists(os.path.join(d, "results.json"))]
  assert len(dirs) == 3, "run the whole module"
  rows = compare.compare(dirs, split="test", bootstrap=50)
  assert [r["model"].split("/")[0] for r in rows] == ["glint", "liqe",
                                                      "clipiqa"]
  for r in rows:
    assert -1.0 <= r["srcc"] <= 1.0 and r["srcc_ci"][0] <= r["srcc_ci"][1]


def test_liqe_distortion_lookup_and_dwa():
  names = ("pristine", "gaussian_blur", "white_noise", "jpeg", "jpeg2000",
           "contrast_change", "color_cast", "pixelate", "impulse_noise",
           "saturation")
  index, mask = crop_models.distortion_lookup(names)
  want = ["blur", "noise", "jpeg compression", "jpeg2000 compression",
          "contrast", "color", "spatial", "noise"]
  assert [prompts.LIQE_DISTORTIONS[i] for i in index[1:9]] == want
  # Pristine and types without a LIQE class carry no distortion label.
  np.testing.assert_array_equal(mask, [0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
  # DWA: equal split of alpha until two epochs are known; then the task
  # whose loss fell least (ratio nearest 1) weighs most.
  np.testing.assert_allclose(crop_models.dwa_weights([[1.0, 2.0]], 1.5, 2.0),
                             [0.75, 0.75])
  w = crop_models.dwa_weights([[1.0, 1.0], [0.5, 1.0]], 1.5, 2.0)
  r = np.array([0.5, 1.0]) / 2.0
  np.testing.assert_allclose(w, 1.5 * np.exp(r) / np.exp(r).sum(), rtol=1e-6)
  assert w[1] > w[0] and abs(w.sum() - 1.5) < 1e-6


def test_liqe_task_weights_scale_the_task_losses():
  config = load_config("liqe", "runlocal")
  logits = jax.random.normal(jax.random.PRNGKey(0), (4, 495))
  batch = {"label": jnp.array([1.0, 2.0, 4.0, 5.0]),
           "valid": jnp.ones(4),
           "distortion": jnp.array([3, 2, 1, 0]),
           "distortion_mask": jnp.array([1.0, 1.0, 0.0, 1.0])}
  loss_fn = crop_models.liqe_loss_fn(config.loss)
  plain, terms = loss_fn(logits, batch)
  np.testing.assert_allclose(plain, terms["quality"] + terms["distortion"],
                             rtol=1e-6)
  weighted, _ = loss_fn(logits, dict(batch,
                                     task_weights=jnp.array([0.25, 2.0])))
  np.testing.assert_allclose(
      weighted, 0.25 * terms["quality"] + 2.0 * terms["distortion"],
      rtol=1e-6)


def test_rank_stage_refuses_clip_heads(tokenizer_dir):
  config = load_config("clipiqa", "runlocal")
  config.init.tokenizer_dir = tokenizer_dir
  config.stage = "rank"
  model = crop_train.make_model(config)
  with pytest.raises(ValueError, match="no scalar output"):
    crop_train.make_loss(config, model)


def test_clip_head_without_tokenizer_names_the_field():
  config = load_config("liqe", "runlocal")
  with pytest.raises(ValueError, match="tokenizer_dir"):
    crop_train.make_model(config)


CROP_CONFIGS = [("rankiqa_pretrain", None), ("rankiqa_finetune", None),
                ("glint", None), ("glint", "small"), ("glint", "musiq_init"),
                ("liqe", None), ("liqe", "synthetic"), ("clipiqa", None),
                ("clipiqa", "synthetic"), ("clip_linear", None),
                ("clip_linear", "synthetic")]


@pytest.mark.parametrize("name,arg", CROP_CONFIGS)
def test_every_crop_config_traces_a_step(name, arg, tokenizer_dir):
  # Shapes only (jax.eval_shape): the paper sizes cost nothing to trace.
  config = load_config(name, arg)
  assert config.trainer == "crop" and config.num_train_steps >= 0
  if "tokenizer_dir" in config.init:
    config.init.tokenizer_dir = tokenizer_dir
  model = crop_train.make_model(config)
  loss_fn = crop_train.make_loss(config, model)
  s, b = config.crop_size, 2
  k = config.input.get("crops_per_image", 1)
  shape = (b, k, s, s, 3) if k > 1 else (b, s, s, 3)
  if model.multi_crop and k == 1:
    shape = (b, s, s, 3)
  params = jax.eval_shape(
      lambda r: model.init(r, s, config), jax.random.PRNGKey(0))
  tx, _ = crop_train.make_optimizer(config, model, params)
  batch = {"image": jax.ShapeDtypeStruct(shape, jnp.uint8),
           "label": jax.ShapeDtypeStruct((b,), jnp.float32),
           "valid": jax.ShapeDtypeStruct((b,), jnp.float32)}
  if config.stage == "rank":
    batch.update(level=jax.ShapeDtypeStruct((b,), jnp.int32),
                 group=jax.ShapeDtypeStruct((b,), jnp.int32),
                 weight=jax.ShapeDtypeStruct((b,), jnp.float32))
  out = jax.eval_shape(
      lambda p, bt: crop_train._train_step(  # pylint: disable=protected-access
          p, tx.init(p), bt, jax.random.PRNGKey(0), model=model, tx=tx,
          loss_fn=loss_fn), params, batch)
  assert out[2]["loss"].shape == ()
