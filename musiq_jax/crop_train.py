r"""Crop-based trainer for fixed-input baselines (RankIQA): two stages.

    python -m musiq_jax.main --config=configs/rankiqa_pretrain.py --workdir=W1
    python -m musiq_jax.main --config=configs/rankiqa_finetune.py \
        --workdir=W2 --config.init.pretrained_workdir=W1

`config.stage` picks what is trained:
* "rank": RankIQA's ranking pre-training. Batches come from
  `rankiqa.RankedBatchGenerator` over the pristine photos of the synthetic
  dataset's *train* contents (so test contents are never seen), and the loss
  is the efficient-Siamese all-pairs hinge (`losses.get_loss("ranking")`).
  No MOS is used; the final params are exported.
* "finetune": MSE on MOS over random crops (+ horizontal flip) of the TFDS
  train split, starting from a pretrained workdir's backbone with a fresh
  head; the best step by validation SRCC is kept, as `train.py` does.

Both stages end like `train.train_and_evaluate`: every eval split is scored
with RankIQA's protocol (mean over `eval.num_crops` random crops per image)
and `WORKDIR/results.json` + `WORKDIR/predictions_<split>.npz` are written in
the same format (so `musiq_jax.compare` reads them), plus `WORKDIR/best.npz`
(params, `checkpoint.export_npz` layout) and its `best.json` sidecar.

No checkpoint/resume: the CPU-sized runs take minutes. Single process only.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

from absl import logging
from clu import metric_writers
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow as tf

from musiq_jax import checkpoint
from musiq_jax import crop_models
from musiq_jax import image_io
from musiq_jax import input_pipeline
from musiq_jax import losses
from musiq_jax import metrics as metrics_lib
from musiq_jax import rankiqa
from musiq_jax import train

STAGES = ("rank", "finetune")


# ----------------------------------------------------------------------------
# Model, optimizer, losses.
# ----------------------------------------------------------------------------
def make_model(config) -> crop_models.CropModel:
  """The crop baseline named by `config.model_name` (see crop_models.py)."""
  return crop_models.get_crop_model(config)


def cosine_annealing(learning_rate: float, t_max: int,
                     eta_min: float = 0.0) -> optax.Schedule:
  """torch's CosineAnnealingLR stepped per iteration (period 2 * t_max).

  Past t_max torch's closed form follows the cosine back up, so the rate
  oscillates; GlintIQA (t_max = 30 iterations) and LIQE rely on that.
  """
  def schedule(step):
    cos = jnp.cos(jnp.pi * jnp.asarray(step, jnp.float32) / t_max)
    return eta_min + (learning_rate - eta_min) * 0.5 * (1.0 + cos)
  return schedule


def make_optimizer(config, model: Optional[crop_models.CropModel] = None,
                   params: Any = None
                   ) -> tuple[optax.GradientTransformation, Callable]:
  """SGD/Adam(W) with the configured schedule; frozen params never move.

  Schedules: "step" (Caffe, RankIQA), "cosine" (decay to 0 over the run),
  "cosine_annealing" (torch's periodic CosineAnnealingLR, `cosine_t_max`
  and `eta_min`), "cosine_restart" (cosine decay restarted every
  `restart_period` steps, CLIP-IQA+'s CosineRestart), "constant".
  `weight_decay` is L2 added to the gradient (Caffe, torch Adam) except for
  "adamw", where it is decoupled. Parameters the model marks frozen
  (`CropModel.frozen`) get a zero update.
  """
  o = config.optimizer
  if o.schedule == "step":
    # Caffe "step": lr * gamma^floor(step / step_size).
    schedule = optax.exponential_decay(o.learning_rate, o.step_size, o.gamma,
                                       staircase=True)
  elif o.schedule == "cosine":
    schedule = optax.cosine_decay_schedule(o.learning_rate,
                                           max(config.num_train_steps, 1))
  elif o.schedule == "cosine_annealing":
    schedule = cosine_annealing(o.learning_rate, o.cosine_t_max,
                                o.get("eta_min", 0.0))
  elif o.schedule == "cosine_restart":
    period = int(o.restart_period)
    decay = optax.cosine_decay_schedule(o.learning_rate, period)
    schedule = lambda step: decay(jnp.mod(step, period))
  elif o.schedule == "constant":
    schedule = optax.constant_schedule(o.learning_rate)
  else:
    raise ValueError(f"Unknown schedule {o.schedule!r}; step, cosine, "
                     "cosine_annealing, cosine_restart or constant.")
  parts = []
  if o.get("grad_clip_norm"):
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  if o.get("weight_decay") and o.name != "adamw":
    # Caffe's weight_decay (and torch Adam's) adds wd * w to the gradient
    # (L2, before momentum).
    parts.append(optax.add_decayed_weights(o.weight_decay))
  if o.name == "sgd":
    parts.append(optax.sgd(schedule, momentum=o.get("momentum") or None))
  elif o.name == "adam":
    parts.append(optax.adam(schedule))
  elif o.name == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=o.get("weight_decay",
                                                          0.0)))
  else:
    raise ValueError(f"Unknown optimizer {o.name!r}; sgd, adam or adamw.")
  tx = optax.chain(*parts)
  if model is not None and model.has_frozen:
    labels = jax.tree.map(lambda f: "frozen" if f else "train",
                          model.frozen_mask(params))
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               labels)
  return tx, schedule


def make_loss(config, model: crop_models.CropModel):
  """loss(outputs, batch) -> (scalar, metrics) of the configured stage."""
  if config.stage == "rank":
    if model.multi_crop:
      raise ValueError(f"{model.name} has no scalar output to rank; the rank "
                       "stage trains small_cnn or glint.")
    fn = losses.get_loss("ranking", level_key="level", group_key="group",
                         weight_key="weight", **config.loss)
    return lambda out, batch: (fn(out, batch), {})
  return model.loss


def _train_step(params, opt_state, batch, rng, *, model, tx, loss_fn):
  def objective(p):
    out = model.apply(p, batch["image"], train=True, rng=rng)
    return loss_fn(out, batch)

  (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state,
          {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux})


def _predict(params, images, *, model):
  return model.score(model.apply(params, images, train=False))


# ----------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------
def _fit_crop(image: tf.Tensor, crop_size: int) -> tf.Tensor:
  """Upscales (keeping the aspect) only images smaller than the crop.

  RankIQA crops instead of resizing; a few synthetic contents have a shorter
  side below the crop at small max_side, and those alone are enlarged.
  """
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = tf.maximum(1.0, crop_size / tf.minimum(h, w))

  def enlarge():
    size = tf.cast(tf.math.ceil(tf.stack([h, w]) * scale), tf.int32)
    out = tf.image.resize(image, size, method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  return tf.cond(scale > 1.0, enlarge, lambda: image)


def _decoded_split(config, split: str, shuffle: bool):
  """(cached encoded records of one TFDS split, their decode function).

  Decoded records are {image uint8 [h, w, 3], label, image_id}, plus
  `distortion` (LIQE's class index) and `distortion_mask` when
  `config.input.distortion_key` names a ClassLabel feature of the dataset.
  """
  builder = input_pipeline.get_builder(config.dataset, config.data_dir)
  ds = builder.as_dataset(
      split, shuffle_files=shuffle,
      read_config=tfds_read_config(config.seed),
      decoders={"image": tfds_skip_decoding()})
  label_key = config.label_key
  keys = ["image", label_key, "image_id"]
  dist_key = config.input.get("distortion_key")
  if dist_key:
    feature = builder.info.features[dist_key]
    index, mask = crop_models.distortion_lookup(feature.names)
    index, mask = tf.constant(index), tf.constant(mask)
    keys.append(dist_key)

  def decode(e):
    out = {"image": _fit_crop(image_io.tf_decode(e["image"]),
                              config.crop_size),
           "label": tf.cast(e[label_key], tf.float32),
           "image_id": e["image_id"]}
    if dist_key:
      d = tf.cast(e[dist_key], tf.int32)
      out["distortion"] = tf.gather(index, d)
      out["distortion_mask"] = tf.gather(mask, d)
    return out

  # Cache the encoded records (small); decoding per epoch is cheap.
  ds = ds.map(lambda e: {k: e[k] for k in keys}).cache()
  return ds, decode


def tfds_read_config(seed):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)


def tfds_skip_decoding():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.decode.SkipDecoding()


def finetune_batches(config) -> Iterator[Dict[str, np.ndarray]]:
  """Endless shuffled batches of random crops + flips of the train split.

  With `input.crops_per_image` K > 1 (LIQE: 3) the images are
  [B, K, S, S, 3], K crops of the same photo. The crop windows and flips of
  the k-th example of the stream are stateless functions of (seed, k), so a
  run is reproducible.
  """
  ds, decode = _decoded_split(config, config.train_split, shuffle=True)
  s = config.crop_size
  k = int(config.input.get("crops_per_image", 1))
  ds = ds.shuffle(config.input.shuffle_buffer, seed=config.seed,
                  reshuffle_each_iteration=True).repeat()

  def one_crop(image, seed):
    image = tf.image.stateless_random_crop(image, [s, s, 3], seed=seed)
    if config.input.flip:
      image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return image

  def augment(i, e):
    e = decode(e)
    seed = tf.stack([tf.constant(config.seed, tf.int64), i])
    if k == 1:
      image = one_crop(e["image"], seed)
    else:
      image = tf.stack([
          one_crop(e["image"], seed + tf.constant([0, 1], tf.int64) * j * 7919)
          for j in range(k)])
    out = {"image": image, "label": e["label"],
           "valid": tf.constant(1.0, tf.float32)}
    for key in ("distortion", "distortion_mask"):
      if key in e:
        out[key] = e[key]
    return out

  ds = ds.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(config.input.batch_size, drop_remainder=True).prefetch(2)
  return ds.as_numpy_iterator()


def rank_batches(config) -> Iterator[Dict[str, np.ndarray]]:
  """RankIQA batches from the train contents' pristine photos."""
  r = config.rank
  images = rankiqa.synthetic_pristine_images(
      split=r.pristine_split, max_side=r.max_side, seed=r.split_seed)
  s = config.crop_size
  # Same rule as _fit_crop: enlarge only the photos smaller than the crop.
  images = [np.asarray(_fit_crop(tf.constant(im), s)) for im in images]
  gen = rankiqa.RankedBatchGenerator(images, rankiqa.RankBatchConfig(
      distortion_names=tuple(r.distortion_names),
      types_per_batch=r.types_per_batch,
      contents_per_type=r.contents_per_type, levels=tuple(r.levels),
      crop_size=s, group_by=r.group_by, seed=config.seed))
  logging.info("Rank batches of %d crops from %d pristine photos.",
               gen.config.batch_size, len(images))
  return gen.as_tf_dataset(prefetch=2).as_numpy_iterator()


# ----------------------------------------------------------------------------
# Evaluation: mean over random crops (RankIQA's protocol).
# ----------------------------------------------------------------------------
def eval_crops(config, image: np.ndarray, k: int) -> np.ndarray:
  """The evaluation crops of the k-th image of a split, [N, S, S, 3].

  `eval.sampler`: "random" (RankIQA's protocol: `eval.num_crops` uniform
  windows from rng (seed, k)) or "liqe" (LIQE's: shorter side resized to
  `eval.resize` when both sides reach it, then `eval.num_crops` evenly
  spaced windows of the stride-`eval.stride` unfold grid).
  """
  e = config.eval
  sampler = e.get("sampler", "random")
  if sampler == "random":
    return rankiqa.random_crops(image, config.crop_size, e.num_crops,
                                rng=np.random.default_rng([config.seed, k]))
  if sampler == "liqe":
    from musiq_jax.clip import preprocess  # pylint: disable=g-import-not-at-top
    op = preprocess.compose(
        preprocess.get_liqe_adaptive_resize(e.get("resize", 768),
                                            config.crop_size),
        preprocess.get_liqe_crops(e.num_crops, config.crop_size,
                                  e.get("stride", 32)))
    return np.asarray(op(tf.constant(image)))
  raise ValueError(f"eval.sampler={sampler!r}; use 'random' or 'liqe'.")


def evaluate(config, predict, params, split: str,
             predictions: Optional[Dict[str, list]] = None,
             multi_crop: bool = False) -> Dict[str, float]:
  """Metrics of one split: each image's score pools its eval crops.

  Scalar models score every crop and `eval.reduce` (mean/median) pools the
  scores; `multi_crop` models (the CLIP heads) take all crops of
  `eval.images_per_call` images in one call ([B, K, S, S, 3]; the last call
  is padded to B so nothing recompiles) and pool inside (LIQE averages
  logits). Batching does not change a score (tested).
  """
  ds, decode = _decoded_split(config, split, shuffle=False)
  e = config.eval
  reduce = {"mean": np.mean, "median": np.median}[e.reduce]
  per_call = max(1, int(e.get("images_per_call", 8)))
  preds, labels, ids, pending = [], [], [], []

  def flush():
    stack = np.stack(pending + [pending[-1]] * (per_call - len(pending)))
    out = np.asarray(predict(params, stack), np.float64)
    preds.extend(float(v) for v in out[:len(pending)])
    pending.clear()

  for k, ex in enumerate(ds.map(decode).as_numpy_iterator()):
    crops = eval_crops(config, ex["image"], k)
    if multi_crop:
      pending.append(crops)
      if len(pending) == per_call:
        flush()
    else:
      scores = np.asarray(predict(params, crops), np.float64)
      preds.append(float(reduce(scores)))
    labels.append(float(ex["label"]))
    iid = ex["image_id"]
    ids.append(iid.decode() if isinstance(iid, bytes) else str(iid))
  if pending:
    flush()
  if predictions is not None:
    predictions.update(prediction=preds, label=labels, image_id=ids)
  out = metrics_lib.all_metrics(preds, labels)
  out["num_images"] = len(preds)
  return out


# ----------------------------------------------------------------------------
# Params in and out.
# ----------------------------------------------------------------------------
def load_pretrained(config, init_params):
  """The pretrained workdir's best.npz merged into init (head re-initialised).

  Returns (params, source) with source None when nothing is configured.
  """
  path = config.init.pretrained_npz
  if config.init.pretrained_workdir:
    path = os.path.join(config.init.pretrained_workdir, "best.npz")
  if not path:
    return init_params, None
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: run the pretraining stage first (its workdir "
        "holds best.npz), or fix init.pretrained_workdir.")
  params = checkpoint.load_params(path, jax.device_get(init_params),
                                  dont_load=tuple(config.init.dont_load))
  return jax.tree.map(jnp.asarray, params), path


def export(config, params, workdir: str, info: Mapping[str, Any]) -> None:
  path = os.path.join(workdir, "best.npz")
  checkpoint.export_npz(jax.device_get(params), path)
  checkpoint.write_sidecar(path, {
      "trainer": "crop", "stage": config.stage,
      "model_name": config.model_name, "model": config.model.to_dict(),
      "crop_size": config.crop_size, **info})


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------
class _DwaState:
  """LIQE's Dynamic Weight Averaging of its task losses, on the host.

  On when `config.loss.dwa` is set and the model has several tasks; the
  weights change once per `steps_per_epoch` steps (the mean task losses of
  the last two epochs, `crop_models.dwa_weights`) and reach the jitted step
  as `batch["task_weights"]`, so nothing recompiles.
  """

  def __init__(self, config, model: crop_models.CropModel):
    loss = config.get("loss")
    self.enabled = bool(model.task_names) and bool(
        loss is not None and loss.get("dwa", False))
    self.tasks = [t for t in model.task_names
                  if t != "distortion" or config.input.get("distortion_key")]
    self.enabled = self.enabled and len(self.tasks) > 1
    if self.enabled:
      self.alpha = float(loss.dwa_alpha)
      self.temperature = float(loss.dwa_temperature)
      self.epoch = int(config.get("steps_per_epoch") or 100)
    self.history, self.current, self._w = [], [], None

  def weights(self) -> np.ndarray:
    if self._w is None:
      self._w = crop_models.dwa_weights(self.history, self.alpha,
                                        self.temperature) if self.history \
          else np.full(len(self.tasks), self.alpha / len(self.tasks),
                       np.float32)
    return self._w

  def update(self, step: int, out) -> None:
    self.current.append([out[t] for t in self.tasks])  # device arrays
    if step % self.epoch == 0:
      mean = np.mean(np.asarray(jax.device_get(self.current)), axis=0)
      self.history.append(mean.tolist())
      self.current, self._w = [], None


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Dict[str, Any]:
  """Trains one stage, evaluates with crops, writes results.json."""
  if config.stage not in STAGES:
    raise ValueError(f"stage={config.stage!r}; use one of {STAGES}.")
  os.makedirs(workdir, exist_ok=True)
  train.ensure_dataset(config)
  writer = metric_writers.create_default_writer(workdir)
  model = make_model(config)
  loss_fn = make_loss(config, model)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  params = model.init(init_rng, config.crop_size, config)
  params, source = load_pretrained(config, params)
  how = f"initialised from {source}" if source else "initialised from scratch"
  print(f"[crop_train] {model.name}, stage {config.stage}: {how}",
        flush=True)
  tx, schedule = make_optimizer(config, model, params)
  opt_state = tx.init(params)
  dwa = _DwaState(config, model) if config.stage == "finetune" else None
  step_fn = jax.jit(functools.partial(_train_step, model=model, tx=tx,
                                      loss_fn=loss_fn), donate_argnums=(0, 1))
  predict = jax.jit(functools.partial(_predict, model=model))
  batches = (rank_batches(config) if config.stage == "rank"
             else finetune_batches(config))

  meta = {"best_srcc": -math.inf, "best_step": -1}
  # Ranking pre-training uses no MOS at all, so it keeps its last step
  # instead of picking one by validation SRCC.
  select = config.stage == "finetune" and config.num_train_steps > 0
  total = config.num_train_steps
  start = time.time()
  for step in range(1, total + 1):
    batch = next(batches)
    batch = {k: v for k, v in batch.items()
             if k in ("image", "label", "valid", "level", "group", "weight",
                      "distortion", "distortion_mask")}
    if dwa is not None and dwa.enabled:
      batch["task_weights"] = dwa.weights()
    params, opt_state, out = step_fn(params, opt_state, batch,
                                     jax.random.fold_in(step_rng, step))
    if dwa is not None and dwa.enabled:
      dwa.update(step, out)
    if step % config.log_every_steps == 0 or step == total:
      out = jax.device_get(out)
      if not np.isfinite(out["loss"]):
        raise RuntimeError(f"Loss is {out['loss']} at step {step}: training "
                           "diverged (lower the learning rate).")
      writer.write_scalars(step, {
          **{f"train_{k}": float(v) for k, v in out.items()
             if k != "grad_norm"},
          "grad_norm": float(out["grad_norm"]),
          "learning_rate": float(schedule(step - 1)),
          "steps_per_sec": step / (time.time() - start)})
    if select and (step % config.eval_every_steps == 0 or step == total):
      val = evaluate(config, predict, params, config.val_split,
                     multi_crop=model.multi_crop)
      writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
      if val["srcc"] > meta["best_srcc"]:
        meta = {"best_srcc": val["srcc"], "best_step": step}
        export(config, params, workdir, meta)
  if not select:
    meta = {"best_srcc": None, "best_step": total}
    export(config, params, workdir, meta)
  else:
    params = jax.tree.map(jnp.asarray, checkpoint.load_params(
        os.path.join(workdir, "best.npz"), jax.device_get(params)))

  results = {}
  for split in config.eval_splits:
    preds = {}
    results[split] = evaluate(config, predict, params, split, preds,
                              multi_crop=model.multi_crop)
    train.write_predictions(workdir, split, preds)
  summary = {"step": total, "best_step": meta["best_step"],
             "splits": results,
             "model": f"{model.name}/{config.stage}",
             "num_params": train.count_params(params)}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  writer.write_scalars(total, {f"{sp}_{k}": v for sp, m in results.items()
                               for k, v in m.items()})
  writer.flush()
  print(f"[crop_train] {summary['model']} (step {meta['best_step']}, "
        f"{config.eval.num_crops} crops/image):\n" +
        train.format_results(results), flush=True)
  return summary
