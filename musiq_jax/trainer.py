"""The one trainer of every model: `train_and_evaluate(config, workdir)`.

What is trained comes from the task of `config.task` (`musiq_jax.tasks`:
MUSIQ tokens, the crop baselines, RankIQA's ranking stage), which gives the
module, its batches, loss, read-out, frozen parameters and export. The rest
lives here, once (the shape of big_vision's generic `train.py` and scenic's
trainers):
* a `jax.sharding.Mesh` ('data', 'model'); params replicated unless a config
  rule shards them on 'model'; batches sharded on 'data'; the jitted step has
  explicit in/out shardings and donates the state; multi-host input (each
  process feeds its rows of the global batch);
* optax SGD/Adam(W), schedules (warmup, then cosine / constant / Caffe step /
  torch's periodic CosineAnnealingLR / cosine restarts), global-norm
  clipping, gradient accumulation (`optax.MultiSteps`), frozen parameters
  (zero updates);
* optionally an exponential moving average of the weights
  (`config.ema_decay`), carried in the state and checkpointed, which is what
  validation, best-checkpoint selection and export then use;
* orbax checkpoints (state + step + best-so-far + the task's host state); on
  start: resume if the workdir has a checkpoint, else the task's pretrained
  weights, else from scratch. Input streams are deterministic given the
  seed, so a resumed run skips the batches already seen;
* periodic jitted, sharded validation; best-by-SRCC exported as
  `WORKDIR/best.npz` with `best.json` (what scoring needs) so
  `python -m musiq_jax.predict --workdir=WORKDIR` scores with it;
* final evaluation of the best model on every eval split ->
  `WORKDIR/results.json`, `predictions_<split>.npz` and a console table,
  written by process 0 only.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
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
from musiq_jax import metrics as metrics_lib
from musiq_jax import tasks as tasks_lib

# Batch entries that are the same for every example (not sharded on 'data').
REPLICATED_KEYS = ("task_weights",)


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


def make_schedule(config) -> optax.Schedule:
  """`optimizer.schedule` after `optimizer.warmup_steps` of linear warmup.

  "cosine" (decay to 0 at the last step), "constant", "step" (Caffe:
  lr * gamma^floor(t / step_size), RankIQA), "cosine_annealing" (torch's
  periodic CosineAnnealingLR, `cosine_t_max`, `eta_min`: GlintIQA, LIQE),
  "cosine_restart" (cosine decay restarted every `restart_period` steps,
  CLIP-IQA+'s CosineRestart).
  """
  o = config.optimizer
  warmup = int(o.get("warmup_steps", 0) or 0)
  lr = o.learning_rate
  if o.schedule == "cosine":
    after = optax.cosine_decay_schedule(
        lr, max(config.num_train_steps - warmup, 1))
  elif o.schedule == "constant":
    after = optax.constant_schedule(lr)
  elif o.schedule == "step":
    after = optax.exponential_decay(lr, o.step_size, o.gamma, staircase=True)
  elif o.schedule == "cosine_annealing":
    after = cosine_annealing(lr, o.cosine_t_max, o.get("eta_min", 0.0))
  elif o.schedule == "cosine_restart":
    period = int(o.restart_period)
    decay = optax.cosine_decay_schedule(lr, period)
    after = lambda step: decay(jnp.mod(step, period))
  else:
    raise ValueError(f"Unknown schedule {o.schedule!r}; cosine, constant, "
                     "step, cosine_annealing or cosine_restart.")
  if not warmup:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(config, frozen: Any = None
                   ) -> Tuple[optax.GradientTransformation, Any]:
  """(tx, schedule): SGD/Adam(W), clipping, L2, accumulation, freezing.

  `weight_decay` is L2 added to the gradient (Caffe, torch's Adam) except
  for "adamw", where it is decoupled. `frozen`: a bool tree like the params
  (True = frozen), whose parameters get a zero update.
  """
  o = config.optimizer
  schedule = make_schedule(config)
  wd = o.get("weight_decay", 0.0) or 0.0
  if o.name == "sgd":
    opt = optax.sgd(schedule, momentum=o.get("momentum") or None)
  elif o.name == "adam":
    opt = optax.adam(schedule)
  elif o.name == "adamw":
    opt = optax.adamw(schedule, weight_decay=wd)
  else:
    raise ValueError(f"Unknown optimizer {o.name!r}; sgd, adam or adamw.")
  parts = []
  if o.get("grad_clip_norm"):
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  if wd and o.name != "adamw":
    parts.append(optax.add_decayed_weights(wd))
  tx = optax.chain(*parts, opt)
  if frozen is not None and any(jax.tree.leaves(frozen)):
    labels = jax.tree.map(lambda f: "frozen" if f else "train", frozen)
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               labels)
  accum = int(o.get("accum_steps", 1) or 1)
  if accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  return tx, schedule


def create_mesh(config, devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  mesh = config.get("mesh") or {}
  model = int(mesh.get("model", 1))
  data = int(mesh.get("data", -1))
  data = data if data > 0 else devices.size // model
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


def train_step(state: TrainState, batch, rng, *, task, tx,
               ema_decay: float = 0.0):
  """The one optimizer step; pure, jitted with shardings, donates `state`."""
  rng = jax.random.fold_in(rng, state.step)

  def compute_loss(params):
    outputs = task.apply(params, batch, train=True, rng=rng)
    return task.loss(outputs, batch)

  (loss, aux), grads = jax.value_and_grad(compute_loss, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            opt_state=opt_state)
  if ema_decay:
    d = ema_decay_at(state.step, ema_decay)
    new_state = new_state.replace(ema_params=jax.tree.map(
        lambda e, p: d * e + (1.0 - d) * p, state.ema_params, params))
  return new_state, {"loss": loss, "grad_norm": _global_norm(grads), **aux}


def _global_norm(tree) -> jax.Array:
  """L2 norm of all leaves together (optax's helpers for this are renamed
  across the versions setup.py admits, and the old names warn)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                      for x in jax.tree.leaves(tree)))


def eval_step(params, batch, *, task):
  """Scores of one eval batch with its labels and validity mask."""
  return {"score": task.eval_scores(params, batch), "label": batch["label"],
          "valid": batch["valid"]}


class Trainer:
  """Holds the task, optimizer, mesh and jitted steps of one config."""

  def __init__(self, config, devices=None):
    self.config = config
    self.task = tasks_lib.get_task(config)
    self.mesh = create_mesh(config, devices)
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())

    # The average is updated every micro-step when accumulating gradients:
    # the per-call decay keeps the configured one per optimizer step.
    self.ema_decay = float(config.get("ema_decay", 0.0) or 0.0)
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}.")
    self.accum_steps = int(config.optimizer.get("accum_steps", 1) or 1)
    step_decay = self.ema_decay ** (1.0 / self.accum_steps)

    abstract_params = jax.eval_shape(self.task.init_params,
                                     jax.random.PRNGKey(0))
    self.tx, schedule = make_optimizer(
        config, self.task.frozen_mask(abstract_params))
    # The learning rate at an optimizer step, for the logs: one program,
    # not one small compile per jnp op of the schedule (~20, ~1 s, eager).
    self.schedule = jax.jit(schedule)

    def init(rng):
      params = self.task.init_params(rng)
      return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                        opt_state=self.tx.init(params),
                        ema_params=self.ema_copy(params))

    self._init = init
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    rules = config.get("sharding_rules", ())
    p_shard = param_shardings(abstract.params, self.mesh, rules)
    # Optimizer slots mirror the param paths, so the same (suffix) rules
    # shard them like their params; counters stay replicated.
    opt_shard = param_shardings(abstract.opt_state, self.mesh, rules)
    self.state_sharding = TrainState(
        step=self.replicated, params=p_shard, opt_state=opt_shard,
        ema_params=p_shard if self.ema_decay else None)
    self.abstract_state = abstract
    self._step_fn = functools.partial(train_step, task=self.task, tx=self.tx,
                                      ema_decay=step_decay)
    self._eval_fn = functools.partial(eval_step, task=self.task)
    self._jitted = {}

  # The jitted steps, one per set of batch keys (in practice one each).
  def _shardings(self, batch):
    return {k: self.replicated if k in REPLICATED_KEYS else
            self.batch_sharding for k in batch}

  def jitted_train_step(self, batch):
    """The jitted `train_step` for batches with these keys (e.g. to lower)."""
    key = ("train",) + tuple(sorted(batch))
    if key not in self._jitted:
      self._jitted[key] = jax.jit(
          self._step_fn,
          in_shardings=(self.state_sharding, self._shardings(batch),
                        self.replicated),
          out_shardings=(self.state_sharding, self.replicated),
          donate_argnums=0)
    return self._jitted[key]

  def train_step(self, state, batch, rng):
    """(state, metrics) after one step on a device batch; donates `state`."""
    return self.jitted_train_step(batch)(state, batch, rng)

  def eval_step(self, params, batch):
    key = ("eval",) + tuple(sorted(batch))
    if key not in self._jitted:
      self._jitted[key] = jax.jit(
          self._eval_fn,
          in_shardings=(self.state_sharding.params, self._shardings(batch)),
          out_shardings=self.replicated)
    return self._jitted[key](params, batch)

  def ema_copy(self, params):
    """A separate copy of `params` to start the average from (or None)."""
    if not self.ema_decay:
      return None
    return jax.tree.map(lambda p: p + jnp.zeros_like(p), params)

  def init_state(self, rng) -> TrainState:
    return jax.jit(self._init, out_shardings=self.state_sharding)(rng)

  def state_from_params(self, params) -> TrainState:
    """A step-0 state around given (host) params."""
    params = self.place_params(params)
    return TrainState(
        step=jax.device_put(jnp.zeros([], jnp.int32), self.replicated),
        params=params,
        opt_state=jax.jit(self.tx.init,
                          out_shardings=self.state_sharding.opt_state)(params),
        ema_params=jax.jit(self.ema_copy,
                           out_shardings=self.state_sharding.ema_params)(
                               params))

  def device_batch(self, batch: Mapping[str, np.ndarray]):
    """Process-local numpy batch -> global arrays sharded on 'data'."""
    out = {}
    for k, v in batch.items():
      if k not in self.task.batch_keys:
        continue
      if k in REPLICATED_KEYS:
        out[k] = jax.device_put(np.asarray(v), self.replicated)
      else:
        out[k] = jax.make_array_from_process_local_data(self.batch_sharding,
                                                        np.asarray(v))
    return out

  def global_ids(self, local_ids: np.ndarray) -> np.ndarray:
    """This process's image ids of a batch -> every process's, as bytes, in
    the rows of the global batch that `device_batch` assembles (the ids take
    the same sharding, so their order is the scores' order). A collective:
    every process calls it for the same batch."""
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    encoded = [i if isinstance(i, bytes) else str(i).encode("utf-8")
               for i in local_ids.tolist()]
    width = int(np.max(multihost_utils.process_allgather(
        np.int32(max(map(len, encoded), default=0)))))
    rows = np.zeros((len(encoded), max(width, 1)), np.uint8)
    for r, b in enumerate(encoded):
      rows[r, :len(b)] = np.frombuffer(b, np.uint8)
    rows = jax.make_array_from_process_local_data(self.batch_sharding, rows)
    if "replicate" not in self._jitted:  # One jit, not one per batch.
      self._jitted["replicate"] = jax.jit(lambda x: x,
                                          out_shardings=self.replicated)
    rows = np.asarray(jax.device_get(self._jitted["replicate"](rows)))
    return np.array([bytes(r).rstrip(b"\0") for r in rows], dtype=object)

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
      out = jax.device_get(self.eval_step(params, self.device_batch(batch)))
      scores, label, valid = (np.asarray(out[k]) for k in
                              ("score", "label", "valid"))
      collected = collected.merge(
          metrics_lib.IQAMetrics.single_from_model_output(
              prediction=scores, label=label, valid=valid))
      if predictions is not None:
        keep = valid > 0
        predictions.setdefault("prediction", []).extend(scores[keep])
        predictions.setdefault("label", []).extend(label[keep])
        ids = np.asarray(batch.get("image_id", ()))
        if ids.size and jax.process_count() > 1:
          ids = self.global_ids(ids)  # Every process's rows, named.
        if ids.shape[:1] != keep.shape:
          ids = np.array([b""] * keep.size)
        predictions.setdefault("image_id", []).extend(
            [i.decode() if isinstance(i, bytes) else str(i)
             for i in ids[keep]])
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
def ensure_dataset(config) -> None:
  """Builds the dataset into data_dir if it is not there yet."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from musiq_jax.datasets import build  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  if builder.is_prepared():
    return
  logging.info("Building dataset %s into %s (first use).", config.dataset,
               config.data_dir)
  if jax.process_index() == 0:
    build.build(config.dataset, config.data_dir, config.get("manual_dir"))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("dataset_built")


def export_best(trainer: Trainer, params, workdir: str, info: Dict[str, Any]):
  """`WORKDIR/best.npz` (original layout) and `best.json` beside it.

  `best.json` holds what scoring needs to match the evaluation (the task's
  `export_info`: for MUSIQ the model config, preprocessing and read-out;
  for the crop tasks their config and eval protocol) and the selection.
  """
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "best.npz")
  checkpoint.export_npz(jax.device_get(params), path)
  checkpoint.write_sidecar(path, {**trainer.task.export_info(), **info})


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
  del config
  latest = manager.latest_step()
  if latest is not None:
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        trainer.abstract_state, trainer.state_sharding)
    restored = manager.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        meta=ocp.args.JsonRestore()))
    meta = dict(restored["meta"])
    trainer.task.load_host_state(meta.get("task_state", {}))
    return restored["state"], meta, f"resumed at {latest}"
  state = trainer.init_state(rng)
  how = "initialised from scratch"
  params, source = trainer.task.load_pretrained(jax.device_get(state.params))
  if source:
    state = trainer.state_from_params(params)
    how = f"initialised from {source}"
  return state, {"best_srcc": -math.inf, "best_step": -1}, how


def evaluate_splits(trainer: Trainer, params, splits,
                    workdir: Optional[str] = None) -> Dict[str, Dict]:
  """Metrics per split; with a workdir also writes predictions_<split>.npz."""
  results = {}
  for split in splits:
    preds = {} if workdir else None
    results[split] = trainer.evaluate(
        params, trainer.task.eval_batches(split), preds)
    if workdir:
      write_predictions(workdir, split, preds)
  return results


def _check_batch(config, trainer: Trainer):
  data = trainer.mesh.shape["data"]
  for name in ("batch_size", "eval_batch_size"):
    b = config.input.get(name)
    if b and b % data:
      raise ValueError(f"input.{name}={b} is not divisible by the mesh's "
                       f"{data} data shards")


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Dict[str, Any]:
  """Trains (resuming if possible), evaluates, writes results.json."""
  os.makedirs(workdir, exist_ok=True)
  ensure_dataset(config)
  trainer = Trainer(config)
  task = trainer.task
  if task.name == "musiq" or config.get("stage") != "rank":
    _check_batch(config, trainer)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if config.get("mode", "train") == "eval":
    return _evaluate_only(trainer, config, workdir, writer)

  manager = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.get("max_checkpoints_to_keep", 2),
          cleanup_tmp_directories=True))
  rng = jax.random.PRNGKey(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  state, meta, how = _restore_or_init(trainer, manager, config, init_rng)
  logging.info("Task %s (%s): %s.", task.name, task.model_name(), how)
  print(f"[musiq_jax] {task.model_name()}: {how}", flush=True)
  start = int(jax.device_get(state.step))
  if start == 0:
    parameter_overview.log_parameter_overview(state.params)
  accum = trainer.accum_steps
  total = config.num_train_steps * accum
  train_iter = iter(task.train_batches(skip_batches=start))
  report = periodic_actions.ReportProgress(num_train_steps=total,
                                           writer=writer)
  hooks = [report]
  every = lambda name, default: int(config.get(name, default) or default)
  log_every = every("log_every_steps", 50)
  eval_every = every("eval_every_steps", 100)
  ckpt_every = every("checkpoint_every_steps", eval_every)
  # Sums over the logging window, kept on the device (no sync per step).
  window_loss, window_start = 0.0, start + 1
  for step in range(start + 1, total + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      batch = task.prepare_batch(step, next(train_iter))
      state, out = trainer.train_step(state, trainer.device_batch(batch),
                                      step_rng)
    task.observe(step, out)
    window_loss = window_loss + out["loss"]
    for h in hooks:
      h(step)
    if step % log_every == 0 or step == total:
      out = jax.device_get(out)
      mean_loss = float(jax.device_get(window_loss)) / (step - window_start + 1)
      if not np.isfinite(mean_loss):
        where = (f"at step {step}" if step == window_start else
                 f"between steps {window_start} and {step}")
        raise RuntimeError(f"Loss is {mean_loss} {where}: training diverged "
                           "(lower the learning rate or check the data).")
      window_loss, window_start = 0.0, step + 1
      # train_loss: the mean over the steps since the last log line; the
      # gradient norm and the task's own terms are the last step's.
      writer.write_scalars(step, {
          "train_loss": mean_loss, "grad_norm": float(out["grad_norm"]),
          "learning_rate": float(trainer.schedule(step // accum)),
          **{f"train_{k}": float(v) for k, v in out.items()
             if k not in ("loss", "grad_norm")}})
    if task.select_by_validation and (step % eval_every == 0 or
                                      step == total):
      with report.timed("eval"):
        val = trainer.evaluate(state.eval_params(),
                               task.eval_batches(config.val_split))
      writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
      if val["srcc"] > meta["best_srcc"]:
        meta = {"best_srcc": val["srcc"], "best_step": step}
        export_best(trainer, state.eval_params(), workdir, meta)
    if not task.select_by_validation and step == total:
      # Nothing to select by (RankIQA's ranking uses no MOS): the last step.
      meta = {"best_srcc": None, "best_step": step}
      export_best(trainer, state.eval_params(), workdir, meta)
    if step % ckpt_every == 0 or step == total:
      meta["task_state"] = task.host_state()
      manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          meta=ocp.args.JsonSave(meta)))
      meta = {k: v for k, v in meta.items() if k != "task_state"}
  manager.wait_until_finished()
  meta = {k: v for k, v in meta.items() if k != "task_state"}
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
             "model": trainer.task.model_name(),
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
  path = config.init.get("pretrained_npz") or os.path.join(workdir,
                                                           "best.npz")
  init = jax.device_get(trainer.init_state(jax.random.PRNGKey(0)).params)
  params = trainer.place_params(checkpoint.load_params(path, init))
  results = evaluate_splits(trainer, params, config.eval_splits, workdir)
  summary = {"checkpoint": path, "splits": results,
             "model": trainer.task.model_name(),
             "num_params": count_params(params)}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval_results.json"), "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
  print(f"[musiq_jax] {path}:\n" + format_results(results), flush=True)
  del writer
  return summary
