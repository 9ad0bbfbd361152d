"""Trains a few steps of tiny configs in one of N processes.

    python multihost_check.py PROCESS_ID NUM_PROCESSES PORT OUT_PREFIX [CONFIG ...]

With NUM_PROCESSES > 1 the processes meet through jax.distributed on
127.0.0.1; each feeds only its own rows of every global batch (as the input
pipelines' per-process shards do) and the global batch is assembled by
`Trainer.device_batch`. Writes each config's final params to
OUT_PREFIX<config>.npz (default configs: MUSIQ's synthetic, RankIQA's crop
fine-tune), and for MUSIQ the image ids and predictions of one evaluated
batch to OUT_PREFIX<config>_predictions.npz.
"""

import os
import sys

import jax


def main():
  pid, nproc, port, out = (int(sys.argv[1]), int(sys.argv[2]),
                           int(sys.argv[3]), sys.argv[4])
  jax.config.update("jax_num_cpu_devices", 2)
  if nproc > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=nproc, process_id=pid)
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(__file__))
  import conftest  # pylint: disable=g-import-not-at-top
  import sharding_check  # pylint: disable=g-import-not-at-top
  from musiq_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from musiq_jax import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  for name in sys.argv[5:] or sharding_check.CONFIGS:
    c = conftest.load_config(name, "tiny")
    c.optimizer.name = "adam"
    trainer = trainer_lib.Trainer(c)
    state = trainer.init_state(jax.random.PRNGKey(0))
    global_batch = 8
    rows = global_batch // jax.process_count()
    for step in range(3):
      # The same global batch everywhere; each process feeds its rows.
      batch = sharding_check.random_batch(trainer.task, global_batch,
                                          np.random.default_rng(step))
      local = {k: v[pid * rows:(pid + 1) * rows] for k, v in batch.items()}
      state, _ = trainer.train_step(state, trainer.device_batch(local),
                                    jax.random.PRNGKey(1))
    params = jax.tree.map(
        lambda x: np.asarray(jax.device_get(x.addressable_data(0))),
        state.params)
    checkpoint.export_npz(params, f"{out}{name}.npz")
    if trainer.task.name == "musiq":
      # Evaluation names every row of the global batch in every process
      # (predictions_<split>.npz is written by process 0 from its lists).
      batch = sharding_check.random_batch(trainer.task, global_batch,
                                          np.random.default_rng(9))
      batch["image_id"] = np.array([f"photo_{i:02d}_{'x' * i}.jpg".encode()
                                    for i in range(global_batch)])
      batch["valid"][-1] = 0  # Padding rows are dropped, names included.
      local = {k: v[pid * rows:(pid + 1) * rows] for k, v in batch.items()}
      predictions = {}
      trainer.evaluate(state.params, [local], predictions)
      np.savez(f"{out}{name}_predictions.npz",
               image_id=np.asarray(predictions["image_id"], str),
               prediction=np.asarray(predictions["prediction"]))
  print("DONE", jax.process_index(), jax.process_count(), jax.device_count())


if __name__ == "__main__":
  main()
