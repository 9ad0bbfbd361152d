"""Minimal GlintIQA training: optimizer, pure jitted step, synthetic demo.

The project's generic trainer (musiq_jax/train.py) will own real runs; this
module holds what is specific to GlintIQA and small enough to test on a CPU:

* `make_optimizer(config, params)`: torch-style Adam (L2 weight decay added
  to the gradient) with a per-iteration cosine schedule, and a zero update
  for the parameters that `glint.frozen_mask` marks frozen.
* `train_step(state, batch, rng, *, loss_name)`: one pure step, bound with
  `functools.partial` and jitted by the caller (donating the state).
* `synthetic_dataset(...)` / `train_synthetic(config)`: scikit-image photos
  distorted by blur and white noise at 5 levels (`distortions.apply_distortion`)
  with a level-based score, split by content; trains on random crops and
  reports SRCC on the held-out contents (mean score over eval crops).

  python -m musiq_jax.glint_train --size=tiny --steps=200
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image
import skimage.data

from musiq_jax import losses
from musiq_jax import metrics
from musiq_jax.datasets import distortions
from musiq_jax.models import glint

_LOSSES = {"l1": losses.l1_loss, "mse": losses.mse_loss}

# Photos shipped inside scikit-image's wheel (no download).
SYNTHETIC_CONTENTS = ("astronaut", "coffee", "chelsea", "rocket", "camera",
                      "moon", "brick", "coins", "clock", "grass", "motorcycle",
                      "retina", "hubble_deep_field", "immunohistochemistry")
SYNTHETIC_DISTORTIONS = ("gaussian_blur", "white_noise")


def cosine_schedule(learning_rate: float, t_max: int,
                    eta_min: float = 0.0) -> optax.Schedule:
  """torch's CosineAnnealingLR stepped per iteration (period 2 * t_max).

  Past t_max torch's closed form keeps following the cosine back up, so the
  rate oscillates; GlintIQA relies on that with t_max = 30 iterations.
  """
  def schedule(step):
    cos = jnp.cos(jnp.pi * jnp.asarray(step, jnp.float32) / t_max)
    return eta_min + (learning_rate - eta_min) * 0.5 * (1.0 + cos)
  return schedule


def make_optimizer(config: ml_collections.ConfigDict,
                   params: Any) -> optax.GradientTransformation:
  """Adam + L2 weight decay + cosine schedule; frozen params never move."""
  opt = config.optimizer
  if opt.name != "adam":
    raise ValueError(f"optimizer.name={opt.name!r}: GlintIQA uses 'adam'.")
  if opt.schedule == "cosine":
    lr = cosine_schedule(opt.learning_rate, opt.cosine_t_max,
                         opt.get("eta_min", 0.0))
  elif opt.schedule == "constant":
    lr = opt.learning_rate
  else:
    raise ValueError(f"optimizer.schedule={opt.schedule!r}; use 'cosine' or "
                     "'constant'.")
  # torch.optim.Adam(weight_decay=...) adds wd * p to the gradient before the
  # moments (L2), unlike AdamW's decoupled decay.
  adam = optax.chain(optax.add_decayed_weights(opt.weight_decay),
                     optax.scale_by_adam(),
                     optax.scale_by_learning_rate(lr))
  labels = jax.tree.map(lambda f: "frozen" if f else "train",
                        glint.frozen_mask(params, config))
  return optax.multi_transform({"train": adam, "frozen": optax.set_to_zero()},
                               labels)


def create_state(config: ml_collections.ConfigDict, model: glint.GlintIQA,
                 params: Any) -> train_state.TrainState:
  return train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=make_optimizer(config, params))


def train_step(state: train_state.TrainState, batch: Mapping[str, jax.Array],
               rng: jax.Array, *, loss_name: str = "l1"):
  """One step on `batch` = {image [B, S, S, 3], mos [B], weight? [B]}.

  Returns:
    (new state, {"loss", "grad_norm"}).
  """
  loss_fn = _LOSSES[loss_name]
  step_rng = jax.random.fold_in(rng, state.step)

  def objective(params):
    pred = state.apply_fn({"params": params}, batch["image"], train=True,
                          rngs={"dropout": step_rng})
    return loss_fn(pred, batch["mos"], batch.get("weight"))

  loss, grads = jax.value_and_grad(objective)(state.params)
  return state.apply_gradients(grads=grads), {
      "loss": loss, "grad_norm": optax.tree.norm(grads)}


# ---------------------------------------------------------------------------
# Synthetic data: distorted scikit-image photos with level-based scores.
# ---------------------------------------------------------------------------


def _load_square(name: str, side: int) -> np.ndarray:
  """Centre square of a scikit-image photo, RGB uint8, resized to `side`."""
  if name == "motorcycle":
    img = np.asarray(skimage.data.stereo_motorcycle()[0])  # The left view.
  else:
    img = np.asarray(getattr(skimage.data, name)())
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  img = img[..., :3].astype(np.uint8)
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  img = img[top:top + s, left:left + s]
  return np.asarray(Image.fromarray(img).resize((side, side), Image.LANCZOS))


def level_score(level: int) -> float:
  """Level 0 (pristine) -> 5, level 5 -> 1: a MOS-like 1..5 label."""
  return 5.0 - 4.0 * level / distortions.NUM_LEVELS


def synthetic_dataset(contents: Sequence[str], *, side: int = 96,
                      kinds: Sequence[str] = SYNTHETIC_DISTORTIONS,
                      seed: int = 0) -> Dict[str, np.ndarray]:
  """Pristine + every (kind, level 1..5) version of each content.

  Returns:
    {"image": uint8 [M, side, side, 3], "mos": float32 [M],
     "content": int32 [M] (index into `contents`)}.
  """
  images, mos, content = [], [], []
  for c, name in enumerate(contents):
    ref = _load_square(name, side)
    images.append(ref)
    mos.append(level_score(0))
    content.append(c)
    for t, kind in enumerate(kinds):
      for level in range(1, distortions.NUM_LEVELS + 1):
        rng = np.random.default_rng([seed, c, t, level])
        images.append(distortions.apply_distortion(ref, kind, level, rng))
        mos.append(level_score(level))
        content.append(c)
  return {"image": np.stack(images), "mos": np.asarray(mos, np.float32),
          "content": np.asarray(content, np.int32)}


def _to_float(x: np.ndarray) -> np.ndarray:
  return x.astype(np.float32) / 127.5 - 1.0  # [-1, 1], the project's range.


def random_crops(images: np.ndarray, size: int, rng: np.random.Generator,
                 flip: bool = True) -> np.ndarray:
  """One random size x size crop (and a coin-flip mirror) per image."""
  n, h, w = images.shape[:3]
  tops = rng.integers(0, h - size + 1, n)
  lefts = rng.integers(0, w - size + 1, n)
  out = np.stack([im[t:t + size, l:l + size]
                  for im, t, l in zip(images, tops, lefts)])
  if flip:
    mirror = rng.random(n) < 0.5
    out[mirror] = out[mirror, :, ::-1]
  return _to_float(out)


def grid_crops(images: np.ndarray, size: int, num: int) -> np.ndarray:
  """`num` evenly spaced crops per image, [M, num, size, size, 3]."""
  n, h, w = images.shape[:3]
  k = max(int(math.ceil(math.sqrt(num))), 1)
  ys = np.linspace(0, h - size, k).round().astype(int)
  xs = np.linspace(0, w - size, k).round().astype(int)
  spots = [(y, x) for y in ys for x in xs][:num]
  return _to_float(np.stack(
      [np.stack([im[y:y + size, x:x + size] for y, x in spots])
       for im in images]))


def train_synthetic(config: ml_collections.ConfigDict, *,
                    num_steps: Optional[int] = None,
                    num_test_contents: int = 4,
                    image_side: int = 96,
                    log: Optional[Callable[[str], None]] = None
                    ) -> Dict[str, Any]:
  """Trains a GlintIQA config on synthetic crops; SRCC on unseen contents.

  Args:
    config: an experiment config (`configs/glint.py`), CPU-sized.
    num_steps: overrides `config.num_steps`.
    num_test_contents: contents held out for the test split.
    image_side: side of the (square) distorted images crops are cut from.
    log: progress printer, e.g. `print`.

  Returns:
    {"steps", "seconds" (training only, first step's compile included),
     "losses" (per step), "test_srcc", "test_plcc", "train_srcc",
     "num_params"}.
  """
  num_steps = int(num_steps or config.num_steps)
  perm = np.random.default_rng(config.seed).permutation(
      len(SYNTHETIC_CONTENTS))
  names = [SYNTHETIC_CONTENTS[i] for i in perm]
  train = synthetic_dataset(names[num_test_contents:], side=image_side,
                            seed=config.seed)
  test = synthetic_dataset(names[:num_test_contents], side=image_side,
                           seed=config.seed + 1)
  crop = config.input.crop_size
  model = glint.create_model(config)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  params = glint.init_params(model, init_rng, crop)
  if config.init.get("musiq_npz"):
    params = glint.load_vit_from_musiq(
        config.init.musiq_npz, params,
        load_patch_resnet=config.init.get("load_patch_resnet", False))
  state = create_state(config, model, params)
  step = jax.jit(functools.partial(train_step, loss_name=config.loss),
                 donate_argnums=0)
  host_rng = np.random.default_rng(config.seed)
  bs = config.input.batch_size
  history = []
  start = time.time()
  for i in range(num_steps):
    idx = host_rng.choice(len(train["mos"]), bs, replace=False)
    batch = {"image": random_crops(train["image"][idx], crop, host_rng,
                                   config.input.train_flip),
             "mos": train["mos"][idx]}
    state, m = step(state, batch, step_rng)
    loss = float(m["loss"])
    if not np.isfinite(loss):
      raise RuntimeError(f"GlintIQA loss is {loss} at step {i}.")
    history.append(loss)
    if log and (i % config.log_every_steps == 0 or i == num_steps - 1):
      log(f"step {i:4d} loss {loss:.4f} grad_norm {float(m['grad_norm']):.3f}"
          f" ({time.time() - start:.1f}s)")
  seconds = time.time() - start

  score = jax.jit(functools.partial(glint.score_crops, model.apply))

  def evaluate(data):
    crops = grid_crops(data["image"], crop, config.input.num_eval_crops)
    preds = np.concatenate([np.asarray(score(state.params, crops[j:j + bs]))
                            for j in range(0, len(crops), bs)])
    return (metrics.srcc(preds, data["mos"]), metrics.plcc(preds, data["mos"]))

  test_srcc, test_plcc = evaluate(test)
  train_srcc, _ = evaluate(train)
  return {"steps": num_steps, "seconds": seconds, "losses": history,
          "test_srcc": test_srcc, "test_plcc": test_plcc,
          "train_srcc": train_srcc,
          "num_params": glint.count_params(state.params)}


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  from musiq_jax.configs import glint as glint_config  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="tiny", choices=("tiny", "small"))
  parser.add_argument("--steps", type=int, default=None)
  args = parser.parse_args(argv)
  config = glint_config.get_config("runlocal" if args.size == "tiny" else
                                   "small")
  result = train_synthetic(config, num_steps=args.steps, log=print)
  print({k: v for k, v in result.items() if k != "losses"})


if __name__ == "__main__":
  main()
