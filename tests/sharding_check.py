"""Run with 8 fake CPU devices: one train step on a (4,2) mesh (and on an
(8,1) one for the crop model) equals the single-device step, for each task
named on the command line
(default: MUSIQ's synthetic config and RankIQA's crop fine-tune); MUSIQ's
params carry the shardings the rules say.

    python sharding_check.py [CONFIG ...]
"""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import conftest  # pylint: disable=g-import-not-at-top
from musiq_jax import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

CONFIGS = ("synthetic", "rankiqa_finetune")


def random_batch(task, n: int, rng) -> dict:
  """A random global batch of `n` examples in the task's layout."""
  if task.name == "musiq":
    length = 40
    return {
        "patches": rng.uniform(-1, 1, (n, length, 3072)).astype(np.float32),
        "spatial": rng.integers(0, 100, (n, length)).astype(np.int32),
        "scale": rng.integers(0, 2, (n, length)).astype(np.int32),
        "mask": (rng.uniform(size=(n, length)) > 0.2).astype(np.int32),
        "label": rng.uniform(1, 5, n).astype(np.float32),
        "valid": np.ones(n, np.float32),
    }
  example = task.example_batch(n)
  out = {"image": rng.integers(0, 256, example["image"].shape).astype(
      np.uint8), "label": rng.uniform(1, 5, n).astype(np.float32),
         "valid": np.ones(n, np.float32)}
  return out


def check(name: str) -> None:
  c = conftest.load_config(name, "tiny")
  c.optimizer.name = "adam"
  c.ema_decay = 0.9  # The average is sharded like the params.
  rng = np.random.default_rng(0)
  batch = random_batch(trainer_lib.Trainer(c, jax.devices()[:1]).task, 8, rng)
  results = {}
  # MUSIQ's steps compile slowest (~6 s each here): its data-parallel
  # sharding is checked on (4, 2) and by the two-process test
  # (multihost_check.py); the crop model on every mesh.
  shapes = ((1, 1), (4, 2)) if name == "synthetic" else ((1, 1), (8, 1),
                                                          (4, 2))
  for shape in shapes:
    c.mesh.data, c.mesh.model = shape
    devices = jax.devices()[:shape[0] * shape[1]]
    trainer = trainer_lib.Trainer(c, devices=devices)
    state = trainer.init_state(jax.random.PRNGKey(0))
    new_state, out = trainer.train_step(state, trainer.device_batch(batch),
                                        jax.random.PRNGKey(1))
    if shape == (4, 2) and trainer.task.name == "musiq":
      kernel = new_state.params["Transformer"]["encoderblock_0"][
          "MlpBlock_3"]["Dense_0"]["kernel"]
      assert kernel.sharding.spec == jax.sharding.PartitionSpec(
          None, "model"), kernel.sharding
      mu = jax.tree.leaves(new_state.opt_state)
      assert any(getattr(x, "sharding", None) is not None and
                 x.sharding.spec == jax.sharding.PartitionSpec(None, "model")
                 for x in mu)
      ema = new_state.ema_params["Transformer"]["encoderblock_0"][
          "MlpBlock_3"]["Dense_0"]["kernel"]
      assert ema.sharding.spec == kernel.sharding.spec, ema.sharding
      embed = new_state.params["embedding"]["kernel"]
      assert embed.sharding.spec == jax.sharding.PartitionSpec()
    results[shape] = (jax.device_get((new_state.params,
                                      new_state.ema_params)),
                      float(out["loss"]))
  ref_params, ref_loss = results[(1, 1)]
  for shape in shapes[1:]:
    params, loss = results[shape]
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  print("OK", name)


def main():
  assert jax.device_count() == 8, jax.devices()
  for name in sys.argv[1:] or CONFIGS:
    check(name)


if __name__ == "__main__":
  main()
