"""A small pure training step for the CLIP heads.

The project's generic trainer (`musiq_jax/train.py`) will own the loop, data,
checkpoints and metrics; this module only provides what a CLIP head needs from
it: a jit-able `train_step(state, batch, rng)` built from a module, a loss
function and an optax transformation, plus helpers to freeze parts of the model.
All randomness comes in as the `rng` argument (folded with the step), none is
drawn on the host inside jit.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Dict, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Array = jax.Array
# loss_fn(model_output, batch) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[[Any, Dict[str, Array]], Tuple[Array, Dict[str, Array]]]


@flax.struct.dataclass
class TrainState:
  """Step counter, parameters and optimizer state (a pytree, donated each step)."""
  step: Array
  params: Any
  opt_state: Any


def init_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """A TrainState at step 0."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def make_train_step(model: nn.Module, loss_fn: LossFn, tx: optax.GradientTransformation,
                    *, image_key: str = "image", prompt_key: str = "prompt_ids"):
  """Returns `train_step(state, batch, rng) -> (state, metrics)`, pure and jit-able.

  The model is called as `model.apply({"params": p}, batch[image_key],
  batch[prompt_key])` (prompt ids travel in the batch, so the same token array
  can be closed over by a data pipeline or passed as a constant). The rng is
  folded with the step and handed to the model as its "dropout" stream; CLIP
  has no dropout today, but a head that adds it gets fresh keys per step.
  """

  def train_step(state: TrainState, batch: Dict[str, Array], rng: Array):
    step_rng = jax.random.fold_in(rng, state.step)

    def _loss(params):
      out = model.apply({"params": params}, batch[image_key], batch.get(prompt_key),
                        rngs={"dropout": step_rng})
      return loss_fn(out, batch)

    (loss, metrics), grads = jax.value_and_grad(_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def jit_train_step(train_step):
  """jit with the state donated (its buffers are reused for the new state)."""
  return jax.jit(train_step, donate_argnums=0)


def trainable_mask(params: Any, frozen: Sequence[str] = ()) -> Any:
  """A bool pytree: False for parameters whose '/'-joined path matches a `frozen` regex."""
  patterns = [re.compile(p) for p in frozen]
  flat = flax.traverse_util.flatten_dict(params)
  mask = {k: not any(p.search("/".join(k)) for p in patterns) for k in flat}
  return flax.traverse_util.unflatten_dict(mask)


def freeze(tx: optax.GradientTransformation, params: Any,
           frozen: Sequence[str] = ()) -> optax.GradientTransformation:
  """Wraps `tx` so that parameters matching `frozen` get zero updates.

  E.g. `freeze(optax.sgd(2e-3), params, ["^clip/"])` trains only CLIP-IQA's
  prompt context (CoOp), or a linear probe's head.
  """
  mask = trainable_mask(params, frozen)
  labels = jax.tree.map(lambda m: "train" if m else "freeze", mask)
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
