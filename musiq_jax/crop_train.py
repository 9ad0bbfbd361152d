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
from musiq_jax import image_io
from musiq_jax import input_pipeline
from musiq_jax import losses
from musiq_jax import metrics as metrics_lib
from musiq_jax import rankiqa
from musiq_jax import train
from musiq_jax.models import small_cnn

STAGES = ("rank", "finetune")


# ----------------------------------------------------------------------------
# Model, optimizer, losses.
# ----------------------------------------------------------------------------
def make_model(config):
  """The backbone + scalar head named by `config.model_name`."""
  if config.model_name == "small_cnn":
    m = config.model
    return small_cnn.get_model(
        m.variant, num_outputs=1, dropout_rate=m.dropout_rate,
        zero_init_head=m.zero_init_head,
        dtype={"float32": jnp.float32, "bfloat16": jnp.bfloat16}[
            config.dtype])
  # MUSIQ as a RankIQA backbone needs crops turned into multi-scale patch
  # tokens; it is documented in configs/rankiqa_pretrain.py as future work.
  raise ValueError(f"Unknown crop_train model {config.model_name!r}; "
                   "supported: 'small_cnn'.")


def make_optimizer(config) -> tuple[optax.GradientTransformation, Callable]:
  """SGD/Adam with RankIQA's step schedule (or a constant/cosine one)."""
  o = config.optimizer
  if o.schedule == "step":
    # Caffe "step": lr * gamma^floor(step / step_size).
    schedule = optax.exponential_decay(o.learning_rate, o.step_size, o.gamma,
                                       staircase=True)
  elif o.schedule == "cosine":
    schedule = optax.cosine_decay_schedule(o.learning_rate,
                                           max(config.num_train_steps, 1))
  elif o.schedule == "constant":
    schedule = optax.constant_schedule(o.learning_rate)
  else:
    raise ValueError(f"Unknown schedule {o.schedule!r}; step, cosine or "
                     "constant.")
  parts = []
  if o.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  if o.weight_decay:
    # Caffe's weight_decay adds wd * w to the gradient (L2, before momentum).
    parts.append(optax.add_decayed_weights(o.weight_decay))
  if o.name == "sgd":
    parts.append(optax.sgd(schedule, momentum=o.momentum or None))
  elif o.name == "adam":
    parts.append(optax.adam(schedule))
  else:
    raise ValueError(f"Unknown optimizer {o.name!r}; sgd or adam.")
  return optax.chain(*parts), schedule


def make_loss(config):
  if config.stage == "rank":
    return losses.get_loss("ranking", level_key="level", group_key="group",
                           weight_key="weight", **config.loss)
  return losses.get_loss("regression", mos_key="label", weight_key="valid",
                         **config.loss)


def to_float(images):
  """uint8 [0, 255] -> float [-1, 1], the SmallCNN/MUSIQ convention."""
  return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


def _train_step(params, opt_state, batch, rng, *, model, tx, loss_fn):
  def objective(p):
    out = model.apply({"params": p}, to_float(batch["image"]), train=True,
                      rngs={"dropout": rng})
    return loss_fn(out, batch)

  loss, grads = jax.value_and_grad(objective)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state,
          {"loss": loss, "grad_norm": optax.global_norm(grads)})


def _predict(params, images, *, model):
  out = model.apply({"params": params}, to_float(images), train=False)
  return losses.get_score_fn("regression")(out)


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

  Decoded records are {image uint8 [h, w, 3], label, image_id}.
  """
  builder = input_pipeline.get_builder(config.dataset, config.data_dir)
  ds = builder.as_dataset(
      split, shuffle_files=shuffle,
      read_config=tfds_read_config(config.seed),
      decoders={"image": tfds_skip_decoding()})
  label_key = config.label_key

  def decode(e):
    return {"image": _fit_crop(image_io.tf_decode(e["image"]),
                               config.crop_size),
            "label": tf.cast(e[label_key], tf.float32),
            "image_id": e["image_id"]}

  # Cache the encoded records (small); decoding per epoch is cheap.
  ds = ds.map(lambda e: {"image": e["image"], label_key: e[label_key],
                         "image_id": e["image_id"]}).cache()
  return ds, decode


def tfds_read_config(seed):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)


def tfds_skip_decoding():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.decode.SkipDecoding()


def finetune_batches(config) -> Iterator[Dict[str, np.ndarray]]:
  """Endless shuffled batches of random crops + flips of the train split.

  The crop window and flip of the k-th example of the stream are stateless
  functions of (seed, k), so a run is reproducible.
  """
  ds, decode = _decoded_split(config, config.train_split, shuffle=True)
  s = config.crop_size
  ds = ds.shuffle(config.input.shuffle_buffer, seed=config.seed,
                  reshuffle_each_iteration=True).repeat()

  def augment(i, e):
    e = decode(e)
    seed = tf.stack([tf.constant(config.seed, tf.int64), i])
    image = tf.image.stateless_random_crop(e["image"], [s, s, 3], seed=seed)
    if config.input.flip:
      image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return {"image": image, "label": e["label"],
            "valid": tf.constant(1.0, tf.float32)}

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
def evaluate(config, predict, params, split: str,
             predictions: Optional[Dict[str, list]] = None
             ) -> Dict[str, float]:
  """Metrics of one split; image k's crops come from rng (seed, k)."""
  ds, decode = _decoded_split(config, split, shuffle=False)
  e = config.eval
  reduce = {"mean": np.mean, "median": np.median}[e.reduce]
  preds, labels, ids = [], [], []
  for k, ex in enumerate(ds.map(decode).as_numpy_iterator()):
    crops = rankiqa.random_crops(ex["image"], config.crop_size, e.num_crops,
                                 rng=np.random.default_rng([config.seed, k]))
    scores = np.asarray(predict(params, crops), np.float64)
    preds.append(float(reduce(scores)))
    labels.append(float(ex["label"]))
    iid = ex["image_id"]
    ids.append(iid.decode() if isinstance(iid, bytes) else str(iid))
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
def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Dict[str, Any]:
  """Trains one stage, evaluates with crops, writes results.json."""
  if config.stage not in STAGES:
    raise ValueError(f"stage={config.stage!r}; use one of {STAGES}.")
  os.makedirs(workdir, exist_ok=True)
  train.ensure_dataset(config)
  writer = metric_writers.create_default_writer(workdir)
  model = make_model(config)
  tx, schedule = make_optimizer(config)
  loss_fn = make_loss(config)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  s = config.crop_size
  params = model.init(init_rng, jnp.zeros([1, s, s, 3]))["params"]
  params, source = load_pretrained(config, params)
  how = f"initialised from {source}" if source else "initialised from scratch"
  print(f"[crop_train] stage {config.stage}: {how}", flush=True)
  opt_state = tx.init(params)
  step_fn = jax.jit(functools.partial(_train_step, model=model, tx=tx,
                                      loss_fn=loss_fn), donate_argnums=(0, 1))
  predict = jax.jit(functools.partial(_predict, model=model))
  batches = (rank_batches(config) if config.stage == "rank"
             else finetune_batches(config))

  meta = {"best_srcc": -math.inf, "best_step": -1}
  # Ranking pre-training uses no MOS at all, so it keeps its last step
  # instead of picking one by validation SRCC.
  select = config.stage == "finetune"
  total = config.num_train_steps
  start = time.time()
  for step in range(1, total + 1):
    batch = next(batches)
    batch = {k: v for k, v in batch.items()
             if k in ("image", "label", "valid", "level", "group", "weight")}
    params, opt_state, out = step_fn(params, opt_state, batch,
                                     jax.random.fold_in(step_rng, step))
    if step % config.log_every_steps == 0 or step == total:
      out = jax.device_get(out)
      if not np.isfinite(out["loss"]):
        raise RuntimeError(f"Loss is {out['loss']} at step {step}: training "
                           "diverged (lower the learning rate).")
      writer.write_scalars(step, {
          "train_loss": float(out["loss"]),
          "grad_norm": float(out["grad_norm"]),
          "learning_rate": float(schedule(step - 1)),
          "steps_per_sec": step / (time.time() - start)})
    if select and (step % config.eval_every_steps == 0 or step == total):
      val = evaluate(config, predict, params, config.val_split)
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
    results[split] = evaluate(config, predict, params, split, preds)
    train.write_predictions(workdir, split, preds)
  summary = {"step": total, "best_step": meta["best_step"],
             "splits": results,
             "model": (f"{config.model_name}/{config.model.variant}/"
                       f"{config.stage}"),
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
