"""Training and evaluation of MUSIQ: `train_and_evaluate(config, workdir)`.

One generic loop (big_vision / flax-examples style):
* a `jax.sharding.Mesh` ('data', 'model'); params replicated unless a config
  rule shards them on 'model'; batches sharded on 'data'; the jitted step has
  explicit in/out shardings and donates the state;
* optax SGD/Adam(W) with warmup + cosine decay, global-norm clipping and
  gradient accumulation (`optax.MultiSteps`);
* optionally an exponential moving average of the weights
  (`config.ema_decay`), carried in the state and checkpointed, which is what
  validation, best-checkpoint selection and export then use;
* orbax checkpoints (state + step + best-so-far); on start: resume if the
  workdir has a checkpoint, else the configured pretrained `.npz`, else from
  scratch. The input stream is deterministic given the seed, so a resumed
  run skips the batches already seen and sees the same data;
* periodic validation, best-by-SRCC exported as `WORKDIR/best.npz` (the
  original layout, with `best.json` holding the model and preprocessing
  config) so `python -m musiq_jax.predict --workdir=WORKDIR` scores with it;
* final evaluation of the best model on every eval split ->
  `WORKDIR/results.json` and a console table.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from musiq_jax import checkpoint
from musiq_jax import input_pipeline
from musiq_jax import losses
from musiq_jax import metrics as metrics_lib
from musiq_jax import preprocessing
from musiq_jax.models import musiq

DEVICE_KEYS = ("patches", "spatial", "scale", "mask", "label", "valid",
               "distribution")


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  opt_state: Any
  # Exponential moving average of `params` (None unless config.ema_decay).
  ema_params: Any = None

  def eval_params(self):
    """The weights to evaluate and export: the average when there is one."""
    return self.params if self.ema_params is None else self.ema_params


# ----------------------------------------------------------------------------
# Pieces built from the config.
# ----------------------------------------------------------------------------
def pp_config(config, train: bool) -> preprocessing.PreprocessConfig:
  d = dict(config.pp)
  if not train:
    d["max_seq_len_from_original_res"] = (
        config.eval_max_seq_len_from_original_res)
  return preprocessing.PreprocessConfig.from_dict(d)


def head_bias_init(config) -> float:
  """`config.head_bias_init`, or the MOS range's centre for regression."""
  if config.get("head_bias_init") is not None:
    return float(config.head_bias_init)
  if config.head == "regression":
    lo, hi = config.mos_range
    return 0.5 * (float(lo) + float(hi))
  return 0.0


def make_model(config, num_scales: int) -> musiq.Model:
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.dtype]
  return musiq.Model(num_scales=num_scales, dtype=dtype,
                     head_bias_init=head_bias_init(config), **config.model)


def make_loss_and_score(config):
  lo, hi = config.mos_range
  keys = dict(weight_key="valid")
  if config.head == "regression":
    loss = losses.get_loss("regression", mos_key="label", **keys,
                           **config.loss)
    score = losses.get_score_fn("regression")
  elif config.head == "distribution":
    loss = losses.get_loss("distribution", dist_key="distribution", **keys,
                           **config.loss)
    score = losses.get_score_fn("distribution")
  elif config.head == "levels":
    loss = losses.get_loss("levels", mos_key="label", lo=lo, hi=hi, **keys,
                           **config.loss)
    score = losses.get_score_fn("levels", lo=lo, hi=hi)
  else:
    raise ValueError(f"Unknown head {config.head!r}; use regression, "
                     "distribution or levels.")
  return loss, score


def make_optimizer(config) -> Tuple[optax.GradientTransformation, Any]:
  o = config.optimizer
  decay_steps = max(config.num_train_steps - o.warmup_steps, 1)
  if o.schedule == "cosine":
    after = optax.cosine_decay_schedule(o.learning_rate, decay_steps)
  elif o.schedule == "constant":
    after = optax.constant_schedule(o.learning_rate)
  else:
    raise ValueError(f"Unknown schedule {o.schedule!r}")
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps), after],
      [o.warmup_steps]) if o.warmup_steps else after
  if o.name == "sgd":
    opt = optax.sgd(schedule, momentum=o.momentum or None)
  elif o.name == "adam":
    opt = optax.adam(schedule)
  elif o.name == "adamw":
    opt = optax.adamw(schedule, weight_decay=o.weight_decay)
  else:
    raise ValueError(f"Unknown optimizer {o.name!r}; sgd, adam or adamw.")
  parts = []
  if o.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  if o.weight_decay and o.name != "adamw":
    parts.append(optax.add_decayed_weights(o.weight_decay))
  tx = optax.chain(*parts, opt)
  if o.accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=o.accum_steps)
  return tx, schedule


def create_mesh(config, devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  model = config.mesh.model
  data = config.mesh.data if config.mesh.data > 0 else devices.size // model
  if data * model != devices.size:
    raise ValueError(f"mesh data={data} x model={model} does not match "
                     f"{devices.size} devices")
  return Mesh(devices.reshape(data, model), ("data", "model"))


def param_shardings(abstract, mesh: Mesh, rules: Sequence) -> Any:
  """NamedShardings from regex rules over '/'-joined param paths."""
  compiled = [(re.compile(pattern), tuple(spec)) for pattern, spec in rules]
  model_size = mesh.shape["model"]

  def spec_for(path, leaf):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    for pattern, spec in compiled:
      if pattern.fullmatch(name) and len(spec) == leaf.ndim:
        # Only shard dimensions the model axis divides.
        ok = all(s is None or leaf.shape[i] % model_size == 0
                 for i, s in enumerate(spec))
        if ok:
          return NamedSharding(mesh, P(*spec))
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(spec_for, abstract)


def example_batch(cfg: preprocessing.PreprocessConfig, batch: int = 1):
  return {
      "patches": np.zeros([batch, 1, cfg.token_dim], np.float32),
      "spatial": np.zeros([batch, 1], np.int32),
      "scale": np.zeros([batch, 1], np.int32),
      "mask": np.ones([batch, 1], np.int32),
  }


# ----------------------------------------------------------------------------
# Steps.
# ----------------------------------------------------------------------------
def ema_decay_at(step, decay: float):
  """The averaging weight of the old average at `step` (0-based).

  Warmed up as min(decay, (1 + t) / (10 + t)) so the first steps' random
  weights fade out quickly (the schedule of TensorFlow's
  ExponentialMovingAverage with num_updates).
  """
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def train_step(state: TrainState, batch, rng, *, model, tx, loss_fn,
               ema_decay: float = 0.0):
  """One optimizer step; pure, jitted with shardings, donates `state`."""
  rng = jax.random.fold_in(rng, state.step)

  def compute_loss(params):
    outputs = model.apply({"params": params}, batch, train=True,
                          rngs={"dropout": rng})
    return loss_fn(outputs, batch)

  loss, grads = jax.value_and_grad(compute_loss)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  if ema_decay:
    d = ema_decay_at(state.step, ema_decay)
    new_state = new_state.replace(ema_params=jax.tree.map(
        lambda e, p: d * e + (1.0 - d) * p, state.ema_params, params))
  return new_state, {"loss": loss, "grad_norm": _global_norm(grads)}


def _global_norm(tree) -> jax.Array:
  """L2 norm of all leaves together (optax's helpers for this are renamed
  across the versions setup.py admits, and the old names warn)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                      for x in jax.tree.leaves(tree)))


def eval_step(params, batch, *, model, score_fn):
  outputs = model.apply({"params": params}, batch, train=False)
  return score_fn(outputs)


class Trainer:
  """Holds the model, optimizer, mesh and jitted steps of one config."""

  def __init__(self, config, devices=None):
    self.config = config
    self.train_pp = pp_config(config, train=True)
    self.eval_pp = pp_config(config, train=False)
    self.model = make_model(config, self.train_pp.num_scales)
    self.loss_fn, self.score_fn = make_loss_and_score(config)
    self.tx, self.schedule = make_optimizer(config)
    self.mesh = create_mesh(config, devices)
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())

    # The average is updated every micro-step when accumulating gradients:
    # the per-call decay keeps the configured one per optimizer step.
    self.ema_decay = float(config.get("ema_decay", 0.0) or 0.0)
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}.")
    step_decay = self.ema_decay ** (1.0 / config.optimizer.accum_steps)

    def init(rng):
      params = self.model.init(rng, example_batch(self.train_pp))["params"]
      return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                        opt_state=self.tx.init(params),
                        ema_params=self.ema_copy(params))

    self._init = init
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    p_shard = param_shardings(abstract.params, self.mesh,
                              config.sharding_rules)
    # Optimizer slots mirror the param paths, so the same (suffix) rules
    # shard them like their params; counters stay replicated.
    opt_shard = param_shardings(abstract.opt_state, self.mesh,
                                config.sharding_rules)
    self.state_sharding = TrainState(
        step=self.replicated, params=p_shard, opt_state=opt_shard,
        ema_params=p_shard if self.ema_decay else None)
    self.abstract_state = abstract
    self.train_step = jax.jit(
        functools.partial(train_step, model=self.model, tx=self.tx,
                          loss_fn=self.loss_fn, ema_decay=step_decay),
        in_shardings=(self.state_sharding, self.batch_sharding,
                      self.replicated),
        out_shardings=(self.state_sharding, self.replicated),
        donate_argnums=0)
    self.eval_step = jax.jit(
        functools.partial(eval_step, model=self.model, score_fn=self.score_fn),
        in_shardings=(p_shard, self.batch_sharding),
        out_shardings=self.replicated)

  def ema_copy(self, params):
    """A separate copy of `params` to start the average from (or None)."""
    if not self.ema_decay:
      return None
    return jax.tree.map(lambda p: p + jnp.zeros_like(p), params)

  def init_state(self, rng) -> TrainState:
    return jax.jit(self._init, out_shardings=self.state_sharding)(rng)

  def device_batch(self, batch: Mapping[str, np.ndarray]):
    """Process-local numpy batch -> global arrays sharded on 'data'."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding,
                                                      np.asarray(v))
            for k, v in batch.items() if k in DEVICE_KEYS}

  def place_params(self, params) -> Any:
    return jax.device_put(params, self.state_sharding.params)

  def evaluate(self, params, batches: Iterable[Mapping[str, np.ndarray]],
               predictions: Optional[Dict[str, list]] = None
               ) -> Dict[str, float]:
    """Metrics over one pass of an eval stream (padding examples ignored).

    If `predictions` is a dict, the valid examples' `prediction`, `label` and
    `image_id` are appended to its lists (for plots and bootstrap CIs).
    """
    collected = metrics_lib.IQAMetrics.empty()
    for batch in batches:
      scores = self.eval_step(params, self.device_batch(batch))
      scores = np.asarray(jax.device_get(scores))
      collected = collected.merge(
          metrics_lib.IQAMetrics.single_from_model_output(
              prediction=scores, label=batch["label"], valid=batch["valid"]))
      if predictions is not None:
        keep = np.asarray(batch["valid"]) > 0
        predictions.setdefault("prediction", []).extend(scores[keep])
        predictions.setdefault("label", []).extend(
            np.asarray(batch["label"])[keep])
        ids = batch.get("image_id", np.array([b""] * keep.size))
        predictions.setdefault("image_id", []).extend(
            [i.decode() if isinstance(i, bytes) else str(i)
             for i in np.asarray(ids)[keep]])
    out = {k: float(v) for k, v in collected.compute().items()}
    out["num_images"] = int(sum(
        np.sum(v) for v in collected.srcc.values.get("valid", ())))
    return out


def write_predictions(workdir: str, split: str, predictions: Dict[str, list]):
  """`WORKDIR/predictions_<split>.npz`: per-image prediction, label, image_id."""
  if jax.process_index() != 0:
    return
  np.savez(os.path.join(workdir, f"predictions_{split}.npz"),
           prediction=np.asarray(predictions.get("prediction", []), np.float64),
           label=np.asarray(predictions.get("label", []), np.float64),
           image_id=np.asarray(predictions.get("image_id", []), str))


def count_params(params) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(params)))


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------
def _dataset(config, split: str, train: bool, trainer: Trainer,
             skip_batches: int = 0):
  batch = config.input.batch_size if train else config.input.eval_batch_size
  if batch % jax.process_count():
    raise ValueError(f"batch size {batch} is not divisible by the "
                     f"{jax.process_count()} processes")
  return input_pipeline.get_dataset(
      config.dataset, split, data_dir=config.data_dir,
      pp_config=trainer.train_pp if train else trainer.eval_pp,
      batch_size=batch // jax.process_count(), train=train,
      batching=config.input.batching, max_seq_len=config.input.max_seq_len,
      num_buckets=config.input.num_buckets,
      shuffle_buffer=config.input.shuffle_buffer, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      skip_batches=skip_batches, label_key=config.label_key,
      cache=config.input.cache,
      crop_min_fraction=config.input.crop_min_fraction,
      channel_shuffle=config.input.channel_shuffle)


def ensure_dataset(config) -> None:
  """Builds the dataset into data_dir if it is not there yet."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from musiq_jax.datasets import build  # pylint: disable=g-import-not-at-top
  name, _, cfg_name = config.dataset.partition("/")
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  if builder.is_prepared():
    return
  logging.info("Building dataset %s into %s (first use).", config.dataset,
               config.data_dir)
  if jax.process_index() == 0:
    build.build(config.dataset, config.data_dir, config.manual_dir)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("dataset_built")
  del name, cfg_name


def export_best(trainer: Trainer, params, workdir: str, info: Dict[str, Any]):
  """`WORKDIR/best.npz` (original layout) and `best.json` beside it.

  `best.json` holds what scoring needs to match training: the model config,
  the preprocessing, and the read-out (`head`, `mos_range`; see
  `losses.readout_for`). Its preprocessing keeps every native patch (-1): a
  cap on the native tokens is a training (or evaluation) setting, recorded
  as `train_/eval_max_seq_len_from_original_res`, not a scoring default.
  """
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "best.npz")
  checkpoint.export_npz(jax.device_get(params), path)
  model_cfg = dict(trainer.config.model)
  model_cfg["num_scales"] = trainer.eval_pp.num_scales
  scoring_pp = trainer.eval_pp.to_dict()
  if scoring_pp["max_seq_len_from_original_res"] is not None:
    scoring_pp["max_seq_len_from_original_res"] = -1
  checkpoint.write_sidecar(path, {
      "model": model_cfg,
      "preprocessing": scoring_pp,
      "train_max_seq_len_from_original_res":
          trainer.train_pp.max_seq_len_from_original_res,
      "eval_max_seq_len_from_original_res":
          trainer.eval_pp.max_seq_len_from_original_res,
      "head": trainer.config.head,
      "mos_range": list(trainer.config.mos_range),
      **info})


def format_results(results: Mapping[str, Mapping[str, float]]) -> str:
  cols = ("srcc", "plcc", "plcc_fitted", "krcc", "rmse", "num_images")
  lines = [f"{'split':<12}" + "".join(f"{c:>12}" for c in cols)]
  for split, m in results.items():
    lines.append(f"{split:<12}" + "".join(
        f"{m[c]:>12d}" if c == "num_images" else f"{m[c]:>12.4f}"
        for c in cols))
  return "\n".join(lines)


def _restore_or_init(trainer: Trainer, manager, config, rng):
  """(state, meta, how) — resume, else pretrained, else scratch."""
  latest = manager.latest_step()
  if latest is not None:
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        trainer.abstract_state, trainer.state_sharding)
    restored = manager.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"]), f"resumed at {latest}"
  state = trainer.init_state(rng)
  how = "initialised from scratch"
  if config.init.pretrained_npz:
    params = checkpoint.load_params(
        config.init.pretrained_npz, jax.device_get(state.params),
        dont_load=tuple(config.init.dont_load))
    params = trainer.place_params(params)
    state = state.replace(params=params, opt_state=jax.jit(
        trainer.tx.init, out_shardings=trainer.state_sharding.opt_state)(
            params), ema_params=jax.jit(
                trainer.ema_copy,
                out_shardings=trainer.state_sharding.ema_params)(params))
    how = f"initialised from {config.init.pretrained_npz}"
  return state, {"best_srcc": -math.inf, "best_step": -1}, how


def evaluate_splits(trainer: Trainer, params, splits,
                    workdir: Optional[str] = None) -> Dict[str, Dict]:
  """Metrics per split; with a workdir also writes predictions_<split>.npz."""
  results = {}
  for split in splits:
    preds = {} if workdir else None
    results[split] = trainer.evaluate(
        params, _dataset(trainer.config, split, False, trainer), preds)
    if workdir:
      write_predictions(workdir, split, preds)
  return results


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Dict[str, Dict[str, float]]:
  """Trains (resuming if possible), evaluates, writes results.json."""
  os.makedirs(workdir, exist_ok=True)
  ensure_dataset(config)
  trainer = Trainer(config)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if config.mode == "eval":
    return _evaluate_only(trainer, config, workdir, writer)

  manager = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.max_checkpoints_to_keep,
          cleanup_tmp_directories=True))
  rng = jax.random.PRNGKey(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  state, meta, how = _restore_or_init(trainer, manager, config, init_rng)
  logging.info("Model %s: %s.", config.model_size, how)
  print(f"[musiq_jax] {how}", flush=True)
  start = int(jax.device_get(state.step))
  if start == 0:
    parameter_overview.log_parameter_overview(state.params)
  accum = config.optimizer.accum_steps
  total = config.num_train_steps * accum
  train_iter = iter(_dataset(config, config.train_split, True, trainer,
                             skip_batches=start))
  report = periodic_actions.ReportProgress(num_train_steps=total,
                                           writer=writer)
  hooks = [report]
  # Sums over the logging window, kept on the device (no sync per step).
  window_loss, window_start = 0.0, start + 1
  for step in range(start + 1, total + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      batch = trainer.device_batch(next(train_iter))
      state, out = trainer.train_step(state, batch, step_rng)
    window_loss = window_loss + out["loss"]
    for h in hooks:
      h(step)
    if step % config.log_every_steps == 0 or step == total:
      out = jax.device_get(out)
      mean_loss = float(jax.device_get(window_loss)) / (step - window_start + 1)
      if not np.isfinite(mean_loss):
        where = (f"at step {step}" if step == window_start else
                 f"between steps {window_start} and {step}")
        raise RuntimeError(f"Loss is {mean_loss} {where}: training diverged "
                           "(lower the learning rate or check the data).")
      window_loss, window_start = 0.0, step + 1
      # train_loss: the mean over the steps since the last log line; the
      # gradient norm is the last step's.
      writer.write_scalars(step, {"train_loss": mean_loss,
                                  "grad_norm": float(out["grad_norm"]),
                                  "learning_rate": float(
                                      trainer.schedule(step // accum))})
    if step % config.eval_every_steps == 0 or step == total:
      with report.timed("eval"):
        val = trainer.evaluate(state.eval_params(),
                               _dataset(config, config.val_split, False,
                                        trainer))
      writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
      if val["srcc"] > meta["best_srcc"]:
        meta = {"best_srcc": val["srcc"], "best_step": step}
        export_best(trainer, state.eval_params(), workdir, meta)
    if step % config.checkpoint_every_steps == 0 or step == total:
      manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          meta=ocp.args.JsonSave(meta)))
  manager.wait_until_finished()
  return _final_evaluation(trainer, config, workdir, writer, state, meta)


def _best_params(trainer: Trainer, workdir: str, fallback):
  path = os.path.join(workdir, "best.npz")
  if not os.path.exists(path):
    return fallback
  params = checkpoint.load_params(path, jax.device_get(fallback))
  return trainer.place_params(params)


def _final_evaluation(trainer, config, workdir, writer, state, meta):
  params = _best_params(trainer, workdir, state.eval_params())
  results = evaluate_splits(trainer, params, config.eval_splits, workdir)
  summary = {"step": int(jax.device_get(state.step)),
             "best_step": meta["best_step"], "splits": results,
             "model": f"{config.model_name}/{config.model_size}/{config.head}",
             "num_params": count_params(params)}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
    # Predicted-vs-MOS scatter (with the fitted logistic) and histograms.
    from musiq_jax import visualize  # pylint: disable=g-import-not-at-top
    visualize.write_eval_plots(workdir, visualize.read_predictions(workdir))
  writer.write_scalars(summary["step"], {
      f"{s}_{k}": v for s, m in results.items() for k, v in m.items()})
  writer.flush()
  print(f"[musiq_jax] best model (step {meta['best_step']}):\n" +
        format_results(results), flush=True)
  return summary


def _evaluate_only(trainer, config, workdir, writer):
  path = config.init.pretrained_npz or os.path.join(workdir, "best.npz")
  init = jax.device_get(trainer.init_state(jax.random.PRNGKey(0)).params)
  params = trainer.place_params(checkpoint.load_params(path, init))
  results = evaluate_splits(trainer, params, config.eval_splits, workdir)
  summary = {"checkpoint": path, "splits": results,
             "model": f"{config.model_name}/{config.model_size}/{config.head}",
             "num_params": count_params(params)}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval_results.json"), "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
  print(f"[musiq_jax] {path}:\n" + format_results(results), flush=True)
  del writer
  return summary
