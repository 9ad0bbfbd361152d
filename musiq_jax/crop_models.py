"""The crop baselines behind one small interface (used by `tasks.CropTask`).

`get_crop_model(config)` turns `config.model_name` into a `CropModel`: the
Flax module plus what the crop trainer needs to know about it (how crops are
normalised, extra inputs such as prompt token ids, the fine-tuning loss, the
read-out to one score per image, which parameters are frozen, how
model-specific pretrained weights are loaded). The trainer itself (data,
optimizer, loop, evaluation, results) is shared, so every crop baseline is
trained and scored by the same protocol as the others.

Registered names:
* "small_cnn": RankIQA's shallow nets (`models/small_cnn.py`); MSE or L1 on
  MOS (`config.loss`), and the ranking loss in the "rank" stage.
* "glint": the GlintIQA-style hybrid (`models/glint.py`); L1 on MOS,
  optional MUSIQ transformer blocks as the ViT's init (`init.musiq_npz`),
  the paper's frozen ViT layers (`optimizer.freeze_*`).
* "musiq": MUSIQ itself (`models/musiq.py`) on crops: each crop becomes
  multi-scale patch tokens inside the jitted step (`MusiqCrops`, the
  scorer's device preprocessing), so RankIQA's ranking stage can pre-train
  MUSIQ (RankIQA, Liu et al. ICCV 2017, Sec. 3: the ranking idea for any
  network); its params are a `musiq.Model`'s, so the MUSIQ task loads them.
* "liqe", "clipiqa", "clip_linear": the CLIP heads (`clip/heads.py`) on
  CLIP-normalised crops, with prompt ids tokenized from
  `init.tokenizer_dir` and CLIP weights from `init.clip_weights`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from musiq_jax import checkpoint
from musiq_jax import losses

Array = jax.Array
# loss(outputs, batch) -> (scalar, dict of scalar metrics)
LossFn = Callable[[Any, Dict[str, Array]], Tuple[Array, Dict[str, Array]]]

# The synthetic dataset's distortion types in LIQE's 11 distortion classes
# (`clip.prompts.LIQE_DISTORTIONS`); other names (and "pristine") carry no
# distortion label.
LIQE_DISTORTION_OF = {
    "gaussian_blur": "blur",
    "white_noise": "noise",
    "jpeg": "jpeg compression",
    "jpeg2000": "jpeg2000 compression",
    "contrast_change": "contrast",
    "color_cast": "color",
    "impulse_noise": "noise",
    "pixelate": "spatial",  # KADID-10k files pixelation under spatial.
}


def uint8_to_symmetric(images: Array) -> Array:
  """uint8 [0, 255] -> float [-1, 1], the SmallCNN/MUSIQ/GlintIQA input."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def uint8_to_clip(images: Array) -> Array:
  """uint8 [0, 255] -> CLIP's input: [0, 1] minus CLIP_MEAN over CLIP_STD."""
  from musiq_jax.clip import preprocess  # pylint: disable=g-import-not-at-top
  mean = jnp.asarray(preprocess.CLIP_MEAN, jnp.float32)
  std = jnp.asarray(preprocess.CLIP_STD, jnp.float32)
  return (jnp.asarray(images, jnp.float32) / 255.0 - mean) / std


@dataclasses.dataclass(frozen=True)
class CropModel:
  """A crop baseline as the crop trainer sees it.

  Attributes:
    name: model name for results.json and the comparison table.
    module: the Flax module.
    normalize: uint8 crops -> the module's input.
    loss: fine-tuning loss on (outputs, batch); the batch holds `label`
      (MOS), `valid`, and `distortion`/`distortion_mask` where labelled.
    score: outputs -> one score per image, on the dataset's MOS scale.
    extra_inputs: positional inputs after the images (prompt token ids).
    takes_train: the module's __call__ has a `train` keyword (dropout).
    multi_crop: the module takes [B, K, S, S, 3] and pools its K crops
      itself (LIQE averages logits over crops); evaluation then feeds all
      of an image's crops in one call.
    frozen: regexes of '/'-joined parameter paths that never move.
    frozen_fn: or a function params -> bool tree (True = frozen), which
      wins over `frozen`.
    task_names: the loss's per-task metric names, for loss weighting (DWA).
    init_hook: (params, config) -> params, loads model-specific weights.
  """
  name: str
  module: nn.Module
  normalize: Callable[[Array], Array]
  loss: LossFn
  score: Callable[[Any], Array]
  extra_inputs: Tuple[Any, ...] = ()
  takes_train: bool = True
  multi_crop: bool = False
  frozen: Tuple[str, ...] = ()
  frozen_fn: Optional[Callable[[Any], Any]] = None
  task_names: Tuple[str, ...] = ()
  init_hook: Optional[Callable[[Any, ml_collections.ConfigDict], Any]] = None

  def apply(self, params, images, *, train: bool = False,
            rng: Optional[Array] = None):
    kwargs = {"train": train} if self.takes_train else {}
    rngs = {"dropout": rng} if rng is not None else {}
    return self.module.apply({"params": params}, self.normalize(images),
                             *self.extra_inputs, rngs=rngs, **kwargs)

  def init(self, rng: Array, crop_size: int,
           config: ml_collections.ConfigDict):
    shape = (1, 1, crop_size, crop_size, 3) if self.multi_crop else (
        1, crop_size, crop_size, 3)
    images = jnp.zeros(shape, jnp.uint8)
    kwargs = {"train": False} if self.takes_train else {}
    params = jax.jit(lambda r: self.module.init(
        r, self.normalize(images), *self.extra_inputs, **kwargs))(rng)
    params = params["params"]
    if self.init_hook is not None:
      params = self.init_hook(params, config)
    return params

  @property
  def has_frozen(self) -> bool:
    return bool(self.frozen) or self.frozen_fn is not None

  def frozen_mask(self, params) -> Any:
    """A bool tree like `params`: True where the parameter is frozen."""
    if self.frozen_fn is not None:
      return self.frozen_fn(params)
    patterns = [re.compile(p) for p in self.frozen]
    flat = checkpoint.flatten(params)
    return checkpoint.unflatten(
        {k: any(p.search(k) for p in patterns) for k in flat})


def _regression_loss(config) -> LossFn:
  kwargs = dict(config.loss) if config.get("loss") else {}
  fn = losses.get_loss("regression", mos_key="label", weight_key="valid",
                       **kwargs)
  return lambda out, batch: (fn(out, batch), {})


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _small_cnn(config) -> CropModel:
  from musiq_jax.models import small_cnn  # pylint: disable=g-import-not-at-top
  m = config.model
  module = small_cnn.get_model(
      m.variant, num_outputs=1, dropout_rate=m.dropout_rate,
      zero_init_head=m.zero_init_head,
      dtype=_DTYPES[config.get("dtype", "float32")])
  return CropModel(name=f"small_cnn/{m.variant}", module=module,
                   normalize=uint8_to_symmetric, loss=_regression_loss(config),
                   score=losses.get_score_fn("regression"))


def _glint(config) -> CropModel:
  from musiq_jax.models import glint  # pylint: disable=g-import-not-at-top
  module = glint.create_model(config)

  def init_hook(params, cfg):
    if cfg.init.get("musiq_npz"):
      params = checkpoint.load_vit_from_musiq(
          cfg.init.musiq_npz, jax.device_get(params),
          load_patch_resnet=bool(cfg.init.get("load_patch_resnet", False)))
      params = jax.tree.map(jnp.asarray, params)
    return params

  # The paper's frozen patch embedding and first ViT blocks
  # (`optimizer.freeze_patch_embed`, `optimizer.freeze_blocks_until`).
  return CropModel(name=f"glint/{config.model.size}", module=module,
                   normalize=uint8_to_symmetric, loss=_regression_loss(config),
                   score=lambda out: out,
                   frozen_fn=lambda p: glint.frozen_mask(p, config),
                   init_hook=init_hook)


class MusiqCrops(nn.Module):
  """MUSIQ on uint8 crops [B, S, S, 3] (or [B, K, S, S, 3]) -> [B, classes].

  Each crop is turned into its multi-scale tokens on the device
  (`preprocessing.tokens_from_canvas` with jax.numpy, as the scorer does:
  Gaussian ARP resizes for `pp.longer_side_lengths`, plus the native scale),
  then `musiq.Model` runs on them. Every crop has the same size, so one
  plan serves the batch. The params are exactly `musiq.Model(**model)`'s
  (the model is applied as this module's own scope), so a ranking-stage
  export loads into the MUSIQ task and into `load_scorer`.
  """
  model: Dict[str, Any]  # musiq.Model's fields.
  pp: Any  # preprocessing.PreprocessConfig of the tokens.
  crop_size: int

  def setup(self):
    from musiq_jax.models import musiq  # pylint: disable=g-import-not-at-top
    self.musiq = musiq.Model(**self.model)
    # In this module's own scope: the params tree is musiq.Model's.
    nn.share_scope(self, self.musiq)

  def tokens(self, crops):
    """uint8 [..., S, S, 3] -> token features [..., T, ...] (jittable)."""
    from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
    s, cfg = self.crop_size, self.pp
    plan = preprocessing.make_plan(s, s, cfg)
    ch = preprocessing.grid_count(s, cfg.patch_stride)
    size = preprocessing.canvas_size((ch, ch), cfg)
    top, left = int(plan["box"][0]), int(plan["box"][1])
    lead = crops.shape[:-3]
    flat = jnp.reshape(crops, (-1, s, s, 3))
    canvas = jnp.pad(flat, ((0, 0), (top, size[0] - top - s),
                            (left, size[1] - left - s), (0, 0)))
    one = lambda c: preprocessing.tokens_from_canvas(c, plan, cfg, (ch, ch),
                                                     jnp)
    feats = jax.vmap(one)(canvas)
    return {k: jnp.reshape(v, lead + v.shape[1:]) for k, v in feats.items()}

  def __call__(self, crops, train: bool = False):
    return self.musiq(self.tokens(crops), train=train)


def _musiq(config) -> CropModel:
  from musiq_jax import preprocessing  # pylint: disable=g-import-not-at-top
  pp = preprocessing.PreprocessConfig.from_dict(dict(config.pp))
  if (pp.max_seq_len_from_original_res is not None and
      0 <= pp.max_seq_len_from_original_res <
      preprocessing.num_patches(config.crop_size, config.crop_size,
                                pp.patch_stride)):
    raise ValueError("model_name='musiq' keeps every native patch of a crop: "
                     "set pp.max_seq_len_from_original_res=-1.")
  model = dict(config.model)
  model.setdefault("num_scales", pp.num_scales)
  model["dtype"] = _DTYPES[config.get("dtype", "float32")]
  module = MusiqCrops(model=model, pp=pp, crop_size=int(config.crop_size))
  return CropModel(name=f"musiq/{config.get('model_size', 'custom')}",
                   module=module, normalize=lambda images: images,
                   loss=_regression_loss(config),
                   score=losses.get_score_fn("regression"))


def _mos_unit(config):
  """(to_unit, from_unit) maps between the MOS range and [0, 1]."""
  lo, hi = (float(v) for v in config.mos_range)
  return (lambda mos: (mos - lo) / (hi - lo)), (lambda u: lo + (hi - lo) * u)


def liqe_loss_fn(lc: ml_collections.ConfigDict) -> LossFn:
  """LIQE's multitask loss on a crop batch (`losses.liqe_loss`, the fidelity head).

  The batch's `label` is the MOS; `distortion`/`distortion_mask` feed the
  distortion task when present. `task_weights` [K] (DWA, computed on the
  host), when present, multiply the configured weights of the tasks in
  order quality, scene, distortion (those present).
  """
  clip_losses = losses  # LIQE's loss lives with the fidelity head.
  base = {"quality": lc.quality_weight, "scene": lc.scene_weight,
          "distortion": lc.distortion_weight}

  def loss(out, batch):
    b = {"mos": batch["label"]}
    if "distortion" in batch:
      b["distortion"] = batch["distortion"]
      b["distortion_mask"] = batch["distortion_mask"] * batch["valid"]
    total, metrics = clip_losses.liqe_loss(
        out, b, quality_weight=lc.quality_weight,
        scene_weight=lc.scene_weight,
        distortion_weight=lc.distortion_weight, aux_loss=lc.aux_loss)
    w = batch.get("task_weights")
    if w is not None:
      tasks = [t for t in ("quality", "scene", "distortion") if t in metrics]
      total = sum(w[i] * base[t] * metrics[t] for i, t in enumerate(tasks))
    return total, {k: v for k, v in metrics.items() if k != "score"}

  return loss


def _clip_head(config) -> CropModel:
  from musiq_jax.clip import factory  # pylint: disable=g-import-not-at-top
  from musiq_jax.clip import heads  # pylint: disable=g-import-not-at-top
  name = config.model.name
  if name != config.model_name:
    raise ValueError(f"model_name={config.model_name!r} but model.name="
                     f"{config.model.name!r}; they must agree.")
  module = factory.build_model(config.model)
  ids = factory.prompt_ids(config)
  extra = () if ids is None else (jnp.asarray(ids),)
  to_unit, from_unit = _mos_unit(config)
  lo, hi = (float(v) for v in config.mos_range)

  def init_hook(params, cfg):
    if cfg.init.get("clip_weights"):
      from musiq_jax.clip import weights  # pylint: disable=g-import-not-at-top
      clip_params = weights.load_clip_params(cfg.init.clip_weights,
                                             module.spec)
      params = weights.merge_clip_params(jax.device_get(params), clip_params)
      params = jax.tree.map(jnp.asarray, params)
    return params

  if name == "liqe":
    loss = liqe_loss_fn(config.loss)
    # LIQE's score is the expected quality level 1..5; mapped linearly onto
    # the dataset's MOS range so RMSE is on the MOS scale.
    score = lambda out: lo + (hi - lo) * (
        heads.liqe_marginals(out)["score"] - 1.0) / 4.0
    tasks = ("quality", "distortion")
    return CropModel(name=f"liqe/{config.model.clip}", module=module,
                     normalize=uint8_to_clip, loss=loss, score=score,
                     extra_inputs=extra, takes_train=False, multi_crop=True,
                     frozen=tuple(config.optimizer.get("frozen", ())),
                     task_names=tasks, init_hook=init_hook)
  if name == "clipiqa":
    def loss(out, batch):
      score = heads.clipiqa_score(out)
      w = batch["valid"]
      mse = jnp.sum(w * (score - to_unit(batch["label"]))**2) / jnp.maximum(
          jnp.sum(w), 1.0)
      return mse, {"mse": mse}

    return CropModel(name=f"clipiqa/{config.model.clip}", module=module,
                     normalize=uint8_to_clip, loss=loss,
                     score=lambda out: from_unit(heads.clipiqa_score(out)),
                     extra_inputs=extra, takes_train=False, multi_crop=True,
                     frozen=tuple(config.optimizer.get("frozen", ())),
                     init_hook=init_hook)
  if name == "clip_linear":
    reg = losses.get_loss("regression", mos_key="label", weight_key="valid",
                          kind="mse")
    return CropModel(name=f"clip_linear/{config.model.clip}", module=module,
                     normalize=uint8_to_clip,
                     loss=lambda out, batch: (reg(out, batch), {}),
                     score=lambda out: out, extra_inputs=extra,
                     takes_train=False, multi_crop=True,
                     frozen=tuple(config.optimizer.get("frozen", ())),
                     init_hook=init_hook)
  raise ValueError(f"Unknown CLIP head {name!r}.")


_REGISTRY = {
    "small_cnn": _small_cnn,
    "glint": _glint,
    "musiq": _musiq,
    "liqe": _clip_head,
    "clipiqa": _clip_head,
    "clip_linear": _clip_head,
}
NAMES = tuple(_REGISTRY)


def get_crop_model(config: ml_collections.ConfigDict) -> CropModel:
  """The `CropModel` of `config.model_name`."""
  if config.model_name not in _REGISTRY:
    raise ValueError(f"Unknown crop model {config.model_name!r}; "
                     f"supported: {list(NAMES)}. (MUSIQ itself trains with "
                     "task \"musiq\" on multi-scale patch tokens.)")
  return _REGISTRY[config.model_name](config)


def distortion_lookup(names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
  """Dataset distortion class ids -> (LIQE distortion index, has-label mask)."""
  from musiq_jax.clip import prompts  # pylint: disable=g-import-not-at-top
  index = np.zeros(len(names), np.int32)
  mask = np.zeros(len(names), np.float32)
  for i, n in enumerate(names):
    if n in LIQE_DISTORTION_OF:
      index[i] = prompts.LIQE_DISTORTIONS.index(LIQE_DISTORTION_OF[n])
      mask[i] = 1.0
  return index, mask


def dwa_weights(history: Sequence[Sequence[float]], alpha: float,
                temperature: float) -> np.ndarray:
  """Dynamic Weight Averaging (Liu et al. 2019) as LIQE uses it.

  w_k = alpha * softmax_k(r_k / T) with r_k = L_k(e-1) / L_k(e-2), the ratio
  of task k's mean loss over the last two epochs; equal weights
  (alpha / K each) until two epochs are known.

  Args:
    history: per-epoch mean task losses, oldest first, each of length K.
    alpha: total weight (LIQE: 1.5).
    temperature: softmax temperature T (LIQE: 2.0).

  Returns:
    [K] float32 weights summing to alpha.
  """
  if len(history) < 2:
    k = len(history[-1]) if history else 1
    return np.full(k, alpha / k, np.float32)
  prev, last = np.asarray(history[-2], np.float64), np.asarray(history[-1],
                                                               np.float64)
  r = last / np.maximum(prev, 1e-12) / temperature
  e = np.exp(r - r.max())
  return (alpha * e / e.sum()).astype(np.float32)
