"""MUSIQ model tests: names, parameter counts, invariances, a NumPy oracle."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiq_jax import checkpoint
from musiq_jax import preprocessing
from musiq_jax.configs import models as model_sizes
from musiq_jax.models import musiq
from musiq_jax.models import resnet
import musiq_fixtures as mf
import numpy_reference

# Exact parameter counts (num_classes=1, 3 scales), derived by hand:
#   root conv 7*7*3*w + GN 2w; bottleneck unit (w -> 4w) 19*w^2/... see below;
#   embedding (8*8*4w)*D + D; HSE 100*D; scale 3*D; CLS D; final LN 2D;
#   per layer 2 LN (4D) + attention 4*D*D + 4D + MLP 2*D*M + M + D; head D+1.
# The default is the released MUSIQ: 27,125,825 parameters.
EXPECTED_PARAMS = {"musiq": 27_125_825, "small": 1_747_745, "tiny": 306_529}


def _count_by_formula(d, layers, m, w, grid=10, scales=3):
  unit = (w * 4 * w + 8 * w) + (w * w + 2 * w) + (9 * w * w + 2 * w) + (
      w * 4 * w + 8 * w)
  return (7 * 7 * 3 * w + 2 * w + unit + 8 * 8 * 4 * w * d + d +
          grid * grid * d + scales * d + d + 2 * d +
          layers * (4 * d + 4 * d * d + 4 * d + 2 * d * m + m + d) + d + 1)


def test_expected_counts_agree_with_formula():
  for size, n in EXPECTED_PARAMS.items():
    c = model_sizes.get_model_config(size)
    assert _count_by_formula(c.hidden_size, c.num_layers, c.mlp_dim,
                             c.resnet_width) == n, size


def _tokens(batch=1, length=10, dim=3072, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "patches": rng.uniform(-1, 1, (batch, length, dim)).astype(np.float32),
      "spatial": rng.integers(0, 100, (batch, length)).astype(np.int32),
      "scale": rng.integers(0, 3, (batch, length)).astype(np.int32),
      "mask": np.ones((batch, length), np.int32),
  }


def _model(size, **kw):
  cfg = model_sizes.get_model_config(size)
  cfg.update(kw)
  return musiq.Model(num_scales=3, **cfg)


def _params_from_original(shapes, seed=0):
  """(original-layout flat params, the linen tree built from them)."""
  flat = mf.random_params(shapes, seed)
  return flat, checkpoint.unflatten(mf.linen_layout(flat))


@pytest.mark.parametrize("size", sorted(EXPECTED_PARAMS))
def test_parameter_counts(size):
  model = _model(size)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             _tokens()))["params"]
  n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  assert n == EXPECTED_PARAMS[size]


def test_param_tree_matches_original_names_and_shapes():
  model = _model("musiq")
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             _tokens()))["params"]
  ours = {k: tuple(v.shape) for k, v in checkpoint.flatten(shapes).items()}
  original = mf.original_musiq_shapes()
  assert len(original) == mf.NUM_RELEASED_KEYS
  # Same names; shapes equal up to the GroupNorm layout, which the loader
  # adapts (linen (C,), flax.nn (1, 1, 1, C)).
  assert ours == {k: tuple(np.shape(v)) for k, v in mf.linen_layout(
      {k: np.zeros(s, np.int8) for k, s in original.items()}).items()}
  exported = checkpoint.to_original_layout(
      {k: np.zeros(s, np.int8) for k, s in ours.items()})
  assert {k: v.shape for k, v in exported.items()} == original


def test_matches_numpy_reference():
  flat, params = _params_from_original(mf.original_musiq_shapes(**mf.TINY))
  x = _tokens(batch=2, length=12, seed=1)
  x["mask"][0, 8:] = 0
  x["mask"][1, 3:5] = 0
  ours = jax.jit(_model("tiny").apply)({"params": params}, x)
  ref = numpy_reference.forward(flat, x["patches"], x["spatial"], x["scale"],
                                x["mask"], num_heads=2)
  np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-4)


def test_padding_tokens_do_not_change_the_score():
  _, params = _params_from_original(mf.original_musiq_shapes(**mf.TINY))
  model = _model("tiny")
  x = _tokens(batch=1, length=20, seed=2)
  base = jax.jit(model.apply)({"params": params}, x)
  for extra in (1, 7, 64):
    rng = np.random.default_rng(extra)
    padded = {k: np.concatenate([v, np.zeros((1, extra) + v.shape[2:],
                                             v.dtype)], axis=1)
              for k, v in x.items()}
    # Garbage in padding positions must not matter either.
    padded["patches"][:, 20:] = rng.uniform(-1, 1, (1, extra, 3072))
    padded["spatial"][:, 20:] = rng.integers(0, 100, (1, extra))
    out = jax.jit(model.apply)({"params": params}, padded)
    np.testing.assert_allclose(out, base, rtol=1e-5, atol=1e-5)


def test_batch_equals_one_by_one():
  _, params = _params_from_original(mf.original_musiq_shapes(**mf.TINY))
  model = _model("tiny")
  examples = []
  for i, n in enumerate((5, 17, 9)):
    x = _tokens(length=n, seed=10 + i)
    examples.append({k: v[0] for k, v in x.items()})
  singles = [jax.jit(model.apply)({"params": params},
                         {k: v[None] for k, v in e.items()}) for e in examples]
  batched = jax.jit(model.apply)({"params": params}, preprocessing.pad_batch(examples))
  np.testing.assert_allclose(batched, np.concatenate(singles), rtol=1e-5,
                             atol=1e-5)


def test_concatenated_original_input_format():
  _, params = _params_from_original(mf.original_musiq_shapes(**mf.TINY))
  model = _model("tiny")
  x = _tokens(batch=2, length=6, seed=3)
  x["mask"][1, 4:] = 0
  np.testing.assert_allclose(
      jax.jit(model.apply)({"params": params}, preprocessing.to_concatenated(x)),
      jax.jit(model.apply)({"params": params}, x), rtol=1e-6)


def test_multi_crop_input_folds_crops():
  _, params = _params_from_original(mf.original_musiq_shapes(**mf.TINY))
  model = _model("tiny")
  x = _tokens(batch=6, length=8, seed=4)
  crops = {k: v.reshape((2, 3) + v.shape[1:]) for k, v in x.items()}
  out = jax.jit(model.apply)({"params": params}, crops)
  assert out.shape == (2, 3, 1)
  np.testing.assert_allclose(out.reshape(6, 1),
                             jax.jit(model.apply)({"params": params}, x), rtol=1e-6)


def test_ava_head_and_pre_logits():
  shapes = mf.original_musiq_shapes(num_classes=10, representation_size=16,
                                    **mf.TINY)
  _, params = _params_from_original(shapes)
  model = _model("tiny", num_classes=10, representation_size=16)
  out = jax.jit(model.apply)({"params": params}, _tokens(batch=2))
  assert out.shape == (2, 10)


def test_dropout_and_layer_drop_only_in_training():
  _, params = _params_from_original(mf.original_musiq_shapes(**mf.TINY))
  model = _model("tiny", dropout_rate=0.3, stochastic_layer_drop_rate=0.5)
  x = _tokens(batch=4, seed=5)
  apply = jax.jit(model.apply, static_argnames="train")
  ev1 = apply({"params": params}, x)
  ev2 = apply({"params": params}, x)
  np.testing.assert_array_equal(ev1, ev2)
  tr = [apply({"params": params}, x, train=True,
              rngs={"dropout": jax.random.PRNGKey(i)}) for i in (1, 2)]
  assert not np.allclose(tr[0], tr[1])
  assert not np.allclose(tr[0], ev1)


def test_bfloat16_compute_stays_close():
  flat, params = _params_from_original(mf.original_musiq_shapes(**mf.TINY))
  x = _tokens(batch=2, seed=6)
  f32 = jax.jit(_model("tiny").apply)({"params": params}, x)
  bf16 = jax.jit(_model("tiny", dtype=jnp.bfloat16).apply)({"params": params}, x)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=0.1 * float(np.abs(f32).max()) + 0.05)


@pytest.mark.parametrize("shape", [(3, 16, 16, 4), (2, 15, 9, 3), (1, 1, 1, 2),
                                   (2, 7, 8, 1)])
def test_max_pool_same_equals_flax_pooling_and_its_gradient(shape):
  # Random floats have no ties, so the select-chain gradient must equal
  # XLA's select-and-scatter gradient exactly.
  x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
  ref = lambda v: nn.max_pool(v, (3, 3), strides=(2, 2), padding="SAME")
  np.testing.assert_array_equal(resnet.max_pool_same(x, 3, 2), ref(x))
  g_ours = jax.grad(lambda v: jnp.sum(resnet.max_pool_same(v, 3, 2)**2))(x)
  g_ref = jax.grad(lambda v: jnp.sum(ref(v)**2))(x)
  np.testing.assert_array_equal(g_ours, g_ref)


@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 32, 32, 3), 7, 2),  # The root conv.
    ((2, 15, 9, 5), 7, 2),  # Odd sizes: TF SAME pads more at the bottom.
    ((3, 8, 8, 6), 3, 1),
    ((2, 9, 7, 4), 3, 2),
    ((2, 8, 8, 6), 1, 1),
    ((2, 9, 8, 6), 1, 2),
])
def test_conv_same_equals_xla_convolution_and_its_gradients(shape, kernel,
                                                            stride):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel, kernel, shape[-1], 5)),
                  jnp.float32)
  ref = lambda x, w: jax.lax.conv_general_dilated(  # pylint: disable=g-long-lambda
      x, w, (stride, stride), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ours = lambda x, w: resnet.conv_same(x, w, stride)
  np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  # A loss that weights every output differently, so a misplaced window
  # or kernel tap would show in both gradients.
  t = jnp.asarray(rng.standard_normal(ref(x, w).shape), jnp.float32)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)) * t)
  g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, w)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(x, w)
  for a, b in zip(g_ours, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _scipy_mscn(x, c):
  """MSCN by scipy's separable Gaussian filter (zero outside the image)."""
  import scipy.ndimage
  blur = lambda a: scipy.ndimage.gaussian_filter(
      a, (0, 7 / 6, 7 / 6, 0), truncate=3 / (7 / 6), mode="constant")
  x = x.astype(np.float64)
  mu = blur(x)
  sd = np.sqrt(np.maximum(blur(x * x) - mu * mu, 0.0))
  return (x - mu) / (sd + c)


def test_mscn_matches_scipy_reference():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  x[1] = np.cumsum(x[1], axis=0) / 8  # Smooth image: sigma near 0.
  for c in (musiq.MSCN_C, 0.5):
    np.testing.assert_allclose(np.asarray(musiq.mscn(x, c)),
                               _scipy_mscn(x, c), rtol=2e-4, atol=2e-4)


def test_mscn_interior_ignores_local_gain_and_offset():
  # With c = 0, away from the zero-padded border (3 px), MSCN of a*x + b
  # equals MSCN of x: brightness and contrast divide out.
  rng = np.random.default_rng(1)
  x = rng.uniform(-0.5, 0.5, (1, 32, 32, 3)).astype(np.float32)
  a = np.asarray(musiq.mscn(x, 0.0))[:, 3:-3, 3:-3]
  b = np.asarray(musiq.mscn(0.4 * x + 0.3, 0.0))[:, 3:-3, 3:-3]
  np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-3)
  # And it is not the identity: contrast changes the RGB channels.
  assert np.abs(0.4 * x + 0.3 - x).max() > 0.3


def _mscn_model_and_params(seed=0):
  model = _model("tiny", patch_input="rgb_mscn")
  params = jax.jit(model.init)(jax.random.PRNGKey(seed),
                               _tokens(length=4))["params"]
  # The head starts at zero; random weights everywhere make scores vary.
  shapes = {k: v.shape for k, v in checkpoint.flatten(params).items()}
  return model, checkpoint.unflatten(mf.random_params(shapes, seed))


def test_rgb_mscn_patch_input():
  model, params = _mscn_model_and_params()
  assert params["conv_root"]["kernel"].shape[-2] == 6  # RGB + MSCN.
  apply = jax.jit(model.apply)
  x = _tokens(batch=1, length=12, seed=3)
  base = apply({"params": params}, x)
  # Padding tokens (mask 0, garbage pixels) do not change the score.
  padded = {k: np.concatenate([v, np.zeros((1, 5) + v.shape[2:], v.dtype)],
                              axis=1) for k, v in x.items()}
  padded["patches"][:, 12:] = np.random.default_rng(4).uniform(
      -1, 1, (1, 5, 3072))
  np.testing.assert_allclose(apply({"params": params}, padded), base,
                             rtol=1e-5, atol=1e-5)
  # The MSCN channels matter: the same weights without them differ.
  kernel = np.array(params["conv_root"]["kernel"])
  kernel[:, :, 3:] = 0.0
  rgb_only = dict(params, conv_root=dict(params["conv_root"], kernel=kernel))
  assert not np.allclose(apply({"params": rgb_only}, x), base, atol=1e-4)
  with pytest.raises(ValueError, match="patch_input"):
    _model("tiny", patch_input="lab").init(jax.random.PRNGKey(0), x)
