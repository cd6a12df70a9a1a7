"""One round of a batch of runs: propose a change, retrain, decide (`make_parts`,
`make_round`).

A round's pieces are functions over a `Context`, what is fixed when the round is built
(the model, the trainer, the compiled scores and the static settings of
`config.minimize`): `propose` selects one run's change and builds its altered network
(Adam reset), `prepare` does so for every run on the scoring batch, the engine retrains
and evaluates, and `rules.decide` keeps the change or rolls it back.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxshrink.core import masks as masks_lib
from jaxshrink.core import models, optim, train
from jaxshrink.core import spec as spec_lib
from jaxshrink.search import batching, strategies
from jaxshrink.search.minimize import rules
from jaxshrink.search.minimize.alter import alter, distort_live, enable
from jaxshrink.search.minimize.state import (
    GROW,
    LAYER,
    UNIT,
    MinState,
    Proposal,
    RunSpec,
    tree_where,
)
from jaxshrink.search.plan import Plan


@dataclasses.dataclass(frozen=True)
class Context:
    """What every piece of a round reads that is fixed when the round is built."""

    model: models.Model
    trainer: train.Trainer
    score: Callable  # strategies.make_scorer: (kind, params, state, masks, key, x, y)
    layer_score: Callable  # strategies.make_layer_scorer: (rule, params, state, masks, x, y)
    has_depth: bool  # some run may bypass a layer (the model has bypassable ones)
    has_growth: bool  # some run may grow (the round draws fresh values)
    mode: str  # minimize.mode
    reinit: bool  # minimize.reinit: a disabled unit's values are re-drawn
    distort: float  # minimize.distort: thesis 003's distortion scale (0: off)
    reference: str  # minimize.reference
    round_steps: int  # minimize.round_steps
    # What the scores read: 0 the first eval batch; n > 0 the first n training
    # examples; -1 every training example (`minimize.score_split`, `score_examples`).
    score_examples: int = 0

    @property
    def spec(self) -> spec_lib.ModelSpec:
        return self.model.spec


def _scoring_loss(trainer: train.Trainer, params, state, masks, x, y):
    """The task's loss of the model in eval mode (what the scores and layer rules read)."""
    return trainer.task.loss(trainer.model.apply(params, masks, x, state=state), y)


def context(minimize_cfg, engine: batching.Engine, plan: Plan) -> Context:
    """The `Context` of rounds under `minimize_cfg` that cover `plan`."""
    trainer = engine.trainer
    model = trainer.model
    loss = functools.partial(_scoring_loss, trainer)
    return Context(
        model=model,
        trainer=trainer,
        score=strategies.make_scorer(model, loss, minimize_cfg, plan.strategies),
        layer_score=strategies.make_layer_scorer(model, loss, plan.layer_rules),
        has_depth=bool(model.spec.bypassable) and any(r != "off" for r in plan.layer_rules),
        has_growth=plan.grows,
        mode=minimize_cfg.mode,
        reinit=bool(minimize_cfg.reinit),
        distort=float(minimize_cfg.distort),
        reference=minimize_cfg.reference,
        round_steps=int(minimize_cfg.round_steps),
        score_examples=_score_examples(minimize_cfg),
    )


def _score_examples(minimize_cfg) -> int:
    if minimize_cfg.score_split == "eval":
        return 0
    return int(minimize_cfg.score_examples) or -1


def _first(vector):
    """(first True position as a one-hot, whether there is one)."""
    index = jnp.argmax(vector)
    return (jnp.arange(vector.shape[0]) == index) & vector[index], vector[index]


def _no_change(ctx: Context):
    """A proposal of nothing: (candidates,) and (layers,) all False."""
    size = masks_lib.num_candidates(ctx.spec)
    return jnp.zeros((size,), bool), jnp.zeros((len(ctx.spec.layers),), bool)


def unit_proposal(ctx: Context, ms: MinState, spec: RunSpec, key, x, y):
    """The units to disable, by the run's strategy and group rule: ((candidates,) bool,
    the best-scored candidate)."""
    run = ms.run
    scores = ctx.score(spec.strategy, run.params, run.model_state, run.masks, key, x, y)
    allowed = masks_lib.eligible(ctx.spec, run.masks) & ~ms.failed
    allowed = allowed & ~(spec.visit_once & ms.visited)
    live = jnp.sum(masks_lib.flatten(ctx.spec, run.masks))  # alive candidates
    k = rules.group_size(spec, ms.group, scores, allowed, live)
    choice, _ = strategies.select(scores, allowed)
    return rules.choose_group(ctx.spec, scores, allowed, run.masks, k), choice


def layer_proposal(ctx: Context, ms: MinState, spec: RunSpec, x, y):
    """The layer to bypass: (candidates,) one-hot of its live units, (layers,) one-hot."""
    if not ctx.has_depth:
        return _no_change(ctx)
    run, model_spec = ms.run, ctx.spec
    on = masks_lib.layer_alive(model_spec, run.masks)
    scores = ctx.layer_score(spec.depth, run.params, run.model_state, run.masks, x, y)
    allowed = on & ~ms.layer_failed & jnp.isfinite(scores) & (spec.depth > 0)
    best, ok = strategies.select(scores, allowed)
    layer = (jnp.arange(len(model_spec.layers)) == best) & ok
    cand_layer = jnp.asarray(masks_lib.layer_of_candidate(model_spec))
    units = layer[cand_layer] & masks_lib.flatten(model_spec, run.masks)
    return units, layer


def grow_proposal(ctx: Context, ms: MinState, spec: RunSpec):
    """The unit to enable: (candidates,) one-hot, (layers,) one-hot of its layer: the
    first dead unit of the computing layer with the fewest live units (ties: the
    earlier layer) among those not failed since the last accepted growth."""
    if not ctx.has_growth:
        return _no_change(ctx)
    run, model_spec = ms.run, ctx.spec
    positions = jnp.arange(len(model_spec.layers))
    cand_layer = jnp.asarray(masks_lib.layer_of_candidate(model_spec))
    is_candidate = jnp.asarray([layer.candidate for layer in model_spec.layers])
    alive = masks_lib.flatten(model_spec, run.masks)
    on = masks_lib.layer_alive(model_spec, run.masks)
    dead_in = jnp.zeros(positions.shape, jnp.int32).at[cand_layer].add(~alive) > 0
    live_count = jnp.zeros(positions.shape, jnp.int32).at[cand_layer].add(alive)
    allowed = is_candidate & on & dead_in & ~ms.grow_failed & ms.growing & spec.grow
    best, ok = strategies.select(-live_count.astype(jnp.float32), allowed)
    layer = (positions == best) & ok
    unit, _ = _first(layer[cand_layer] & ~alive)
    return unit, layer


def trial_of(ctx: Context, run: train.TrainState, onehot: dict, kind, key):
    """The altered network a round retrains: `onehot`'s units disabled (or, growing,
    enabled with fresh values), distorted if asked, Adam reset."""
    fresh = ctx.model.init_variables(key) if (ctx.reinit or ctx.has_growth) else None
    trial = alter(ctx.spec, run, onehot, ctx.mode, fresh if ctx.reinit else None)
    if ctx.has_growth:
        grown = enable(ctx.spec, run, onehot, fresh)
        trial = tree_where(kind == GROW, grown, trial)
    if ctx.distort > 0:  # thesis 003's distorted pruning
        trial = distort_live(ctx.spec, trial, jax.random.fold_in(key, 1), ctx.distort)
    return trial.replace(opt_state=optim.reset(ctx.trainer.tx, trial.params))


def propose(ctx: Context, ms: MinState, spec: RunSpec, x, y):
    """Selects one run's change and builds its altered network: (trial, `Proposal`).

    A growth round comes first while the run grows, then a layer round while a
    bypassable layer has not failed, then a unit round.
    """
    key, score_key, init_key = jax.random.split(ms.key, 3)
    chosen, choice = unit_proposal(ctx, ms, spec, score_key, x, y)
    layer_units, layer = layer_proposal(ctx, ms, spec, x, y)
    grow_unit, grow_layer = grow_proposal(ctx, ms, spec)
    kind = jnp.where(jnp.any(grow_unit), GROW, jnp.where(jnp.any(layer_units), LAYER, UNIT)).astype(
        jnp.int32
    )
    chosen = jnp.where(kind == GROW, grow_unit, jnp.where(kind == LAYER, layer_units, chosen))
    layer = jnp.where(kind == GROW, grow_layer, jnp.where(kind == LAYER, layer, False))
    choice = jnp.where(kind == UNIT, choice, jnp.argmax(chosen)).astype(jnp.int32)
    # A run whose accepted network scores NaN/Inf has nothing to compare with.
    active = ~ms.done & jnp.any(chosen) & jnp.isfinite(ms.reference)
    onehot_flat = chosen & active
    onehot = masks_lib.unflatten(ctx.spec, onehot_flat, fill=False)
    trial = trial_of(ctx, ms.run, onehot, kind, init_key)
    return trial, Proposal(active, choice, onehot_flat, key, kind, layer & active)


def prepare(
    ctx: Context, ms: MinState, spec: RunSpec, eval_data: train.EvalData, data: train.TrainData
):
    """`propose` for every run of the batch, on the scoring batch, as the model sees it
    (the first eval batch, or with `minimize.score_split='train'` the training
    examples, as thesis 003 counts activations "feeding the training data"):
    (trials, proposals)."""
    if ctx.score_examples == 0:
        x, y = eval_data.inputs[0], eval_data.targets[0]
    else:
        n = data.inputs.shape[0] if ctx.score_examples < 0 else ctx.score_examples
        x, y = data.inputs[:n], data.targets[:n]
    x = ctx.trainer.eval_transform(train.decode(x))
    y = train.decode(y)
    return jax.vmap(functools.partial(propose, ctx), in_axes=(0, 0, None, None))(ms, spec, x, y)


def decide_runs(ctx: Context, ms: MinState, spec: RunSpec, prop: Proposal, trial, loss, score):
    """`rules.decide` for every run of the batch: (ms, RoundRecord)."""
    decide = functools.partial(rules.decide, reference=ctx.reference)
    return jax.vmap(decide)(ms, spec, prop, trial, loss, score)


class RoundParts(NamedTuple):
    """A round as two pure programs with its retraining between them (`make_parts`)."""

    begin: Callable  # (ms, spec, data, eval_data) -> (trials, Proposal)
    finish: Callable  # (ms, spec, Proposal, trials, mean loss[R], eval_data) -> (ms, RoundRecord)
    round_steps: int  # the steps an active run's trial trains between them


def make_parts(
    config: ml_collections.ConfigDict, engine: batching.Engine, plan: Plan | None = None
) -> RoundParts:
    """A round's pieces for a caller that retrains the trials itself, in chunks.

    `begin` selects every run's change and builds its altered network (`prepare`);
    the caller trains the runs whose `Proposal.active` is set `round_steps` steps
    (`engine.train`, in as many calls as it likes: a step is a pure function of the
    run's state, so the chunks change nothing); `finish` evaluates the trials and keeps
    each change or rolls it back (`decide_runs`), given each run's mean training loss.
    The job trains a round in chunks of `train.log_every` steps, whose ends are the
    safe points of a stop request (`runtime.preemption`). Jit `begin` and `finish`.
    """
    ctx = context(config.minimize, engine, plan or Plan.single(config.minimize))

    def begin(ms: MinState, spec: RunSpec, data: train.TrainData, eval_data: train.EvalData):
        return prepare(ctx, ms, spec, eval_data, data)

    def finish(ms: MinState, spec: RunSpec, prop: Proposal, trial, loss, eval_data):
        score = engine.evaluate(trial.params, trial.model_state, trial.masks, eval_data)["score"]
        return decide_runs(ctx, ms, spec, prop, trial, loss, score)

    return RoundParts(begin, finish, ctx.round_steps)


def make_round(
    config: ml_collections.ConfigDict, engine: batching.Engine, plan: Plan | None = None
) -> Callable:
    """Builds `round_fn(ms, spec, data, eval_data) -> (ms, RoundRecord)` over a batch:
    `make_parts`' pieces with the retraining between them, as one program.

    `ms` and `spec` have a leading run axis (length 1 for a single run). Selection and
    the accept/roll-back decision are vmapped per run; retraining and evaluation are
    the engine's batched programs. `plan` is what the runs may do (default: the single
    run of `config.minimize`). Jit the result.
    """
    parts = make_parts(config, engine, plan)

    def round_fn(ms: MinState, spec: RunSpec, data: train.TrainData, eval_data: train.EvalData):
        trial, prop = parts.begin(ms, spec, data, eval_data)
        trial, loss = engine.train(trial, data, jnp.where(prop.active, parts.round_steps, 0))
        return parts.finish(ms, spec, prop, trial, loss, eval_data)

    return round_fn


def make_host_round(
    config: ml_collections.ConfigDict,
    engine: batching.Engine,
    train_fn: Callable,
    plan: Plan | None = None,
) -> Callable:
    """`round_fn` as `make_round`'s, with the retraining driven from the host.

    For ``batch.steps='host'`` (`batching.resolve_steps`): `make_parts`' pieces are
    each one compiled program, and `train_fn` (`batching.host_train`) takes the steps
    between them, skipping the runs that test nothing. Called directly, not under `jit`.
    """
    parts = make_parts(config, engine, plan)
    begin, finish = jax.jit(parts.begin), jax.jit(parts.finish)

    def round_fn(ms: MinState, spec: RunSpec, data: train.TrainData, eval_data: train.EvalData):
        trial, prop = begin(ms, spec, data, eval_data)
        steps = np.where(np.asarray(jax.device_get(prop.active)), parts.round_steps, 0)
        trial, loss = train_fn(trial, data, steps)
        return finish(ms, spec, prop, trial, loss, eval_data)

    # Compilations, as a jitted function's: the most any of its own compiled pieces has.
    round_fn._cache_size = lambda: max(
        f._cache_size() for f in (begin, finish, train_fn) if hasattr(f, "_cache_size")
    )
    return round_fn
