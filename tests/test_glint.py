"""GlintIQA-style hybrid: shapes, exact sizes, fusion semantics, loading, training."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage.data

from musiq_jax import checkpoint
from musiq_jax import crop_models
from musiq_jax import tasks
from musiq_jax import trainer
from musiq_jax.configs import glint as glint_config
from musiq_jax.datasets import distortions
from musiq_jax.models import glint
from musiq_jax.models import glint_fusion
from musiq_jax.models import transformer
from musiq_jax.models import vit
import musiq_fixtures as mf

# Exact parameter counts per registered size (crop = the size's image_size).
EXPECTED_PARAMS = {"vit_small_r50": 37_074_645, "vit_musiq_r50": 34_121_685,
                   "small": 1_067_873, "tiny": 296_817}
# ResNet depth -> bottleneck units per stage, written out independently of
# resnet.get_block_desc.
_UNITS = {50: (3, 4, 6, 3), 11: (1, 1, 1), 8: (1, 1)}


pytestmark = pytest.mark.usefixtures("fast_compile")


def _count_by_formula(c):
  p, d, m, w = c["patch_size"], c["hidden_size"], c["mlp_dim"], c["resnet_width"]
  n = (c["image_size"] // p)**2
  built = max(c["feature_layers"]) + 1
  block = 2 * 2 * d + (4 * d * d + 4 * d) + (d * m + m + m * d + d)
  vit_n = p * p * 3 * d + d + d + (n + 1) * d + built * block
  clfe = 7 * 7 * 3 * w + 2 * w
  cin = w
  for i in range(c["resnet_num_stages"]):
    f = w * 2**i
    for u in range(_UNITS[c["resnet_num_layers"]][i]):
      if u == 0:  # Width or stride changes: a projection shortcut.
        clfe += cin * 4 * f + 2 * 4 * f
      clfe += (cin * f + 2 * f) + (9 * f * f + 2 * f) + (f * 4 * f + 2 * 4 * f)
      cin = 4 * f
    k = p // (4 * 2**i)
    clfe += k * k * 4 * f * d + d
  cwsa = 3 * (n * n + n) + 2 * n
  local = cwsa + c["resnet_num_stages"] * d * d + d
  fusion = len(c["feature_layers"]) * (cwsa + 2 * d * d + d + 9 * d * d)
  head = d * d + d + d + 1
  return vit_n + clfe + local + fusion + head


def _config(size="tiny", **optimizer):
  config = glint_config.get_config("tiny")
  config.model.size = size
  config.optimizer.update(optimizer)
  return config


@pytest.fixture(scope="module")
def paper_shapes():
  """The paper size's params as shapes (eval_shape only: 37M params)."""
  model = glint.create_model(_config("vit_small_r50"))
  return model, glint.param_shapes(model, 224)


@pytest.fixture(scope="module")
def tiny():
  config = _config()
  model = glint.create_model(config)
  params = glint.init_params(model, jax.random.PRNGKey(0), config.crop_size)
  return config, model, params


# ---------------------------------------------------------------------------
# Sizes and shapes.
# ---------------------------------------------------------------------------


def test_expected_counts_agree_with_formula():
  for size, n in EXPECTED_PARAMS.items():
    assert _count_by_formula(glint_config.GLINT_SIZES[size]) == n, size


@pytest.mark.parametrize("size", sorted(EXPECTED_PARAMS))
def test_parameter_counts(size, paper_shapes):
  if size == "vit_small_r50":
    shapes = paper_shapes[1]
  else:
    shapes = glint.param_shapes(glint.create_model(_config(size)),
                                glint_config.GLINT_SIZES[size]["image_size"])
  assert glint.count_params(shapes) == EXPECTED_PARAMS[size]


def test_musiq_size_takes_the_released_musiq_blocks():
  # Shapes only: the released MUSIQ's blocks 0-9 and CLS fit the ViT of
  # "vit_musiq_r50" exactly (widths, heads, MLP 1152).
  model = glint.create_model(_config("vit_musiq_r50"))
  ours = checkpoint.flatten(glint.param_shapes(model, 224))
  musiq = mf.original_musiq_shapes()
  for k, shape in musiq.items():
    if k.startswith("Transformer/encoderblock_") and int(
        k.split("/")[1].split("_")[1]) < 10 or k == "Transformer/cls":
      target = "vgfe/" + k.replace("Transformer/cls", "cls")
      assert ours[target].shape == shape, k


def test_paper_size_tree(paper_shapes):
  c = glint_config.GLINT_SIZES["vit_small_r50"]
  model, shapes = paper_shapes
  shapes = checkpoint.flatten(shapes)
  blocks = {k.split("/")[2] for k in shapes if "encoderblock_" in k}
  assert blocks == {f"encoderblock_{i}" for i in range(10)}  # 10, 11 unused
  assert shapes["vgfe/Transformer/posembed_input/pos_embedding"].shape == (
      1, 197, 384)
  # Kernel sizes 4/2/1 bring strides 4/8/16 to the 14x14 grid.
  assert shapes["clfe/embed1/kernel"].shape == (4, 4, 256, 384)
  assert shapes["clfe/embed2/kernel"].shape == (2, 2, 512, 384)
  assert shapes["clfe/embed3/kernel"].shape == (1, 1, 1024, 384)
  assert {k.split("/")[1] for k in shapes if k.startswith("fusion/")} == {
      f"stage_{i}" for i in range(len(c["feature_layers"]))}
  assert shapes["fusion/stage_0/attention/query/kernel"].shape == (196, 196)
  out = jax.eval_shape(
      lambda p, x: model.apply({"params": p}, x),
      paper_shapes[1], jax.ShapeDtypeStruct((3, 224, 224, 3),
                                                         jnp.float32))
  assert out.shape == (3,)


def test_vit_returns_selected_blocks_and_builds_no_more():
  m = vit.VisionTransformer(patch_size=8, hidden_size=32, num_layers=6,
                            num_heads=2, mlp_dim=64, feature_layers=(3, 1))
  x = jax.ShapeDtypeStruct((2, 32, 48, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: m.init(jax.random.PRNGKey(0), x), x)
  blocks = set(variables["params"]["Transformer"]) - {"posembed_input"}
  assert blocks == {f"encoderblock_{i}" for i in range(4)}
  outs = jax.eval_shape(lambda v, x: m.apply(v, x), variables, x)
  assert [o.shape for o in outs] == [(2, 1 + 4 * 6, 32)] * 2
  bad = vit.VisionTransformer(num_layers=4, feature_layers=(4,))
  with pytest.raises(ValueError, match="feature_layers"):
    jax.eval_shape(lambda x: bad.init(jax.random.PRNGKey(0), x),
                   jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))


def test_vit_blocks_are_the_projects_encoder_blocks():
  m = vit.VisionTransformer(patch_size=8, hidden_size=16, num_layers=2,
                            num_heads=2, mlp_dim=32, feature_layers=(0,))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)),
                  jnp.float32)
  params = jax.jit(m.init)(jax.random.PRNGKey(0), x)["params"]
  block = transformer.Encoder1DBlock(mlp_dim=32, num_heads=2)

  @jax.jit
  def both(p, x):
    (out,) = m.apply({"params": p}, x)
    # Block 0's input rebuilt by hand, then the shared Encoder1DBlock.
    emb = jax.lax.conv_general_dilated(
        x, p["embedding"]["kernel"], (8, 8), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["embedding"]["bias"]
    tokens = jnp.concatenate([jnp.tile(p["cls"], [2, 1, 1]),
                              emb.reshape(2, 4, 16)], axis=1)
    tokens += p["Transformer"]["posembed_input"]["pos_embedding"]
    ref = block.apply({"params": p["Transformer"]["encoderblock_0"]}, tokens,
                      None, deterministic=True)
    return out, ref

  out, ref = both(params, x)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_clfe_stride_must_divide_patch():
  m = glint.LocalFeatureExtractor(patch_size=8, hidden_size=32,
                                  resnet_num_layers=11, resnet_num_stages=3,
                                  resnet_width=32)
  with pytest.raises(ValueError, match="does not divide the patch size"):
    jax.eval_shape(lambda x: m.init(jax.random.PRNGKey(0), x),
                   jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


# ---------------------------------------------------------------------------
# Fusion modules on inputs with known results.
# ---------------------------------------------------------------------------


def _apply(module, x, params=None, **kw):
  """Jitted init (unless params are given) + apply; returns (out, vars)."""
  if params is None:
    params = jax.jit(module.init)(jax.random.PRNGKey(1), x)["params"]
  out, state = jax.jit(lambda p, x: module.apply(
      {"params": p}, x, mutable=["intermediates"], **kw))(params, x)
  return out, params, state


def test_channel_attention_on_channel_constant_input_is_uniform():
  b, n, c = 2, 6, 5
  rng = np.random.default_rng(0)
  # Every channel carries the same spatial signal f(b, n).
  f = rng.normal(size=(b, n, 1)).astype(np.float32)
  x = jnp.asarray(np.repeat(f, c, axis=-1))
  out, params, state = _apply(glint_fusion.ChannelAttention(), x)
  (weights,) = state["intermediates"]["attention_weights"]
  np.testing.assert_allclose(weights, np.full((b, c, c), 1 / c), atol=1e-6)
  # Uniform attention over identical value rows returns that row:
  # out = x + LayerNorm_N(f W_v + b_v) for every channel.
  v = f[..., 0] @ np.asarray(params["value"]["kernel"]) + np.asarray(
      params["value"]["bias"])
  v = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True)
                                                 + 1e-6)
  v = v * np.asarray(params["norm"]["scale"]) + np.asarray(
      params["norm"]["bias"])
  np.testing.assert_allclose(out, x + v[..., None], rtol=1e-4, atol=1e-5)


def test_channel_attention_commutes_with_channel_permutations():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 7)),
                  jnp.float32)
  perm = np.random.default_rng(2).permutation(7)
  module = glint_fusion.ChannelAttention()
  out, params, state = _apply(module, x)
  out_perm, _, _ = _apply(module, x[..., perm], params)
  np.testing.assert_allclose(out_perm, out[..., perm], rtol=1e-5, atol=1e-5)
  (weights,) = state["intermediates"]["attention_weights"]
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  # Cosine logits are bounded by N^-1/2, so no channel dominates.
  assert float(weights.max()) < np.exp(2 / 3) / (np.exp(2 / 3) + 6 * 1.0)


def test_spatial_enhancement_with_zero_kernel_is_identity():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 12, 8)),
                  jnp.float32)
  module = glint_fusion.SpatialEnhancement(
      grid=(3, 4), kernel_init=jax.nn.initializers.zeros)
  out, params, _ = _apply(module, x)
  assert not np.any(np.asarray(params["conv"]["kernel"]))
  np.testing.assert_array_equal(out, x)


def test_spatial_enhancement_is_a_local_3x3_residual():
  h, w, c = 5, 6, 4
  module = glint_fusion.SpatialEnhancement(grid=(h, w))
  impulse = np.zeros((1, h, w, c), np.float32)
  impulse[0, 2, 3, 1] = 1.0
  x = jnp.asarray(impulse.reshape(1, h * w, c))
  out, params, _ = _apply(module, x)
  delta = np.asarray(out - x).reshape(h, w, c)
  # Only the impulse's 3x3 neighbourhood changes...
  outside = np.ones((h, w), bool)
  outside[1:4, 2:5] = False
  assert not np.any(delta[outside])
  # ...by the (flipped) kernel taps of input channel 1.
  kernel = np.asarray(params["conv"]["kernel"])
  np.testing.assert_allclose(delta[1:4, 2:5], kernel[::-1, ::-1, 1],
                             rtol=1e-5, atol=1e-6)
  # An identity centre tap doubles the map.
  eye = np.zeros_like(kernel)
  eye[1, 1] = np.eye(c)
  out2, _, _ = _apply(module, x, {"conv": {"kernel": jnp.asarray(eye)}})
  np.testing.assert_allclose(out2, 2 * x, atol=1e-6)


def test_progressive_fusion_has_one_stage_per_global_map():
  rng = np.random.default_rng(4)
  maps = [jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
          for _ in range(3)]
  module = glint_fusion.ProgressiveFusion(grid=(2, 3))
  params = jax.jit(module.init)(jax.random.PRNGKey(0), maps, maps[0])[
      "params"]
  assert sorted(params) == ["stage_0", "stage_1", "stage_2"]
  out = jax.jit(lambda p, g, l: module.apply({"params": p}, g, l))(
      params, maps, maps[0])
  assert out.shape == (2, 6, 8) and np.all(np.isfinite(out))
  with pytest.raises(ValueError, match="same shape"):
    glint_fusion.FusionStage(grid=(2, 3)).init(
        jax.random.PRNGKey(0), maps[0], maps[0][:, :, :4])


# ---------------------------------------------------------------------------
# Optimizer: schedule and freezing.
# ---------------------------------------------------------------------------


def test_cosine_schedule_is_torch_per_iteration():
  lr = trainer.cosine_annealing(1e-5, 30)
  np.testing.assert_allclose(
      [float(lr(s)) for s in (0, 15, 30, 60)], [1e-5, 5e-6, 0.0, 1e-5],
      atol=1e-12)


def test_frozen_mask_paper_setting(paper_shapes):
  config = glint_config.get_config()
  mask = checkpoint.flatten(glint.frozen_mask(paper_shapes[1], config))
  frozen = {k for k, v in mask.items() if v}
  assert {k for k in frozen if "encoderblock" not in k} == {
      "vgfe/embedding/kernel", "vgfe/embedding/bias"}
  assert {k.split("/")[2] for k in frozen if "encoderblock" in k} == {
      f"encoderblock_{i}" for i in range(5)}
  assert not mask["vgfe/cls"] and not mask["head/out/kernel"]


def test_optimizer_never_moves_frozen_params():
  # A small tree with GlintIQA's paths: the mask only reads the names.
  leaf = lambda: jnp.ones((3,))  # pylint: disable=g-long-lambda
  params = {
      "vgfe": {"embedding": {"kernel": leaf(), "bias": leaf()}, "cls": leaf(),
               "Transformer": {"posembed_input": {"pos_embedding": leaf()},
                               **{f"encoderblock_{i}": {"w": leaf()}
                                  for i in range(3)}}},
      "clfe": {"conv_root": {"kernel": leaf()}},
      "head": {"out": {"kernel": leaf()}}}
  config = _config(freeze_patch_embed=True, freeze_blocks_until=1,
                   weight_decay=1e-2)
  tx, _ = trainer.make_optimizer(
      config, crop_models.get_crop_model(config).frozen_mask(params))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  moved = {k: bool(np.any(np.asarray(u)))
           for k, u in checkpoint.flatten(updates).items()}
  assert {k for k, m in moved.items() if not m} == {
      "vgfe/embedding/kernel", "vgfe/embedding/bias",
      "vgfe/Transformer/encoderblock_0/w", "vgfe/Transformer/encoderblock_1/w"}


# ---------------------------------------------------------------------------
# MUSIQ -> ViT loading.
# ---------------------------------------------------------------------------


def test_load_vit_from_musiq_npz(tiny, tmp_path):
  _, _, params = tiny
  path = str(tmp_path / "musiq.npz")
  # Tiny GlintIQA builds 3 blocks; a 4-block MUSIQ of the same width.
  src = mf.write_original_npz(
      path, mf.original_musiq_shapes(**dict(mf.TINY, layers=4)))
  merged = checkpoint.load_vit_from_musiq(path, params, load_patch_resnet=True)
  flat, init = checkpoint.flatten(merged), checkpoint.flatten(params)
  assert flat.keys() == init.keys()
  for k, v in flat.items():
    if k.startswith("vgfe/Transformer/encoderblock_"):
      np.testing.assert_array_equal(v, src[k[len("vgfe/"):]])
    elif k == "vgfe/cls":
      np.testing.assert_array_equal(v, src["Transformer/cls"])
    elif k.startswith(("clfe/conv_root/", "clfe/gn_root/",
                       "clfe/block1/unit1/")):
      # GroupNorm arrays: (1, 1, 1, C) in the file, (C,) in linen.
      np.testing.assert_array_equal(v, mf.linen_layout(src)[k[len("clfe/"):]])
    else:  # Not transferable: kept from init.
      np.testing.assert_array_equal(v, init[k])
  without = checkpoint.flatten(checkpoint.load_vit_from_musiq(path, params))
  np.testing.assert_array_equal(without["clfe/conv_root/kernel"],
                                init["clfe/conv_root/kernel"])


def test_load_vit_from_musiq_errors(tiny):
  _, _, params = tiny
  wide = mf.random_params(mf.original_musiq_shapes(
      **dict(mf.TINY, hidden=64, layers=4)))
  with pytest.raises(checkpoint.CheckpointError, match="width 64"):
    checkpoint.load_vit_from_musiq(wide, params)
  shallow = mf.random_params(mf.original_musiq_shapes(**mf.TINY))  # 2 blocks
  with pytest.raises(checkpoint.CheckpointError, match="encoderblock_2"):
    checkpoint.load_vit_from_musiq(shallow, params)
  heads = mf.random_params(mf.original_musiq_shapes(
      **dict(mf.TINY, heads=4, layers=4)))
  with pytest.raises(checkpoint.CheckpointError, match="shape mismatches"):
    checkpoint.load_vit_from_musiq(heads, params)


# ---------------------------------------------------------------------------
# Config, gradients and training.
# ---------------------------------------------------------------------------


def test_config_fields():
  config = glint_config.get_config()
  assert config.model_name == "glint" and config.loss.kind == "l1"
  assert config.task == "crops" and config.stage == "finetune"
  assert config.model.size == "vit_small_r50"
  assert config.crop_size == 224 and config.eval.num_crops == 25
  assert config.optimizer.learning_rate == 1e-5
  assert config.optimizer.cosine_t_max == 30
  assert config.input.batch_size == 32
  local = glint_config.get_config("tiny")
  assert local.crop_size == glint_config.GLINT_SIZES["tiny"]["image_size"]
  assert local.dataset == "synthetic_iqa/tiny"
  with pytest.raises(ValueError, match="Unknown GlintIQA size"):
    glint_config.get_model_config("huge")


def test_score_crops_shape(tiny):
  _, model, params = tiny
  out = jax.eval_shape(functools.partial(glint.score_crops, model.apply),
                       params, jax.ShapeDtypeStruct((3, 4, 64, 64, 3),
                                                    jnp.float32))
  assert out.shape == (3,)


def _distorted_crops(num_contents=4, side=80, crop=64):
  """Pristine + blur/noise levels 1..5 of a few photos, level -> 1..5 label."""
  images, mos = [], []
  for c, name in enumerate(["astronaut", "coffee", "chelsea", "camera"][
      :num_contents]):
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
      img = np.repeat(img[..., None], 3, axis=-1)
    s = min(img.shape[:2])
    img = np.asarray(Image.fromarray(img[:s, :s, :3]).resize((side, side)))
    images.append(img)
    mos.append(5.0)
    for t, kind in enumerate(["gaussian_blur", "white_noise"]):
      for level in range(1, 6):
        images.append(distortions.apply_distortion(
            img, kind, level, np.random.default_rng([c, t, level])))
        mos.append(5.0 - 0.8 * level)
  return np.stack(images)[:, :crop, :crop], np.asarray(mos, np.float32)


def test_every_param_gets_a_gradient_and_the_loss_decreases(tiny):
  _, _, params = tiny
  config = _config(weight_decay=0.0, schedule="constant",
                   learning_rate=1e-3)
  task = tasks.get_task(config)
  # Adam's first update is -lr * g / (|g| + eps): a parameter moves iff its
  # gradient is non-zero, and stays finite iff the gradient is finite.
  tx, _ = trainer.make_optimizer(config, task.frozen_mask(params))
  step = jax.jit(functools.partial(trainer.train_step, task=task, tx=tx))
  images, mos = _distorted_crops()
  rng = np.random.default_rng(0)
  rngs = jax.random.PRNGKey(0)

  def batch():
    idx = rng.choice(len(mos), 8, replace=False)
    return {"image": images[idx], "label": mos[idx],
            "valid": np.ones(8, np.float32)}

  state = trainer.TrainState(step=jnp.zeros([], jnp.int32), params=params,
                             opt_state=tx.init(params))
  history, losses = [params], []
  for i in range(24):
    del i  # The step folds its counter into the key.
    state, metrics = step(state, batch(), rngs)
    history.append(state.params)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses

  flat = [checkpoint.flatten(s) for s in history[:3]]
  moved = lambda i, k: bool(np.any(np.asarray(flat[i][k]) != flat[0][k]))  # pylint: disable=g-long-lambda
  # BiT units start with gn3's scale at zero, which cuts the gradient of
  # their conv1/gn1/conv2/gn2/conv3 at step 0 (the branch is zero); exactly
  # those wait for step 1. Every other leaf moves on the first step.
  late = re.compile(r"clfe/block\d+/unit\d+/(conv1|gn1|conv2|gn2|conv3)/")
  for k in flat[0]:
    for i in (1, 2):
      assert np.all(np.isfinite(flat[i][k])), k
    assert moved(1, k) != bool(late.match(k)), k
    assert moved(2, k), f"{k} got no gradient in two steps"
