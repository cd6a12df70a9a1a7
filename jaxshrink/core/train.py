"""Training and evaluation as compiled programs (thesis section 2.3.2).

`make_trainer(config, model, task)` returns the pure single-run pieces closed over
the static parts of the config (network, task, optimizer, batch size); `batching`
composes them into compiled programs over a batch of runs:

* `loss_of`, `sample` and `update`: one training step (batch, loss, optimizer);
* `evaluate(params, model_state, masks, eval_data)` scores the whole eval split with
  `lax.map` over fixed-size batches: the task's metrics averaged over the split, and
  ``'score'``, the number the minimization rule compares (`tasks`).

Everything that changes during a run (params, the model's state such as batch-norm
statistics, Adam state, masks, frozen flags, step, key) lives in `TrainState`, a
pytree of arrays, so the same functions work for one run and, under `vmap`, for a
batch of runs. Batches are drawn with replacement from the device-resident train
split using a key folded with the step number: the draw is a pure function of
(seed, step), which makes runs resumable and reproducible; so are the dropout key
(the same key folded with 1) and the augmentation key (folded with 2). Augmentation
(`augment`, config section ``augment``) runs inside the compiled step; evaluation and
prediction apply its deterministic eval transform (central crop, standardisation).

The splits stay on the device in the compact dtypes they are stored in (uint8 pixels,
float16 targets; `jaxshrink.core.compact`): the thesis's 34000 crops take 6.7 GB there and not
17.8 GB. `decode` widens to float32 only what a step samples and what one evaluation batch
holds, inside the compiled programs, to exactly the values `data.decode` gives on the host.
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

from jaxshrink.core import augment, models, optim, tasks
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.compact import UINT8_VALUES


@flax.struct.dataclass
class TrainState:
    """Everything one run changes while it trains."""

    params: dict
    model_state: dict  # other variable collections (batch-norm statistics); {} if none
    opt_state: Any
    masks: dict  # True = unit enabled
    frozen: dict  # True = unit receives no update
    step: jax.Array  # int32, steps trained so far
    rng: jax.Array  # raw uint32 PRNG key of this run


class TrainData(NamedTuple):
    """A device-resident split: (N, ...) inputs and targets, float32 or compact (`decode`)."""

    inputs: jax.Array
    targets: jax.Array


class Snapshot(NamedTuple):
    """One run at one step without its optimizer state: what a picture of it needs
    (host arrays; e.g. the network "after a few steps" of thesis Figure 3.4)."""

    step: int
    params: dict
    model_state: dict
    masks: dict


class EvalData(NamedTuple):
    """The eval split padded and reshaped into (num_batches, batch, ...), as stored (`decode`)."""

    inputs: jax.Array
    targets: jax.Array
    weights: jax.Array  # (num_batches, batch): 1 for real images, 0 for padding


class Trainer(NamedTuple):
    """The pure pieces of one configured network, for a single run.

    `batching.make_engine` composes them into batched, compiled programs; these
    single-run functions are also what the reference tests compare against.
    """

    model: models.Model
    task: tasks.Task
    apply: Callable  # (params, model_state, masks, x) -> y, inference mode
    tx: optax.GradientTransformationExtraArgs
    # (params, model_state, masks, x, y, rng) -> (scalar training loss, new model_state)
    loss_of: Callable
    sample: Callable  # (state, data) -> (x, y, rng): the (augmented) batch of `state.step`
    update: Callable  # (state, grads, model_state) -> state after one optimizer step
    # (params, model_state, masks, eval_data) -> {metric: mean, 'score': ...}
    evaluate: Callable
    predict: Callable  # jitted apply
    eval_transform: Callable  # x -> what the model sees at evaluation (augment's eval)


def decode(a: jax.Array) -> jax.Array:
    """The float32 values of a compact array (`jaxshrink.core.compact`); others as they are.

    uint8 is looked up in the table of k / 255, so the result is bit for bit the host's on
    every backend (a division could be compiled into a multiplication by 1/255).
    """
    if a.dtype == jnp.uint8:
        return jnp.asarray(UINT8_VALUES)[a]
    if a.dtype == jnp.float16:
        return a.astype(jnp.float32)
    return a


def make_train_data(split) -> TrainData:
    """Moves a `data.Split` to the device, in the dtypes it is stored in."""
    return TrainData(jnp.asarray(split.inputs), jnp.asarray(split.targets))


def make_eval_data(split, batch_size: int) -> EvalData:
    """Pads the eval split to whole batches (padding has weight 0)."""
    n = split.inputs.shape[0]
    batch_size = min(batch_size, n)
    num_batches = math.ceil(n / batch_size)
    pad = num_batches * batch_size - n

    def shape(a):
        a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
        return jnp.asarray(a.reshape((num_batches, batch_size) + a.shape[1:]))

    weights = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return EvalData(
        shape(split.inputs),
        shape(split.targets),
        jnp.asarray(weights.reshape(num_batches, batch_size)),
    )


def create_train_state(rng: jax.Array, model: models.Model, tx, masks=None) -> TrainState:
    """A freshly initialised run at step 0: all units enabled and none frozen, or the
    units of `masks` enabled and the others frozen (a run that starts small inside its
    envelope, `masks.start_masks`)."""
    init_rng, data_rng = jax.random.split(rng)
    params, model_state = model.init_variables(init_rng)
    masks = spec_lib.full(model.spec, True) if masks is None else masks
    return TrainState(
        params=params,
        model_state=model_state,
        opt_state=optim.reset(tx, params),
        masks=masks,
        frozen=jax.tree.map(jnp.logical_not, masks),
        step=jnp.zeros((), jnp.int32),
        rng=data_rng,
    )


def create_train_states(seeds, model: models.Model, tx, masks=None) -> TrainState:
    """A batch of fresh runs, one per seed (leading axis = run); run i is
    `create_train_state(PRNGKey(seeds[i]), ...)` exactly. `masks`: one start tree
    for every run, or a batch of them (leading run axis)."""
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    if masks is None:
        masks = spec_lib.full(model.spec, True)
    masks = jax.tree.map(
        lambda m: jnp.broadcast_to(jnp.asarray(m), (len(keys), *jnp.shape(m)[-1:])), masks
    )
    return jax.vmap(lambda k, m: create_train_state(k, model, tx, m))(keys, masks)


def from_config(config: ml_collections.ConfigDict, input_shape) -> Trainer:
    """The trainer of the configured model and task for examples of `input_shape`."""
    model = models.get_model(config.model, input_shape)
    task = tasks.get_task(config.task, config.train.loss)  # '': the task's default
    return make_trainer(config, model, task)


def step(trainer: Trainer, state: TrainState, data: TrainData) -> tuple[TrainState, jax.Array]:
    """One training step of one run: its batch, the loss's gradient, the optimizer
    update. Returns (new state, loss). `batching` loops it (the host loop) or vmaps
    the same pieces over runs (the compiled loop)."""
    x, y, rng = trainer.sample(state, data)
    (loss, model_state), grads = jax.value_and_grad(trainer.loss_of, has_aux=True)(
        state.params, state.model_state, state.masks, x, y, rng
    )
    return trainer.update(state, grads, model_state), loss


def _evaluator(task: tasks.Task, apply: Callable) -> Callable:
    """`Trainer.evaluate` of `apply`: the task's metrics averaged over the eval split
    (padding weighs 0), and its score of those means."""

    def evaluate(params, model_state, masks, eval_data: EvalData) -> dict[str, jax.Array]:
        def one_batch(batch):
            x, y = (decode(a) for a in batch)  # float32 one batch at a time
            return task.metrics(apply(params, model_state, masks, x), y)

        per_example = jax.lax.map(one_batch, (eval_data.inputs, eval_data.targets))
        w = eval_data.weights
        means = {k: jnp.sum(v * w) / jnp.sum(w) for k, v in per_example.items()}
        return {**means, "score": task.score(means)}

    return evaluate


def make_trainer(
    config: ml_collections.ConfigDict, model: models.Model, task: tasks.Task
) -> Trainer:
    """Builds the pure single-run pieces of `config` for `model` and `task`.

    Args:
      config: the run config (`optim` and `train` sections are read).
      model: the network.
      task: loss, metrics and score.
    """
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    tx = optim.make_optimizer(config.optim, model.spec, shapes)
    batch_size = int(config.train.batch_size)
    aug_cfg = config.augment
    if augment.enabled(aug_cfg):
        augment_train, augment_eval = augment.make_augment(aug_cfg)
    else:
        augment_train, augment_eval = (lambda key, x: x), (lambda x: x)

    def apply(params, model_state, masks, x):
        return model.apply(params, masks, augment_eval(x), state=model_state)

    def loss_of(params, model_state, masks, x, y, rng):
        out, new_state = model.train_apply(params, model_state, masks, x, rng)
        return task.loss(out, y), new_state

    def sample(state: TrainState, data: TrainData):
        key = jax.random.fold_in(state.rng, state.step)
        idx = jax.random.randint(key, (batch_size,), 0, data.inputs.shape[0])
        x = augment_train(jax.random.fold_in(key, 2), decode(data.inputs[idx]))
        return x, decode(data.targets[idx]), jax.random.fold_in(key, 1)

    def update(state: TrainState, grads, model_state) -> TrainState:
        updates, opt_state = tx.update(grads, state.opt_state, state.params, frozen=state.frozen)
        params = optax.apply_updates(state.params, updates)
        return state.replace(
            params=params, model_state=model_state, opt_state=opt_state, step=state.step + 1
        )

    return Trainer(
        model=model,
        task=task,
        apply=apply,
        tx=tx,
        loss_of=loss_of,
        sample=sample,
        update=update,
        evaluate=_evaluator(task, apply),
        predict=jax.jit(apply),
        eval_transform=jax.jit(augment_eval),
    )
