"""MUSIQ as a differentiable metric: `Scorer.as_loss()`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiq_jax import preprocessing
from musiq_jax import scorer as scorer_lib
import musiq_fixtures as mf


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("metric") / "tiny.npz"
  mf.write_original_npz(path, mf.original_musiq_shapes(**mf.TINY), seed=4)
  return str(path)


def _small(scorer, dtype=jnp.float32):
  """The checkpoint's model with small scales (cheap to differentiate)."""
  model = scorer.model.clone(dtype=dtype)
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype), scorer.params)
  pp = preprocessing.PreprocessConfig(longer_side_lengths=(32, 64))
  return scorer_lib.Scorer(model, params, pp)


def test_metric_equals_the_scorer_on_photos(ckpt, fast_compile):
  del fast_compile
  scorer = scorer_lib.load_scorer(ckpt)
  musiq = scorer.as_loss()
  photos = np.stack([mf.photo("chelsea")[:150, :226],
                     mf.photo("coffee")[:150, :226]])
  got = np.asarray(musiq(photos.astype(np.float32) / 255.0))
  want = [r.score for r in scorer.score(list(photos))]
  assert got.shape == (2,)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Explicit params, inside the caller's jit: the same.
  jitted = jax.jit(lambda x, p: musiq(x, p))
  np.testing.assert_allclose(jitted(photos / 255.0, scorer.params), got,
                             rtol=1e-6)


def test_gradient_matches_central_differences(ckpt, fast_compile):
  # float64: the model is piecewise smooth (ReLU, max-pool), so central
  # differences with a small step match the gradient to ~1e-10 of its norm.
  # float32 (what users run): its gradient is float64's to rounding.
  del fast_compile
  x = mf.photo("chelsea")[100:124, 200:240] / 255.0
  with jax.enable_x64(True):
    musiq = _small(scorer_lib.load_scorer(ckpt), jnp.float64).as_loss()
    x64 = jnp.asarray(x[None])
    assert x64.dtype == jnp.float64
    value_and_grad = jax.jit(jax.value_and_grad(lambda x: musiq(x)[0]))
    _, g = value_and_grad(x64)
    assert g.dtype == jnp.float64 and g.shape == x64.shape
    norm = float(jnp.linalg.norm(g))
    assert norm > 0
    rng = np.random.default_rng(0)
    eps = 1e-5
    for v in [g] + [rng.standard_normal(x64.shape) for _ in range(2)]:
      v = jnp.asarray(v) / jnp.linalg.norm(v)
      fd = (value_and_grad(x64 + eps * v)[0] -
            value_and_grad(x64 - eps * v)[0]) / (2 * eps)
      assert abs(float(fd - jnp.vdot(g, v))) / norm < 1e-6
    g64 = np.asarray(g)
  musiq32 = _small(scorer_lib.load_scorer(ckpt)).as_loss()
  g32 = jax.grad(lambda x: musiq32(x)[0])(jnp.asarray(x[None], jnp.float32))
  assert g32.dtype == jnp.float32
  assert np.linalg.norm(g32 - g64) / np.linalg.norm(g64) < 1e-4


def test_gradient_steps_raise_the_score_of_a_blurred_photo(ckpt,
                                                           fast_compile):
  # The docs' example (docs/metric.md), a few optax steps with the tiny model.
  del fast_compile
  import optax  # pylint: disable=g-import-not-at-top
  scorer = _small(scorer_lib.load_scorer(ckpt))
  musiq = scorer.as_loss()
  sharp = mf.photo("astronaut")[::8, ::8] / 255.0
  k = np.array([1, 4, 6, 4, 1], np.float32) / 16
  blurred = sharp
  for axis in (0, 1):
    blurred = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), axis,
                                  blurred)
  x = jnp.asarray(np.clip(blurred, 0, 1)[None], jnp.float32)
  opt = optax.adam(1e-2)
  state = opt.init(x)

  @jax.jit
  def step(x, state, params):
    loss, g = jax.value_and_grad(lambda x: -musiq(x, params).mean())(x)
    updates, state = opt.update(g, state)
    return jnp.clip(optax.apply_updates(x, updates), 0, 1), state, loss

  scores = []
  for _ in range(4):  # The loss is -score before each step's update.
    x, state, loss = step(x, state, scorer.params)
    scores.append(-float(loss))
  assert scores[-1] > scores[0] + 1e-3, scores


def test_mscn_input_has_finite_pixel_gradients():
  # Flat and zero-padded windows have zero local variance, where sqrt's
  # derivative is infinite: the gradient there must be finite (0), not NaN.
  from musiq_jax.models import musiq  # pylint: disable=g-import-not-at-top
  x = np.zeros((2, 16, 16, 3), np.float32)
  x[1, 4:12, 4:12] = np.random.default_rng(0).uniform(-1, 1, (8, 8, 3))
  g = jax.grad(lambda x: musiq.mscn(x).sum())(jnp.asarray(x))
  assert np.all(np.isfinite(g)) and np.abs(g[1]).max() > 0


def test_clear_errors_for_bad_inputs(ckpt):
  musiq = scorer_lib.load_scorer(ckpt).as_loss()
  ok = np.zeros((1, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    musiq(ok[0])
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    musiq(np.zeros((1, 8, 8, 4), np.float32))
  with pytest.raises(TypeError, match="divide uint8"):
    musiq(ok.astype(np.uint8))
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    musiq(ok + 255.0)
  with pytest.raises(ValueError, match="NaN"):
    musiq(ok * np.nan)
  with pytest.raises(TypeError, match="float array"):
    musiq([[1.0]])
  with pytest.raises(Exception, match="full-resolution tokens"):
    scorer_lib.load_scorer(ckpt, max_native_tokens=4).as_loss()(
        np.zeros((1, 96, 96, 3), np.float32))
