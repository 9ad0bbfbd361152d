"""LIQE, CLIP-IQA and the linear probe train a few optax steps on real photos."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_fixtures import data  # pylint: disable=g-import-not-at-top
from clip_fixtures import oracle  # pylint: disable=g-import-not-at-top
from conftest import load_config  # pylint: disable=g-import-not-at-top

from musiq_jax.clip import factory  # pylint: disable=g-import-not-at-top
from musiq_jax.clip import heads
from musiq_jax.clip import losses
from musiq_jax.clip import model_sizes
from musiq_jax.clip import preprocess
from musiq_jax.clip import tokenizer as tokenizer_lib
from musiq_jax.clip import train_lib



def _config(name, arg="runlocal"):
  return load_config(name, arg)


pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("vocab"))
  tokenizer_lib.write_vocab_files(oracle.bpe_gz_path(), d)
  return d


@pytest.fixture(scope="module")
def photos():
  """Six real photos, center-cropped for CLIP, with synthetic labels."""
  names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
  op = preprocess.get_clip_eval()
  images = np.stack([op(tf.constant(data.photo(n))).numpy() for n in names])
  return dict(image=jnp.asarray(images),
              mos=jnp.array([4.5, 3.8, 3.1, 2.2, 1.6, 1.1]),  # synthetic, all distinct
              distortion=jnp.array([3, 2, 0, 1, 10, 6]))


def _train(model, loss_fn, tx, params, batch, steps):
  # The step donates its state: train on a copy so the caller's params survive.
  state = train_lib.init_state(jax.tree.map(jnp.copy, params), tx)
  step = train_lib.jit_train_step(train_lib.make_train_step(model, loss_fn, tx))
  rng = jax.random.key(0)
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch, rng)
    history.append(float(metrics["loss"]))
  assert np.all(np.isfinite(history)), history
  final, _ = loss_fn(model.apply({"params": state.params}, batch["image"],
                                 batch.get("prompt_ids")), batch)
  return history, float(final), state


def test_configs_have_required_fields():
  for name in ("liqe", "clipiqa", "clip_linear"):
    for arg in (None, "runlocal"):
      cfg = _config(name, arg)
      assert cfg.model.name == name
      assert cfg.model.clip in model_sizes.list_clip_sizes()
      assert cfg.init.clip_weights is None and "tokenizer_dir" in cfg.init
  assert _config("liqe", None).model.clip == "ViT-B/32"
  assert _config("clipiqa", "zeroshot").model.n_ctx == 0


def test_liqe_trains(tokenizer_dir, photos):
  cfg = _config("liqe")
  cfg.init.tokenizer_dir = tokenizer_dir
  model = factory.build_model(cfg.model)
  ids = factory.prompt_ids(cfg)
  assert ids.shape == (495, 77)
  params = factory.init_params(model, cfg, ids, jax.random.key(cfg.seed))
  batch = dict(photos, prompt_ids=jnp.asarray(ids))
  loss_fn = lambda logits, b: losses.liqe_loss(logits, b)
  history, final, state = _train(model, loss_fn, optax.adamw(1e-3), params, batch, steps=5)
  assert final < history[0] - 1e-3, (history, final)
  # 15-crop inference runs on the trained model and gives a score in [1, 5].
  crops = preprocess.get_liqe_eval()(tf.constant(data.photo("coffee"))).numpy()
  logits = model.apply({"params": state.params}, jnp.asarray(crops[None]), batch["prompt_ids"])
  score = heads.liqe_marginals(logits)["score"]
  assert logits.shape == (1, 495) and 1.0 <= float(score[0]) <= 5.0


def test_clipiqa_coop_trains_only_context(tokenizer_dir, photos):
  cfg = _config("clipiqa")
  cfg.init.tokenizer_dir = tokenizer_dir
  cfg.model.n_ctx = 4
  model = factory.build_model(cfg.model)
  ids = factory.prompt_ids(cfg)
  params = factory.init_params(model, cfg, ids, jax.random.key(cfg.seed))
  batch = dict(photos, mos=(photos["mos"] - 1.0) / 4.0, prompt_ids=jnp.asarray(ids))
  tx = train_lib.freeze(optax.adam(5e-2), params, cfg.optimizer.frozen)
  history, final, state = _train(model, losses.clipiqa_loss, tx, params, batch, steps=6)
  assert final < history[0] - 1e-4, (history, final)
  # Only the context vectors moved; CLIP is frozen.
  for a, b in zip(jax.tree.leaves(params["clip"]), jax.tree.leaves(state.params["clip"])):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(params["context"], state.params["context"])


def test_clipiqa_zero_shot_and_full_finetune(tokenizer_dir, photos):
  cfg = _config("clipiqa", "zeroshot,runlocal")
  cfg.init.tokenizer_dir = tokenizer_dir
  model = factory.build_model(cfg.model)
  ids = factory.prompt_ids(cfg)
  params = factory.init_params(model, cfg, ids, jax.random.key(0))
  logits = model.apply({"params": params}, photos["image"], jnp.asarray(ids))
  score = heads.clipiqa_score(logits)
  assert score.shape == (6,) and bool(jnp.all((score >= 0) & (score <= 1)))
  batch = dict(photos, mos=(photos["mos"] - 1.0) / 4.0, prompt_ids=jnp.asarray(ids))
  history, final, _ = _train(model, losses.clipiqa_loss, optax.adam(1e-3), params, batch, 4)
  assert final < history[0], (history, final)


def test_linear_probe_trains_head_only(photos):
  cfg = _config("clip_linear")
  model = factory.build_model(cfg.model)
  params = factory.init_params(model, cfg, None, jax.random.key(0))
  history, final, state = _train(model, losses.regression_loss, optax.adam(1e-1), params,
                                 photos, steps=5)
  assert final < history[0], (history, final)
  for a, b in zip(jax.tree.leaves(params["clip"]), jax.tree.leaves(state.params["clip"])):
    np.testing.assert_array_equal(a, b)  # stop_gradient: zero grads, adam leaves them
