"""Training and evaluation as compiled programs (thesis section 2.3.2).

`make_trainer(config, params)` returns jitted functions closed over the static parts
of the config (network, loss, optimizer, batch size):

* `train_steps(state, data, num_steps)` runs `num_steps` Adam steps in one
  `lax.fori_loop`. `num_steps` is traced, so one compilation serves every chunk
  length (initial training, rounds, the last partial chunk).
* `evaluate(params, masks, eval_data)` scores the whole eval split with `lax.map`
  over fixed-size batches and returns the mean F1 (the thesis's evaluation score),
  MAE, MSE and UIQI.

Everything that changes during a run (params, Adam state, masks, frozen flags, step,
key) lives in `TrainState`, a pytree of arrays, so the same functions work for one
run and, under `vmap`, for a batch of runs. Batches are drawn with replacement from
the device-resident train split using a key folded with the step number: the draw is
a pure function of (seed, step), which makes runs resumable and reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxshrink import masks as masks_lib
from jaxshrink import metrics, models, optim


@flax.struct.dataclass
class TrainState:
    """Everything one run changes while it trains."""

    params: dict
    opt_state: Any
    masks: dict  # True = unit enabled
    frozen: dict  # True = unit receives no update
    step: jax.Array  # int32, steps trained so far
    rng: jax.Array  # raw uint32 PRNG key of this run


class TrainData(NamedTuple):
    """A device-resident split: (N, H, W, C) images and targets."""

    images: jax.Array
    targets: jax.Array


class EvalData(NamedTuple):
    """The eval split padded and reshaped into (num_batches, batch, H, W, C)."""

    images: jax.Array
    targets: jax.Array
    weights: jax.Array  # (num_batches, batch): 1 for real images, 0 for padding


class Trainer(NamedTuple):
    """The pure pieces of one configured network, for a single run.

    `batching.make_engine` composes them into batched, compiled programs; these
    single-run functions are also what the reference tests compare against.
    """

    apply: Callable  # (params, masks, x) -> y
    tx: optax.GradientTransformationExtraArgs
    loss_of: Callable  # (params, masks, x, y) -> scalar training loss
    sample: Callable  # (state, data) -> (x, y): the batch of step `state.step`
    update: Callable  # (state, grads) -> state after one Adam step
    evaluate: Callable  # (params, masks, eval_data) -> {'f1', 'mae', 'mse', 'uiqi'}
    predict: Callable  # jitted apply


def make_train_data(split) -> TrainData:
    """Moves a `data.Split` to the device."""
    return TrainData(jnp.asarray(split.images), jnp.asarray(split.targets))


def make_eval_data(split, batch_size: int) -> EvalData:
    """Pads the eval split to whole batches (padding has weight 0)."""
    n = split.images.shape[0]
    batch_size = min(batch_size, n)
    num_batches = math.ceil(n / batch_size)
    pad = num_batches * batch_size - n

    def shape(a):
        a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
        return jnp.asarray(a.reshape((num_batches, batch_size) + a.shape[1:]))

    weights = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return EvalData(
        shape(split.images),
        shape(split.targets),
        jnp.asarray(weights.reshape(num_batches, batch_size)),
    )


def create_train_state(rng: jax.Array, config: ml_collections.ConfigDict, tx) -> TrainState:
    """A freshly initialised run: all units enabled, none frozen, step 0."""
    init_rng, data_rng = jax.random.split(rng)
    params = models.init(init_rng, config)
    return TrainState(
        params=params,
        opt_state=optim.reset(tx, params),
        masks=masks_lib.full(params, True),
        frozen=masks_lib.full(params, False),
        step=jnp.zeros((), jnp.int32),
        rng=data_rng,
    )


def create_train_states(seeds, config: ml_collections.ConfigDict, tx) -> TrainState:
    """A batch of fresh runs, one per seed (leading axis = run); run i is
    `create_train_state(PRNGKey(seeds[i]), ...)` exactly."""
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    return jax.vmap(lambda k: create_train_state(k, config, tx))(keys)


def make_trainer(config: ml_collections.ConfigDict, params: dict) -> Trainer:
    """Builds the pure single-run pieces of `config`.

    Args:
      config: the run config (`model`, `optim`, `train` sections are read).
      params: a params tree (or its shapes), for the optimizer's structure.
    """
    apply = models.make_apply(config)
    loss_fn = metrics.get_loss(config.train.loss)
    tx = optim.make_optimizer(config.optim, params)
    batch_size = int(config.train.batch_size)

    def loss_of(params, masks, x, y):
        return loss_fn(apply(params, masks, x), y)

    def sample(state: TrainState, data: TrainData):
        key = jax.random.fold_in(state.rng, state.step)
        idx = jax.random.randint(key, (batch_size,), 0, data.images.shape[0])
        return data.images[idx], data.targets[idx]

    def update(state: TrainState, grads) -> TrainState:
        updates, opt_state = tx.update(grads, state.opt_state, state.params, frozen=state.frozen)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state, step=state.step + 1)

    def evaluate(params, masks, eval_data: EvalData) -> dict[str, jax.Array]:
        def one_batch(batch):
            x, y = batch
            out = apply(params, masks, x)
            return {
                "f1": metrics.f1_score_per_image(out, y),
                "mae": jnp.mean(jnp.abs(out - y), axis=(1, 2, 3)),
                "mse": jnp.mean(jnp.square(out - y), axis=(1, 2, 3)),
                "uiqi": metrics.uiqi_per_image(out, y),
            }

        per_image = jax.lax.map(one_batch, (eval_data.images, eval_data.targets))
        w = eval_data.weights
        return {k: jnp.sum(v * w) / jnp.sum(w) for k, v in per_image.items()}

    return Trainer(
        apply=apply,
        tx=tx,
        loss_of=loss_of,
        sample=sample,
        update=update,
        evaluate=evaluate,
        predict=jax.jit(apply),
    )
