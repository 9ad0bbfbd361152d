r"""Entry point: `python -m musiq_jax.main --config=configs/koniq.py --workdir=DIR`.

Every config (MUSIQ and the baselines) trains through the one trainer,
`musiq_jax.trainer`, with the task its `config.task` names.

Any config field can be overridden, e.g. `--config.num_train_steps=100
--config.input.batch_size=16 --config.init.pretrained_npz=imagenet_pretrain.npz`.
Multi-host: run one process per host with `--coordinator_address`,
`--num_processes` and `--process_id` (or set them in the environment on a
managed cluster, where `jax.distributed.initialize()` finds them itself).
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from musiq_jax import compilation_cache

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py).", lock_config=True)
if "workdir" not in FLAGS:  # Also defined by musiq_jax.predict.
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard "
                      "events, best.npz and results.json.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 for multi-host runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
flags.DEFINE_integer("process_id", None, "This process's index.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() with no arguments (TPU "
                  "pods and managed clusters detect their settings).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  compilation_cache.enable()  # --nocompilation_cache turns it off.
  # TF only feeds data: keep it off the accelerators JAX uses.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.coordinator_address:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()
  from musiq_jax import trainer  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(),
               jax.process_count(), jax.devices())
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
