"""Run with 8 fake CPU devices: one train step on a (8,1) and a (4,2) mesh
equals the single-device step; params carry the shardings the rules say."""

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from musiq_jax import train  # pylint: disable=g-import-not-at-top
import test_train  # pylint: disable=g-import-not-at-top


def main():
  assert jax.device_count() == 8, jax.devices()
  c = test_train.load_config(os.path.join(test_train.ROOT, "configs",
                                          "synthetic.py"), "tiny")
  c.optimizer.name = "adam"
  c.ema_decay = 0.9  # The average is sharded like the params.
  rng = np.random.default_rng(0)
  trainer1 = train.Trainer(c, devices=jax.devices()[:1])
  b = train.example_batch(trainer1.train_pp, 8)
  length = 40
  batch = {
      "patches": rng.uniform(-1, 1, (8, length, 3072)).astype(np.float32),
      "spatial": rng.integers(0, 100, (8, length)).astype(np.int32),
      "scale": rng.integers(0, 2, (8, length)).astype(np.int32),
      "mask": (rng.uniform(size=(8, length)) > 0.2).astype(np.int32),
      "label": rng.uniform(1, 5, 8).astype(np.float32),
      "valid": np.ones(8, np.float32),
  }
  del b
  results = {}
  for shape in ((1, 1), (8, 1), (4, 2)):
    c.mesh.data, c.mesh.model = shape
    devices = jax.devices()[:shape[0] * shape[1]]
    trainer = train.Trainer(c, devices=devices)
    state = trainer.init_state(jax.random.PRNGKey(0))
    new_state, out = trainer.train_step(state, trainer.device_batch(batch),
                                        jax.random.PRNGKey(1))
    if shape == (4, 2):
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
  for shape in ((8, 1), (4, 2)):
    params, loss = results[shape]
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  print("OK")


if __name__ == "__main__":
  main()
