"""GlintIQA and the CLIP heads train by their configs through the trainer.

Each config's test-sized variant ("tiny") runs end to end on
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
from musiq_jax import tasks
from musiq_jax import trainer
from musiq_jax.clip import prompts
from musiq_jax.clip import tokenizer as tokenizer_lib




pytestmark = pytest.mark.usefixtures("fast_compile")


# Session-scoped: the runs outlive pytest's module boundaries, which a
# worker may cross between two tests of this module.
@pytest.fixture(scope="session")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("crop_baselines")


@pytest.fixture(scope="session")
def data_dir(tiny_data_dir):
  return tiny_data_dir  # synthetic_iqa/tiny, built once (conftest.py).


@pytest.fixture(scope="session")
def tokenizer_dir(root):
  d = str(root / "vocab")
  os.makedirs(d)
  tokenizer_lib.write_vocab_files(oracle.bpe_gz_path(), d)
  return d


# The runs the tests below train (glint with 4 steps, validated every 2).
_OVERRIDES = {"glint": {"num_train_steps": 4, "eval_every_steps": 2}}


@pytest.fixture(scope="session")
def run(root, data_dir, tokenizer_dir):
  """name -> (config, workdir, summary) of its `:tiny` config's run, trained
  on first use and shared by this module's tests on this pytest-xdist
  worker (each worker trains a run at most once)."""
  runs = {}

  def get(name):
    if name not in runs:
      config = load_config(name, "tiny")
      config.data_dir = data_dir
      if "tokenizer_dir" in config.init:
        config.init.tokenizer_dir = tokenizer_dir
      for k, v in _OVERRIDES.get(name, {}).items():
        config[k] = v
      workdir = str(root / f"{name}_tiny")
      summary = trainer.train_and_evaluate(config, workdir)
      runs[name] = config, workdir, summary
    return runs[name]
  return get


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


def test_glint_trains_by_its_config(run):
  config, workdir, summary = run("glint")
  res = _check_workdir(workdir, "glint/tiny/finetune")
  assert res["best_step"] in (2, 4)
  # best.npz holds the GlintIQA tree and scores like the in-memory model.
  init = jax.jit(tasks.get_task(config).init_params)(jax.random.PRNGKey(0))
  params = checkpoint.load_params(os.path.join(workdir, "best.npz"),
                                  jax.device_get(init))
  assert set(checkpoint.flatten(params)) == set(checkpoint.flatten(init))
  assert summary["num_params"] == sum(
      int(np.prod(np.shape(v))) for v in jax.tree.leaves(init))


def test_liqe_trains_by_its_config_with_distortion_labels(run):
  config, workdir, _ = run("liqe")
  _check_workdir(workdir, "liqe/tiny/finetune")
  # Scores are LIQE's expected level mapped onto the MOS range 1..5.
  with np.load(os.path.join(workdir, "predictions_test.npz")) as d:
    assert np.all((d["prediction"] >= 1.0) & (d["prediction"] <= 5.0))
  assert config.input.distortion_key == "distortion_type"


@pytest.mark.parametrize("name,trained_keys", [
    ("clipiqa", {"context"}),  # CLIP-IQA+: only the CoOp context learns.
    ("clip_linear", {"head/kernel", "head/bias"})])  # A linear probe.
def test_clip_heads_train_only_what_is_not_frozen(run, name, trained_keys):
  config, workdir, _ = run(name)
  _check_workdir(workdir, f"{name}/tiny/finetune")
  init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # as run
  init = checkpoint.flatten(jax.device_get(
      jax.jit(tasks.get_task(config).init_params)(init_rng)))  # as run
  trained = checkpoint.read_params(os.path.join(workdir, "best.npz"))
  moved = {k for k in init if not np.array_equal(init[k], trained[k])}
  assert moved == trained_keys, sorted(moved)[:5]


def test_multi_crop_scores_do_not_depend_on_the_batch(run, data_dir):
  # The CLIP-IQA run scored from its workdir with 2 and with 5 images per
  # batch (the last batch padded) must agree, and agree with the run's own
  # evaluation.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from musiq_jax import scorer as scorer_lib  # pylint: disable=g-import-not-at-top
  _, workdir, _ = run("clipiqa")
  builder = tfds.builder("synthetic_iqa/tiny", data_dir=data_dir)
  ds = builder.as_dataset("test", decoders={"image": tfds.decode.SkipDecoding()})
  images, ids = zip(*[(e["image"], e["image_id"].decode())
                      for e in tfds.as_numpy(ds)])
  out = {}
  for batch in (2, 5):
    s = scorer_lib.load_scorer(workdir=workdir, batch_size=batch)
    assert isinstance(s, tasks.CropScorer) and s.batch_size == batch
    out[batch] = np.asarray([r.score for r in s.score(images, ids)])
  assert out[2].shape == (31,)
  np.testing.assert_allclose(out[5], out[2], rtol=1e-5, atol=1e-6)
  with np.load(os.path.join(workdir, "predictions_test.npz")) as p:
    want = dict(zip(p["image_id"].tolist(), p["prediction"]))
  np.testing.assert_allclose(out[5], [want[i] for i in ids], rtol=1e-5,
                             atol=1e-6)


def test_baselines_join_the_comparison_table(run):
  # The crop runs of the tests above in one table: compare reads every crop
  # workdir as it reads MUSIQ's.
  dirs = [run(name)[1] for name in ("glint", "liqe", "clipiqa")]
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
  config = load_config("liqe", "tiny")
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
  config = load_config("clipiqa", "tiny")
  config.init.tokenizer_dir = tokenizer_dir
  config.task = "rank"
  with pytest.raises(ValueError, match="no scalar output"):
    tasks.get_task(config)


def test_clip_head_without_tokenizer_names_the_field():
  config = load_config("liqe", "tiny")
  with pytest.raises(ValueError, match="tokenizer_dir"):
    tasks.get_task(config)


def test_unknown_crop_model_and_task_fail_clearly():
  config = load_config("rankiqa_pretrain", "tiny")
  config.model_name = "vgg16"
  with pytest.raises(ValueError, match="small_cnn"):
    tasks.get_task(config)
  config.task = "nope"
  with pytest.raises(ValueError, match="config.task='nope'"):
    tasks.get_task(config)


def test_finetune_loads_the_ranked_backbone_with_a_fresh_head(tmp_path):
  # A stand-in for a finished ranking run: random params exported as
  # W1/best.npz, as the trainer exports them.
  pre = load_config("rankiqa_pretrain", "tiny")
  weights = jax.tree.map(
      lambda x: np.asarray(jax.random.normal(jax.random.PRNGKey(1), x.shape),
                           x.dtype),
      tasks.get_task(pre).init_params(jax.random.PRNGKey(0)))
  os.makedirs(tmp_path / "w1")
  checkpoint.export_npz(weights, str(tmp_path / "w1" / "best.npz"))
  c = load_config("rankiqa_finetune", "tiny")
  c.init.pretrained_workdir = str(tmp_path / "w1")
  task = tasks.get_task(c)
  init = jax.device_get(task.init_params(jax.random.PRNGKey(2)))
  loaded, source = task.load_pretrained(init)
  assert source == str(tmp_path / "w1" / "best.npz")
  flat_loaded = checkpoint.flatten(loaded)
  flat_init, flat_w = checkpoint.flatten(init), checkpoint.flatten(weights)
  assert any(k.startswith("head/") for k in flat_loaded)
  for k, v in flat_loaded.items():
    want = flat_init[k] if k.startswith("head/") else flat_w[k]
    np.testing.assert_array_equal(v, want)
  c.init.pretrained_workdir = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="pretraining stage first"):
    tasks.get_task(c).load_pretrained(init)


def test_musiq_as_the_ranked_backbone_is_musiq_on_each_crops_tokens(tmp_path):
  """configs/rankiqa_pretrain.py:musiq: the crop module's params are a
  `musiq.Model`'s, its tokens are the host preprocessing of each crop, its
  outputs MUSIQ's on those tokens, and its export loads into the MUSIQ
  task (the ranking stage as MUSIQ's pre-training)."""
  from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
  from musiq_jax.models import musiq  # pylint: disable=g-import-not-at-top
  c = load_config("rankiqa_pretrain", "musiq,tiny")
  assert (c.task, c.model_name, c.crop_size) == ("rank", "musiq", 64)
  task = tasks.get_task(c)
  params = jax.device_get(task.init_params(jax.random.PRNGKey(0)))
  pp = preprocessing.PreprocessConfig.from_dict(dict(c.pp))
  plain = musiq.Model(num_scales=pp.num_scales, **c.model)
  crops = np.stack([oracle_photo[:64, :64] for oracle_photo in (
      _photo("chelsea"), _photo("astronaut"), _photo("coffee"))])
  host = [preprocessing.preprocess_image(x, pp) for x in crops]
  ref_params = plain.init(jax.random.PRNGKey(0), preprocessing.pad_batch(
      host[:1]))["params"]
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, ref_params)
  # Random weights everywhere (the head starts at zero).
  params = jax.tree.map(
      lambda x: np.asarray(0.1 * jax.random.normal(jax.random.PRNGKey(3),
                                                   x.shape), x.dtype), params)
  tokens = jax.jit(task.module.tokens)(crops)
  for k in ("patches", "spatial", "scale", "mask"):
    np.testing.assert_allclose(np.asarray(tokens[k]),
                               np.stack([h[k] for h in host]), atol=1e-6,
                               err_msg=k)
  got = task.apply(params, {"image": crops}, train=False)
  want = plain.apply({"params": params}, preprocessing.pad_batch(host))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5,
                             atol=1e-5)
  assert np.ptp(np.asarray(got)) > 0
  # [B, K, S, S, 3] eval crops: the mean of the K crops' scores.
  k_crops = np.stack([crops, crops[::-1]], axis=1)
  pooled = task.eval_scores(params, {"image": k_crops})
  np.testing.assert_allclose(
      np.asarray(pooled), (np.asarray(got)[:, 0] + np.asarray(got)[::-1, 0])
      / 2, rtol=1e-5, atol=1e-5)
  # Its export is a MUSIQ checkpoint: the MUSIQ task loads all but the head.
  npz = str(tmp_path / "best.npz")
  checkpoint.export_npz(params, npz)
  m = load_config("synthetic", "tiny")
  m.init.pretrained_npz = npz
  mtask = tasks.get_task(m)
  minit = jax.device_get(mtask.init_params(jax.random.PRNGKey(1)))
  loaded, source = mtask.load_pretrained(minit)
  assert source == npz
  flat, want_flat = checkpoint.flatten(loaded), checkpoint.flatten(params)
  init_flat = checkpoint.flatten(minit)
  assert set(flat) == set(want_flat)
  for key, v in flat.items():
    np.testing.assert_array_equal(
        v, init_flat[key] if key.startswith("head/") else want_flat[key])
  # A native-scale cut would drop patches of a crop: refused by name.
  c.pp.max_seq_len_from_original_res = 1
  with pytest.raises(ValueError, match="max_seq_len_from_original_res=-1"):
    tasks.get_task(c)


def _photo(name):
  import skimage.data  # pylint: disable=g-import-not-at-top
  x = getattr(skimage.data, name)()
  return np.ascontiguousarray(x[..., :3]).astype(np.uint8)
