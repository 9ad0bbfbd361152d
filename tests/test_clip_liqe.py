"""LIQE read-outs, losses, prompts, the 15-crop sampler and the TF preprocessing ops."""

import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_fixtures import data  # pylint: disable=g-import-not-at-top

from musiq_jax.clip import heads  # pylint: disable=g-import-not-at-top
from musiq_jax import losses
from musiq_jax.clip import preprocess
from musiq_jax.clip import prompts


def test_prompt_order():
  texts = prompts.liqe_prompts()
  assert len(texts) == 495 == len(set(texts))
  q, s, d = 3, 7, 0  # good, still_life, jpeg2000 compression
  assert texts[q * 99 + s * 11 + d] == (
      "a photo of a still_life with jpeg2000 compression artifacts, which is of good quality")


def test_marginals_one_hot():
  logits = np.zeros((2, 495), np.float32)
  logits[0, 4 * 99 + 2 * 11 + 3] = 1e4  # perfect / human / blur
  logits[1, 0 * 99 + 8 * 11 + 10] = 1e4  # bad / others / other
  out = heads.liqe_marginals(jnp.asarray(logits))
  np.testing.assert_allclose(out["quality"], [[0, 0, 0, 0, 1], [1, 0, 0, 0, 0]], atol=1e-6)
  assert list(np.argmax(out["scene"], -1)) == [2, 8]
  assert list(np.argmax(out["distortion"], -1)) == [3, 10]
  np.testing.assert_allclose(out["score"], [5.0, 1.0], atol=1e-5)


def test_marginals_match_reference_and_score():
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=3.0, size=(3, 495)).astype(np.float32)
  out = heads.liqe_marginals(jnp.asarray(logits))
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p = (p / p.sum(-1, keepdims=True)).reshape(3, 5, 9, 11)
  np.testing.assert_allclose(out["quality"], p.sum((2, 3)), rtol=1e-5)
  np.testing.assert_allclose(out["scene"], p.sum((1, 3)), rtol=1e-5)
  np.testing.assert_allclose(out["distortion"], p.sum((1, 2)), rtol=1e-5)
  np.testing.assert_allclose(out["score"], p.sum((2, 3)) @ np.arange(1, 6), rtol=1e-5)
  # Uniform logits: every level equally likely, score 3.
  uniform = heads.liqe_marginals(jnp.zeros((1, 495)))
  np.testing.assert_allclose(uniform["score"], [3.0], rtol=1e-5)
  with pytest.raises(ValueError, match="495"):
    heads.liqe_marginals(jnp.zeros((1, 494)))


def test_pairwise_fidelity_loss_values():
  from scipy.stats import norm  # pylint: disable=g-import-not-at-top
  scores = jnp.array([1.0, 0.0])
  # mos agrees with the order: p = Phi(1), g = 1.
  agree = losses.pairwise_fidelity_loss(scores, jnp.array([2.0, 1.0]))
  np.testing.assert_allclose(agree, 1 - np.sqrt(norm.cdf(1.0) + 1e-8) - np.sqrt(1e-8), rtol=1e-5)
  disagree = losses.pairwise_fidelity_loss(scores, jnp.array([1.0, 2.0]))
  np.testing.assert_allclose(disagree, 1 - np.sqrt(1e-8) - np.sqrt(norm.cdf(-1.0) + 1e-8), rtol=1e-5)
  tie = losses.pairwise_fidelity_loss(scores, jnp.array([1.0, 1.0]))
  p = norm.cdf(1.0)
  np.testing.assert_allclose(tie, 1 - np.sqrt(p / 2 + 1e-8) - np.sqrt((1 - p) / 2 + 1e-8), rtol=1e-5)
  # Groups: pairs across groups do not count.
  grouped = losses.pairwise_fidelity_loss(jnp.array([1.0, 0.0, 5.0]), jnp.array([2.0, 1.0, 0.0]),
                                          jnp.array([0, 0, 1]))
  np.testing.assert_allclose(grouped, agree, rtol=1e-6)


def test_multiclass_fidelity_and_liqe_loss():
  probs = jnp.array([[0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
  per = [1 - np.sqrt(1 + 1e-8) - 2 * np.sqrt(1e-8), 1 - np.sqrt(0.5 + 1e-8) - 2 * np.sqrt(1e-8)]
  np.testing.assert_allclose(losses.multiclass_fidelity_loss(probs, jnp.array([1, 2]), 3),
                             np.mean(per), rtol=1e-5)
  np.testing.assert_allclose(
      losses.multiclass_fidelity_loss(probs, jnp.array([1, 2]), 3, jnp.array([1, 0])), per[0],
      atol=1e-6)
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 495)), jnp.float32)
  batch = dict(mos=jnp.array([1.0, 2.0, 3.0, 4.0]), distortion=jnp.array([0, 3, 3, 10]))
  total, terms = losses.liqe_loss(logits, batch)
  assert set(terms) == {"quality", "distortion", "score"}
  np.testing.assert_allclose(total, terms["quality"] + terms["distortion"], rtol=1e-6)


def _liqe_reference_crops(image_01, num=15, stride=32):
  """LIQE's own sampler, re-expressed with torch's unfold on a [1, 3, H, W] tensor."""
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.from_numpy(image_01).permute(2, 0, 1)[None]
  patches = x.unfold(2, 224, stride).unfold(3, 224, stride).permute(0, 2, 3, 1, 4, 5)
  patches = patches.reshape(-1, 3, 224, 224)
  step = patches.shape[0] // num
  sel = torch.tensor([step * i for i in range(num)])
  return patches[sel].permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", ["coffee", "rocket", "astronaut"])
def test_liqe_crops_match_liqe_unfold(name):
  image = data.photo(name).astype(np.float32)
  ours = preprocess.get_liqe_crops()(tf.constant(image)).numpy()
  np.testing.assert_array_equal(ours, _liqe_reference_crops(image))


def test_liqe_crops_cover_image():
  # 768 x 1024 (after AdaptiveResize): 18 x 26 patches; every 31st is taken.
  image = np.arange(768 * 1024, dtype=np.float32).reshape(768, 1024, 1).repeat(3, -1)
  crops = preprocess.get_liqe_crops()(tf.constant(image)).numpy()
  idx = preprocess.liqe_patch_indices(18 * 26)
  assert list(idx) == [31 * i for i in range(15)]
  tops = [int(c[0, 0, 0]) // 1024 for c in crops]
  lefts = [int(c[0, 0, 0]) % 1024 for c in crops]
  assert tops == [32 * (i // 26) for i in idx] and lefts == [32 * (i % 26) for i in idx]
  assert max(tops) + 224 > 768 // 2  # the crops reach past the middle rows
  # Too few patches for 15 (224 x 320 image has 4): evenly spaced, repeated.
  assert list(preprocess.liqe_patch_indices(4)) == [(i * 4) // 15 for i in range(15)]


@pytest.mark.parametrize("shape,expected", [
    ((500, 700), (500, 700)),      # a side < 768: unchanged (LIQE)
    ((800, 1000), (768, 960)),     # both >= 768: shorter side to 768
    ((1000, 800), (960, 768)),
    ((100, 300), (224, 672)),      # under 224: up to 224 (LIQE would fail)
])
def test_liqe_adaptive_resize(shape, expected):
  image = tf.zeros(shape + (3,), tf.uint8)
  out = preprocess.get_liqe_adaptive_resize()(image)
  assert tuple(out.shape[:2]) == expected


def _run_both_ways(op, image):
  eager = op(tf.constant(image)).numpy()
  ds = tf.data.Dataset.from_tensors(image).map(op)
  return eager, next(iter(ds)).numpy()


def test_ops_eager_and_tf_data_agree():
  image = data.photo("chelsea")  # 300 x 451
  for op in (preprocess.get_clip_eval(), preprocess.get_liqe_eval()):
    eager, graph = _run_both_ways(op, image)
    np.testing.assert_allclose(eager, graph, atol=1e-6)
  eager, graph = _run_both_ways(preprocess.get_clip_eval(), image)
  assert eager.shape == (224, 224, 3)
  # Close to OpenAI's PIL path (TF's bicubic differs slightly from PIL's).
  pil = preprocess.clip_preprocess_pil(image)
  assert np.abs(eager - pil).mean() < 0.01
  liqe, _ = _run_both_ways(preprocess.get_liqe_eval(), image)
  assert liqe.shape == (15, 224, 224, 3)
  tf.random.set_seed(0)
  train, train_graph = _run_both_ways(preprocess.get_clip_train(), image)
  assert train.shape == train_graph.shape == (224, 224, 3)
  # A training crop is a (possibly flipped) window of the normalised image.
  norm = preprocess.get_normalize()(tf.constant(image)).numpy()
  found = False
  for crop in (train, train[:, ::-1]):  # unflipped or flipped
    hits = np.argwhere(np.all(np.abs(norm[:300 - 223, :451 - 223] - crop[0, 0]) < 1e-5, -1))
    found |= any(np.allclose(crop, norm[t:t + 224, l:l + 224], atol=1e-5) for t, l in hits)
  assert found
