"""The fast paths compute what the plain ones do (tiny sizes; no timing)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiq_jax import scorer as scorer_lib
from musiq_jax.configs import models as model_sizes
from musiq_jax.models import musiq
from musiq_jax.models import transformer


def _tokens(batch, length, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.ones((batch, length), np.int32)
  mask[0, length // 2:] = 0
  return {
      "patches": rng.uniform(-1, 1, (batch, length, 3072)).astype(np.float32),
      "spatial": rng.integers(0, 100, (batch, length)).astype(np.int32),
      "scale": rng.integers(0, 3, (batch, length)).astype(np.int32),
      "mask": mask,
  }


def _random_like(params, seed=0):
  """Non-trivial values everywhere (the head and gn3 start at zero)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [
      0.3 * jax.random.normal(k, x.shape, x.dtype) + (x if x.ndim > 1 else 1.0)
      for k, x in zip(keys, leaves)])


def test_attention_equals_flax_multi_head_attention():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 16)),
                  jnp.float32)
  mask = jnp.asarray(np.arange(9)[None, None, None, :] <
                     np.array([9, 5])[:, None, None, None])
  ref = nn.MultiHeadDotProductAttention(
      num_heads=4, kernel_init=nn.initializers.xavier_uniform())
  ours = transformer.MultiHeadSelfAttention(num_heads=4)
  params = jax.jit(lambda k: ref.init(k, x, x, mask=mask))(
      jax.random.PRNGKey(0))
  # Same names, shapes and initial values as flax's module.
  ours_init = jax.jit(lambda k: ours.init(k, x, mask, deterministic=True))(
      jax.random.PRNGKey(0))
  jax.tree.map(np.testing.assert_array_equal, ours_init, params)
  params = _random_like(params)

  @jax.jit
  def outputs(params):
    return (ref.apply(params, x, x, mask=mask),
            ours.apply(params, x, mask, deterministic=True),
            ours.apply(params, x, mask, deterministic=True, num_queries=1))

  want, got, first = outputs(params)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(first, want[:, :1], rtol=1e-5, atol=1e-5)
  # Gradients too (the softmax's row maximum is a constant to autodiff):
  # against flax's module, whose softmax is `jax.nn.softmax`.
  grads = lambda f: jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(f(p, x))),  # pylint: disable=g-long-lambda
                                     argnums=(0, 1)))(params, x)
  want = grads(lambda p, x: ref.apply(p, x, x, mask=mask))
  got = grads(lambda p, x: ours.apply(p, x, mask, deterministic=True))
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(want))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(  # Key-bias grads:
      a, b, rtol=1e-4, atol=1e-5 * scale), got, want)   # 0 + noise.


def test_fast_model_paths_equal_plain_paths():
  cfg = model_sizes.get_model_config("tiny")
  x = _tokens(batch=2, length=11)
  fast = musiq.Model(num_scales=3, patch_chunk_size=4, **cfg)  # 22 % 4 != 0.
  plain = musiq.Model(num_scales=3, patch_chunk_size=0, sow_attention=True,
                      **cfg)
  params = jax.jit(plain.init)(jax.random.PRNGKey(0), x)["params"]
  fast_init = jax.jit(fast.init)(jax.random.PRNGKey(0), x)["params"]
  jax.tree.map(np.testing.assert_array_equal, fast_init, params)
  params = _random_like(params, seed=1)
  got = jax.jit(fast.apply)({"params": params}, x)
  want, _ = jax.jit(lambda p, x: plain.apply(
      {"params": p}, x, mutable=["intermediates"]))(params, x)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_length_buckets_cover_with_little_padding():
  prev = 0
  for n in range(1, 9000):
    b = scorer_lib.length_bucket(n)
    assert b >= n and b >= prev
    if n >= 128:
      assert b <= n * 1.0625 + 16, (n, b)
    prev = b
  assert scorer_lib.length_bucket(961) == 992  # A 1024x768 photo.


def test_blocked_attention_equals_exact_attention(monkeypatch):
  """Key blocks + online softmax = one softmax, with padding masks, a key
  count that does not fill the last block, CLS-only queries and gradients."""
  monkeypatch.setattr(transformer, "_TILE_ELEMENTS", 1)  # 128-key blocks.
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 300, 16)), jnp.float32)
  # Example 1 has 130 real keys: whole blocks of it are masked out.
  mask = jnp.asarray(np.arange(300)[None, None, None, :] <
                     np.array([300, 130])[:, None, None, None])
  exact = transformer.MultiHeadSelfAttention(num_heads=4, tiled_min_keys=0)
  tiled = transformer.MultiHeadSelfAttention(num_heads=4, tiled_min_keys=256)
  params = _random_like(jax.jit(lambda k: exact.init(
      k, x, mask, deterministic=True))(jax.random.PRNGKey(0)), seed=2)
  tiled_init = jax.jit(lambda k: tiled.init(k, x, mask, deterministic=True))(
      jax.random.PRNGKey(0))
  assert jax.tree.structure(tiled_init) == jax.tree.structure(params)
  for num_queries in (None, 1):
    f = lambda m, p, x, q=num_queries: m.apply(  # pylint: disable=g-long-lambda
        p, x, mask, deterministic=True, num_queries=q)
    want = jax.jit(functools.partial(f, exact))(params, x)
    got = jax.jit(functools.partial(f, tiled))(params, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # 300 keys, blocks of 128: the scan really runs over 3 blocks.
  assert transformer.key_block_size(2, 4, 300, 300) == 128
  loss = lambda m: jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(  # pylint: disable=g-long-lambda
      m.apply(p, x, mask, deterministic=True))), argnums=(0, 1)))
  want, got = loss(exact)(params, x), loss(tiled)(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-4), got, want)  # Key-bias grads: 0 + noise.


def test_large_photo_path_equals_exact_model(monkeypatch):
  """The large-photo path (ResNet + embedding in one chunk loop, blocked
  attention) scores what the exact path scores on the same tokens."""
  monkeypatch.setattr(transformer, "_TILE_ELEMENTS", 1)  # 2 key blocks.
  cfg = model_sizes.get_model_config("tiny")
  x = _tokens(batch=1, length=150)
  x["mask"][0, 140:] = 0  # Padding, as a bucket adds.
  exact = musiq.Model(num_scales=3, patch_chunk_size=32,
                      embed_in_chunks_from=0, attention_tiled_min_keys=0,
                      **cfg)
  large = musiq.Model(num_scales=3, patch_chunk_size=32,
                      embed_in_chunks_from=100, attention_tiled_min_keys=100,
                      **cfg)
  shapes = jax.eval_shape(exact.init, jax.random.PRNGKey(0), x)
  # Same names and shapes on both paths.
  assert shapes == jax.eval_shape(large.init, jax.random.PRNGKey(0), x)
  params = _random_like(jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), shapes), seed=4)
  want = jax.jit(exact.apply)(params, x)
  got = jax.jit(large.apply)(params, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_group_norm_equals_flax_group_norm():
  from musiq_jax.models import resnet  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.random.default_rng(5).normal(2.0, 3.0, (3, 4, 4, 8)),
                  jnp.float32)
  ref = nn.GroupNorm(num_groups=4, epsilon=1e-4)
  ours = resnet.GroupNorm(num_groups=4, epsilon=1e-4)
  params = ref.init(jax.random.PRNGKey(0), x)
  # Same names, shapes and initial values.
  jax.tree.map(np.testing.assert_array_equal,
               ours.init(jax.random.PRNGKey(0), x), params)
  params = _random_like(params, seed=6)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-5)
  loss = lambda m: jax.grad(lambda p, x: jnp.sum(jnp.sin(  # pylint: disable=g-long-lambda
      m.apply(p, x))), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-5), loss(ours), loss(ref))


def test_dropping_padding_tokens_keeps_the_scores(tmp_path, fast_compile):
  """The scorer runs the model on the real tokens only (the resized scales'
  padding dropped, `preprocessing.real_token_order`): same scores as the
  model on the original's full token layout, one by one and batched."""
  import musiq_fixtures as mf  # pylint: disable=g-import-not-at-top
  from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
  ckpt = str(tmp_path / "tiny.npz")
  mf.write_original_npz(ckpt, mf.original_musiq_shapes(**mf.TINY), seed=5)
  rng = np.random.default_rng(0)
  base = mf.photo("astronaut")
  # 4:3 (385 tokens, 342 real), a panorama, a small one (full layout).
  sizes = [(384, 512), (128, 512), (60, 90)]
  images = [np.ascontiguousarray(
      np.resize(base, (h, w, 3)) ^ rng.integers(0, 32, (h, w, 3),
                                                 dtype=np.uint8))
            for h, w in sizes]
  one = scorer_lib.load_scorer(ckpt)
  cfg = one.pp_config
  # Reference: the model on each image's full layout, padding included.
  want = []
  for image in images:
    feats = preprocessing.preprocess_image(image, cfg)
    n = feats["mask"].shape[0]
    want.append(float(one._predict(  # pylint: disable=protected-access
        one.params, preprocessing.pad_batch([feats], n))[0]))
  got = [r.score for r in one.score(images)]
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
  batched = scorer_lib.load_scorer(ckpt, batch_size=3)
  np.testing.assert_allclose([r.score for r in batched.score(images)], want,
                             rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(
      one.score_features([preprocessing.preprocess_image(x, cfg)
                          for x in images]), want, rtol=2e-5, atol=2e-5)
  # And the work is smaller: 512x384 runs 352 tokens instead of 400.
  _, plans, _ = one.canvas_batch([images[0]])
  assert preprocessing.seq_len(384, 512, cfg) == 385
  assert int(plans["mask"][0].sum()) == 342
  assert plans["order"].shape == (1, 352)
  # Every size fits its canvas, and the order lists each real token once.
  for h, w in [(31, 2000), (2000, 31), (300, 301), (700, 701),
               (1200, 1600), (97, 4000), (300, 451), (1024, 768)]:
    _, plans, _ = one.canvas_batch([np.zeros((h, w, 3), np.uint8)])
    n = preprocessing.real_seq_len(h, w, cfg)
    order, mask = plans["order"][0], plans["mask"][0]
    assert order.size == scorer_lib.length_bucket(n)
    assert sorted(order[:n]) == list(np.flatnonzero(mask))
    assert (order[n:] == mask.size).all()


def test_real_seq_len_counts_the_plans_mask():
  from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
  for cfg in (preprocessing.PreprocessConfig(),
              preprocessing.PreprocessConfig(longer_side_lengths=(33, 64),
                                             max_seq_len_from_original_res=7),
              preprocessing.PreprocessConfig(max_seq_len_from_original_res=None)):
    for h, w in ((384, 512), (1, 1), (31, 2000), (2000, 31), (1200, 1600),
                 (65, 33), (100, 99)):
      plan = preprocessing.make_plan(h, w, cfg)
      assert preprocessing.real_seq_len(h, w, cfg) == int(plan["mask"].sum())


def test_scoring_programs_take_the_cpu_compiler_options(tmp_path, monkeypatch):
  """On CPU the scoring program is compiled without YNNPACK fusions
  (`scorer.CPU_COMPILER_OPTIONS`): the option reaches XLA (no YNNPACK
  fusion is left in the compiled program, while XLA's defaults make some),
  the scores are XLA's defaults' within float tolerance, and a jaxlib that
  rejects the option falls back to the defaults."""
  import musiq_fixtures as mf  # pylint: disable=g-import-not-at-top
  ckpt = str(tmp_path / "tiny.npz")
  mf.write_original_npz(ckpt, mf.original_musiq_shapes(**mf.TINY), seed=3)
  rng = np.random.default_rng(1)
  images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in [(96, 128), (200, 150)]]
  tuned = scorer_lib.load_scorer(ckpt)
  assert tuned.compiler_options == scorer_lib.CPU_COMPILER_OPTIONS
  plain = scorer_lib.Scorer(tuned.model, tuned.params, tuned.pp_config,
                            score_fn=tuned.score_fn, compiler_options=None)
  np.testing.assert_allclose([r.score for r in tuned.score(images)],
                             [r.score for r in plain.score(images)],
                             rtol=1e-5, atol=1e-5)

  def hlo(scorer):
    canvas, plans, grid = scorer.canvas_batch([images[0]])
    return scorer._score_canvas.lower(  # pylint: disable=protected-access
        scorer.params, canvas, plans, grid=grid).compile().as_text()

  assert "ynn_fusion" in hlo(plain)
  assert "ynn_fusion" not in hlo(tuned)
  with np.testing.assert_raises(ValueError):
    scorer_lib.Scorer(tuned.model, tuned.params, tuned.pp_config,
                      compiler_options="fast")
  # An XLA that does not know the option: the defaults, no error.
  monkeypatch.setattr(scorer_lib, "CPU_COMPILER_OPTIONS",
                      {"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH"})
  scorer_lib._cpu_options_supported.cache_clear()  # pylint: disable=protected-access
  try:
    assert scorer_lib.default_compiler_options(jax.devices()) is None
  finally:
    scorer_lib._cpu_options_supported.cache_clear()  # pylint: disable=protected-access
