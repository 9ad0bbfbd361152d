"""Trains a few steps of the tiny MUSIQ config in one of N processes.

    python multihost_check.py PROCESS_ID NUM_PROCESSES PORT OUT.npz

With NUM_PROCESSES > 1 the processes meet through jax.distributed on
127.0.0.1; each feeds only its own rows of every global batch (as the input
pipeline's per-process shards do) and the global batch is assembled by
`Trainer.device_batch`. Writes the final params to OUT.npz.
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
  from musiq_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from musiq_jax import train  # pylint: disable=g-import-not-at-top
  import test_train  # pylint: disable=g-import-not-at-top

  c = test_train.load_config(os.path.join(test_train.ROOT, "configs",
                                          "synthetic.py"), "tiny")
  c.optimizer.name = "adam"
  trainer = train.Trainer(c)
  state = trainer.init_state(jax.random.PRNGKey(0))
  global_batch, length = 8, 24
  rows = global_batch // jax.process_count()
  for step in range(3):
    rng = np.random.default_rng(step)  # The same global batch everywhere.
    batch = {
        "patches": rng.uniform(-1, 1, (global_batch, length, 3072)),
        "spatial": rng.integers(0, 100, (global_batch, length)),
        "scale": rng.integers(0, 2, (global_batch, length)),
        "mask": (rng.uniform(size=(global_batch, length)) > 0.2),
        "label": rng.uniform(1, 5, global_batch),
        "valid": np.ones(global_batch),
    }
    dtypes = dict(patches=np.float32, label=np.float32, valid=np.float32)
    local = {k: v[pid * rows:(pid + 1) * rows].astype(dtypes.get(k, np.int32))
             for k, v in batch.items()}
    state, _ = trainer.train_step(state, trainer.device_batch(local),
                                  jax.random.PRNGKey(1))
  params = jax.tree.map(
      lambda x: np.asarray(jax.device_get(x.addressable_data(0))),
      state.params)
  checkpoint.export_npz(params, out)
  print("DONE", jax.process_index(), jax.process_count(), jax.device_count())


if __name__ == "__main__":
  main()
