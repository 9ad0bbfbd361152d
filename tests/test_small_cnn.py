"""Tests of the small CNN backbone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiq_jax.models import small_cnn


def _init(model, x):
  # With partitionable threefry, this XLA CPU build takes seconds to compile
  # the random init of each 4-D kernel shape; the classic threefry is as good
  # for these tests and compiles in a fraction of that.
  with jax.threefry_partitionable(False):
    return jax.jit(model.init)(jax.random.key(0), x)["params"]


@pytest.fixture(scope="module")
def tiny():
  model = small_cnn.get_model("tiny", num_outputs=5)
  x = np.random.default_rng(1).uniform(-1, 1, (2, 24, 40, 3))
  x = jnp.asarray(x, jnp.float32)
  return model, _init(model, x), x


def _count(params):
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("variant,expected", [
    # conv 3*3*3*8+8, conv 3*3*8*16+16, head 16+1.
    ("tiny", 224 + 1168 + 17),
    # 4 convs (32, 64, 128, 256), pre_logits 256*512+512, head 512+1.
    ("shallow", 896 + 18496 + 73856 + 295168 + 131584 + 513),
])
def test_parameter_counts(variant, expected):
  model = small_cnn.get_model(variant)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 32, 32, 3)))
  assert _count(shapes["params"]) == expected


def test_tiny_forward_shapes_names_and_dtype(tiny):
  model, params, x = tiny
  assert set(params) == {"conv0_0", "conv1_0", "head"}
  out = jax.jit(model.apply)({"params": params}, x)
  assert out.shape == (2, 5) and out.dtype == jnp.float32
  # Global pooling: any crop size works with the same parameters.
  assert jax.jit(model.apply)({"params": params},
                              x[:, :8, :8]).shape == (2, 5)
  # bfloat16 compute keeps float32 parameters and float32 outputs, close to
  # the float32 result.
  bf16 = small_cnn.get_model("tiny", num_outputs=5, dtype=jnp.bfloat16)
  out16 = jax.jit(bf16.apply)({"params": params}, x)
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(out16, out, atol=0.05)
  with pytest.raises(ValueError):
    model.apply({"params": params}, x[0])
  with pytest.raises(ValueError):
    small_cnn.get_model("huge")


def test_zero_init_head_and_dropout(tiny):
  _, params, x = tiny
  model = small_cnn.get_model("tiny", num_outputs=5, zero_init_head=True,
                              dropout_rate=0.5)
  zero = _init(model, x)
  np.testing.assert_array_equal(zero["head"]["kernel"], 0.0)
  apply = jax.jit(model.apply, static_argnames="train")
  np.testing.assert_array_equal(apply({"params": zero}, x), 0.0)
  # Dropout acts only in training and needs its RNG there.
  eval1 = apply({"params": params}, x)
  np.testing.assert_array_equal(eval1, apply({"params": params}, x))
  with jax.threefry_partitionable(False):
    train = apply({"params": params}, x, train=True,
                  rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(train, eval1)
  # A hidden layer adds `pre_logits`.
  shapes = jax.eval_shape(
      small_cnn.get_model("tiny", hidden_size=8).init, jax.random.key(0), x)
  assert shapes["params"]["pre_logits"]["kernel"].shape == (16, 8)
