"""Tests of the small CNN backbone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiq_jax.models import small_cnn


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


def test_tiny_forward_shapes_names_and_dtype():
  model = small_cnn.get_model("tiny", num_outputs=5)
  x = jax.random.uniform(jax.random.key(1), (2, 24, 40, 3), minval=-1,
                         maxval=1)
  params = model.init(jax.random.key(0), x)["params"]
  assert set(params) == {"conv0_0", "conv1_0", "head"}
  out = jax.jit(model.apply)({"params": params}, x)
  assert out.shape == (2, 5) and out.dtype == jnp.float32
  # Global pooling: any crop size works with the same parameters.
  assert model.apply({"params": params}, x[:, :8, :8]).shape == (2, 5)
  # bfloat16 compute keeps float32 parameters and float32 outputs, close to
  # the float32 result.
  bf16 = small_cnn.get_model("tiny", num_outputs=5, dtype=jnp.bfloat16)
  out16 = bf16.apply({"params": params}, x)
  assert out16.dtype == jnp.float32
  np.testing.assert_allclose(out16, out, atol=0.05)
  with pytest.raises(ValueError):
    model.apply({"params": params}, x[0])
  with pytest.raises(ValueError):
    small_cnn.get_model("huge")


def test_zero_init_head_and_dropout():
  x = jax.random.uniform(jax.random.key(2), (3, 16, 16, 3), minval=-1,
                         maxval=1)
  model = small_cnn.get_model("tiny", zero_init_head=True, hidden_size=8,
                              dropout_rate=0.5)
  params = model.init(jax.random.key(0), x)["params"]
  assert "pre_logits" in params
  np.testing.assert_array_equal(model.apply({"params": params}, x), 0.0)
  # Dropout acts only in training and needs its RNG there.
  params["head"]["kernel"] = jnp.ones_like(params["head"]["kernel"])
  eval1 = model.apply({"params": params}, x)
  eval2 = model.apply({"params": params}, x)
  np.testing.assert_array_equal(eval1, eval2)
  train = model.apply({"params": params}, x, train=True,
                      rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(train, eval1)
