"""The self-scaling loop (thesis 2.4.2): select, alter, reset Adam, retrain, accept or roll back.

`make_round(config, engine)` returns `round_fn(mstate, spec, data, eval_data)`, one
whole round of a batch of runs as a pure function of their states. Each run has its
own `RunSpec` (threshold, strategy, stopping rule) and decides on its own; a single
run is the batch of one. It is jit-compiled once: masks, thresholds, strategies,
keys and flags are traced data, so rounds never recompile.

Rollback is in memory: the previous state is kept and the new one is merged with
``jnp.where(accept, new, old)`` leaf by leaf, so a rejected round leaves params,
masks and Adam state bit for bit as they were. Every round starts by resetting Adam
(the thesis resets "every time the network is altered or reverted"). Orbax only
persists `MinState` between rounds so a run can resume.

Modes (2.4.1). The thesis has three switches for a unit: *disabling* gives it zero
values (or, optionally, re-drawn initial ones: "reinitializing the masks instead of
giving them zero values"), *freezing* gives it zero gradient, and an output switch
makes a disabled unit "always produce an output of zeros". Its three ways to test the
worth of a unit combine them:

* ``disabled_frozen`` (the thesis's choice, the default): the unit's output is gated
  to exactly zero and its weights get no update; everything else trains and may
  compensate. A round measures the network without the unit, so an accepted round
  removes it, and the export leaves it out. With `reinit` its (unused) values are
  re-drawn; the network computes the same function either way.
* ``disabled``: the unit's values are set to zero (or re-drawn with `reinit`) and it
  stays in the network, training with everything else ("observe what the optimizer
  will train this mask the next time").
* ``disabled_others_frozen``: as ``disabled``, but every other unit is frozen, so the
  network cannot compensate "but lets the mask relearn".

The last two let the unit come back, so a round cannot remove it: they are
measurements (`jaxshrink.experiments.relearn`, `configs/relearn.py`), not minimization modes, and
`validate` refuses them for a minimization. Under ReLU a unit whose weights and bias
are all zero outputs relu(0) = 0 and gets exactly zero gradient (JAX, like TensorFlow,
takes relu'(0) = 0), so with zero values it never relearns; only re-drawn values can.

``disabled_frozen_others_frozen`` (not in the thesis) gates the unit and freezes every
unit: nothing trains, so a round measures the immediate loss of the unit with no
compensation (its `round_steps` update nothing). It was this package's earlier
``disabled_others_frozen`` and is kept as a cheap minimization mode.

Depth and growth (not in the thesis's final implementation; its stated aim is
"minimizing the number of layers and the number of masks in the layers"). A round
proposes one of three kinds of change (`KINDS`), all under the same Adam reset,
retraining, accept/roll-back, checkpoints and round records:

* ``unit``: the thesis's round, above.
* ``layer`` (``minimize.depth`` not 'off', a model with bypassable layers, see
  `spec`): every live unit of one layer is disabled at once, which bypasses the
  layer (its output becomes its input). The layer is chosen by
  `strategies.LAYER_RULES`; the rule to keep it is the unit rule (``score >=
  threshold * reference``). Layer rounds come first: while a bypassable layer
  has not failed since the last accepted layer removal, a round proposes a layer;
  then units. So depth is settled first and widths after, and each layer is tried
  at least once.
* ``grow`` (``minimize.grow``): a run that starts inside its envelope with only
  some units alive (``train.start_widths``) first grows. A growth round enables one
  dead unit, freshly initialised (values re-drawn as at the start of training), of
  the computing layer with the fewest live units among those not failed since the
  last accepted growth (ties: the earlier layer; the unit: its first dead one). It
  is kept when the unit pays for itself: ``score >= (1 + grow_margin) *
  reference``. The growth phase ends at the first round with no layer left to grow
  (each failed once, or full), and never resumes; the run then shrinks as above.

Only failed unit rounds count towards `max_failures`; every round counts towards
`max_rounds`. Shapes never change: a layer or a unit is removed or restored by its
masks, so one compiled round serves every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxshrink.core import masks as masks_lib
from jaxshrink.core import optim, train
from jaxshrink.core import spec as spec_lib
from jaxshrink.search import batching, strategies

GATED_MODES = ("disabled_frozen", "disabled_frozen_others_frozen")  # may minimize
RELEARN_MODES = ("disabled", "disabled_others_frozen")  # the unit may come back
MODES = GATED_MODES + RELEARN_MODES
REFERENCES = ("last_accepted", "baseline")
KINDS = ("unit", "layer", "grow")  # what a round changes (`RoundRecord.kind`)
UNIT, LAYER, GROW = range(3)


@flax.struct.dataclass
class MinState:
    """Everything a minimization run carries from round to round."""

    run: train.TrainState  # the last accepted network (masks = units kept)
    reference: jax.Array  # the score a new round is compared with ("old")
    baseline: jax.Array  # the score before minimization
    failed: jax.Array  # (candidates,) bool: failed since the last acceptance
    visited: jax.Array  # (candidates,) bool: ever proposed
    failures: jax.Array  # int32: consecutive failed rounds
    rounds: jax.Array  # int32: rounds run
    group: jax.Array  # int32: the adaptive group size (0 = not started: `group_size`)
    done: jax.Array  # bool: the stopping rule has fired
    key: jax.Array  # PRNG key for selection and re-initialisation
    layer_failed: jax.Array  # (layers,) bool: bypass failed since the last accepted one
    grow_failed: jax.Array  # (layers,) bool: growth failed since the last accepted one
    growing: jax.Array  # bool: still in the growth phase (while its RunSpec grows)


class RoundRecord(NamedTuple):
    """What one round did (arrays, so a batch of runs returns a batch of records)."""

    active: jax.Array  # bool: the run was still going at the start of the round
    candidate: jax.Array  # int32 flat index of the best-scored unit tested (-1: none)
    count: jax.Array  # int32: units tested together (disabled as one group)
    score: jax.Array  # eval score after retraining (the task's, e.g. F1)
    reference: jax.Array  # the score it was compared with
    ratio: jax.Array  # score / reference
    accepted: jax.Array  # bool
    train_loss: jax.Array  # mean training loss of the round
    finite: jax.Array  # bool: loss, score and weights were all finite
    kind: jax.Array  # int32 position in `KINDS`: unit, layer (bypass) or grow


def init_state(
    model_spec: spec_lib.ModelSpec, run: train.TrainState, baseline: jax.Array, key: jax.Array
) -> MinState:
    """The minimizer's state right after the initial training."""
    size = masks_lib.num_candidates(model_spec)
    layers = len(model_spec.layers)
    return MinState(
        run=run,
        reference=jnp.asarray(baseline, jnp.float32),
        baseline=jnp.asarray(baseline, jnp.float32),
        failed=jnp.zeros((size,), bool),
        visited=jnp.zeros((size,), bool),
        failures=jnp.zeros((), jnp.int32),
        rounds=jnp.zeros((), jnp.int32),
        group=jnp.zeros((), jnp.int32),
        done=jnp.zeros((), bool),
        key=key,
        layer_failed=jnp.zeros((layers,), bool),
        grow_failed=jnp.zeros((layers,), bool),
        growing=jnp.ones((), bool),
    )


def _tree_where(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def alter(model_spec, run: train.TrainState, onehot: dict, mode: str, values=None):
    """The run with the units of `onehot` disabled in `mode` (see the module doc).

    Args:
      model_spec: the model's spec.
      run: one run's state.
      onehot: per-unit bool tree, True for the units to disable.
      mode: one of `MODES`.
      values: ``(params, model_state)`` whose slices replace what the disabled units
        own (`Model.init_variables` for re-drawn values; `model_state` may be None to
        keep the statistics). None keeps the values in a gated mode and sets the
        params to zero in a relearning mode, the thesis's "zero values".
    """
    params, model_state = run.params, run.model_state
    if mode in RELEARN_MODES and values is None:
        values = (jax.tree.map(jnp.zeros_like, params), None)
    if values is not None:
        new_params, new_state = values
        owned = spec_lib.expand(model_spec, onehot, params)
        params = jax.tree.map(jnp.where, owned, new_params, params)
        if new_state is not None:
            model_state = {
                name: jax.tree.map(
                    jnp.where,
                    spec_lib.expand(model_spec, onehot, tree, collection=name),
                    new_state[name],
                    tree,
                )
                for name, tree in model_state.items()
            }
    others = jax.tree.map(jnp.logical_not, onehot)
    if mode in GATED_MODES:
        masks = jax.tree.map(lambda m, h: m & ~h, run.masks, onehot)
        if mode == "disabled_frozen":
            frozen = jax.tree.map(jnp.logical_not, masks)  # every disabled unit stays put
        else:  # "disabled_frozen_others_frozen": nothing trains
            frozen = jax.tree.map(jnp.ones_like, onehot)
    elif mode in RELEARN_MODES:
        masks = run.masks  # the unit stays in the network and may relearn
        frozen = run.frozen if mode == "disabled" else others
    else:
        raise ValueError(f"minimize.mode {mode!r}; allowed: {MODES}")
    return run.replace(params=params, model_state=model_state, masks=masks, frozen=frozen)


def enable(model_spec, run: train.TrainState, onehot: dict, values):
    """The run with the dead units of `onehot` enabled (growth), their values (params
    and model state) taken from `values` = ``(params, model_state)``, e.g. fresh ones
    from `Model.init_variables`. They train from now on; the other dead units stay
    frozen."""
    grown = alter(model_spec, run, onehot, "disabled_frozen", values)  # copies the values
    masks = jax.tree.map(jnp.logical_or, run.masks, onehot)
    return grown.replace(masks=masks, frozen=jax.tree.map(jnp.logical_not, masks))


class RunSpec(NamedTuple):
    """What distinguishes one minimization run from another of a batch (all traced)."""

    threshold: jax.Array  # float32: keep a change when new/old >= threshold
    strategy: jax.Array  # int32 position in `strategies.STRATEGIES`
    max_rounds: jax.Array  # int32, 0 = no limit
    max_failures: jax.Array  # int32 consecutive failures that stop the run, 0 = no limit
    visit_once: jax.Array  # bool: never propose a candidate twice
    group: jax.Array  # int32 position in `strategies.GROUPS`
    group_size: jax.Array  # int32: 'fixed' count, 'adaptive' start
    group_fraction: jax.Array  # float32: 'fraction' of the live candidates
    group_threshold: jax.Array  # float32: 'threshold' score
    depth: jax.Array  # int32 position in `strategies.LAYER_RULES` (0: 'off')
    grow: jax.Array  # bool: grow before shrinking
    grow_margin: jax.Array  # float32: keep a grown unit when new/old >= 1 + margin


def run_spec(
    minimize_cfg,
    strategy: str | None = None,
    threshold: float | None = None,
    depth: str | None = None,
    grow: bool | None = None,
):
    """The `RunSpec` of `minimize_cfg`, optionally with another strategy, threshold,
    layer rule (`depth`) or growth switch.

    The stopping rule is the strategy's (thesis 4.3) unless `max_rounds` /
    `max_failures` in the config override it (-1 keeps the thesis's).
    """
    strategy = strategy or minimize_cfg.strategy
    max_rounds, max_failures, visit_once = strategies.stopping_rule(minimize_cfg, strategy)
    group, group_threshold = strategies.group_rule(minimize_cfg, strategy)
    threshold = minimize_cfg.threshold if threshold is None else threshold
    return RunSpec(
        threshold=np.float32(threshold),
        strategy=np.int32(strategies.index(strategy)),
        max_rounds=np.int32(max_rounds),
        max_failures=np.int32(max_failures),
        visit_once=np.bool_(visit_once),
        group=np.int32(strategies.GROUPS.index(group)),
        group_size=np.int32(minimize_cfg.get("group_size", 1)),
        group_fraction=np.float32(minimize_cfg.get("group_fraction", 0.1)),
        group_threshold=np.float32(group_threshold),
        depth=np.int32(strategies.LAYER_RULES.index(depth or minimize_cfg.get("depth", "off"))),
        grow=np.bool_(minimize_cfg.get("grow", False) if grow is None else grow),
        grow_margin=np.float32(minimize_cfg.get("grow_margin", 0.0)),
    )


def depth_rules(config) -> tuple[str, ...]:
    """The layer rules a run or an experiment uses (static: what the round computes)."""
    rules = {config.minimize.get("depth", "off")}
    if "depth" in config:
        rules.add(config.depth.get("rule", "cost"))
    return tuple(sorted(rules))


def grows(config) -> bool:
    """Whether any run of `config` grows (static: the round then draws fresh values)."""
    grow_variants = "depth" in config and "grow" in tuple(config.depth.get("variants", ()))
    return bool(config.minimize.get("grow", False)) or grow_variants


def group_size(spec: RunSpec, ms_group: jax.Array, scores, allowed, live: jax.Array):
    """How many of the allowed candidates a round disables (before the per-layer cap).

    'one': 1; 'fixed': `group_size`; 'fraction': `group_fraction` of the `live`
    candidates (at least 1); 'threshold': every allowed candidate whose score reaches
    `group_threshold`; 'adaptive': the run's current size (`group_size` at first).
    """

    def rule(name):
        return spec.group == strategies.GROUPS.index(name)

    above = jnp.sum(allowed & (scores >= spec.group_threshold))
    fraction = jnp.floor(spec.group_fraction * live).astype(jnp.int32)
    adaptive = jnp.where(ms_group > 0, ms_group, spec.group_size)
    k = jnp.int32(1)
    k = jnp.where(rule("fixed"), spec.group_size, k)
    k = jnp.where(rule("fraction"), fraction, k)
    k = jnp.where(rule("threshold"), above, k)
    k = jnp.where(rule("adaptive"), adaptive, k)
    return jnp.maximum(k, jnp.where(rule("threshold"), 0, 1)).astype(jnp.int32)


def choose_group(model_spec, scores, allowed, masks, k):
    """The `k` best-scored allowed candidates (ties: lower index first), as a (candidates,)
    bool vector, keeping at least one live unit in every layer."""
    order = jnp.argsort(-jnp.where(allowed, scores, -jnp.inf), stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
    chosen = allowed & (rank < k)
    parts, start = [], 0
    for name, units in masks_lib.candidate_layout(model_spec):
        mine = chosen[start : start + units]
        room = jnp.sum(masks[name]) - 1  # the layer keeps at least one unit
        layer_rank = jnp.cumsum(mine[jnp.argsort(rank[start : start + units])])
        within = (
            jnp.zeros(units, jnp.int32).at[jnp.argsort(rank[start : start + units])].set(layer_rank)
        )
        parts.append(mine & (within <= room))
        start += units
    return jnp.concatenate(parts)


class _Proposal(NamedTuple):
    active: jax.Array
    choice: jax.Array
    onehot: jax.Array  # (candidates,) bool
    key: jax.Array
    kind: jax.Array  # int32 position in `KINDS`
    layer: jax.Array  # (layers,) bool: the layer bypassed or grown (none for a unit)


def make_round(config: ml_collections.ConfigDict, engine: batching.Engine) -> Callable:
    """Builds `round_fn(ms, spec, data, eval_data) -> (ms, RoundRecord)` over a batch.

    `ms` and `spec` have a leading run axis (length 1 for a single run). Selection and
    the accept/roll-back decision are vmapped per run; retraining and evaluation are
    the engine's batched programs. Jit the result (or `batching.distribute` it).
    """
    prepare, decide, round_steps = _round_parts(config, engine)

    def round_fn(ms: MinState, spec: RunSpec, data: train.TrainData, eval_data: train.EvalData):
        trial, prop = prepare(ms, spec, eval_data)
        trial, loss = engine.train(trial, data, jnp.where(prop.active, round_steps, 0))
        score = engine.evaluate(trial.params, trial.model_state, trial.masks, eval_data)["score"]
        return decide(ms, spec, prop, trial, loss, score)

    return round_fn


def make_host_round(config: ml_collections.ConfigDict, engine: batching.Engine, train_fn):
    """`round_fn` as `make_round`'s, with the retraining driven from the host.

    For ``batch.steps='host'`` (`batching.resolve_steps`): selection and the decision
    are each one compiled program, the evaluation another, and `train_fn`
    (`batching.host_train`) takes the steps between them, skipping the runs that
    test nothing. Called directly, not under `jit`.
    """
    prepare, decide, round_steps = _round_parts(config, engine)
    prepare, decide = jax.jit(prepare), jax.jit(decide)
    evaluate = jax.jit(engine.evaluate)

    def round_fn(ms: MinState, spec: RunSpec, data: train.TrainData, eval_data: train.EvalData):
        trial, prop = prepare(ms, spec, eval_data)
        steps = np.where(np.asarray(jax.device_get(prop.active)), round_steps, 0)
        trial, loss = train_fn(trial, data, steps)
        score = evaluate(trial.params, trial.model_state, trial.masks, eval_data)["score"]
        return decide(ms, spec, prop, trial, loss, score)

    # Compilations, as a jitted function's: the most any of its own compiled pieces
    # has. (`evaluate` shares its cache with every `jit` of `engine.evaluate`, the
    # job's evaluation of other batch shapes included, so it is not counted here.)
    round_fn._cache_size = lambda: max(
        f._cache_size() for f in (prepare, decide, train_fn) if hasattr(f, "_cache_size")
    )
    return round_fn


def _round_parts(config: ml_collections.ConfigDict, engine: batching.Engine):
    """``(prepare, decide, round_steps)``: a round before and after its retraining, over
    a batch of runs. ``prepare(ms, spec, eval_data) -> (trial, proposal)``;
    ``decide(ms, spec, proposal, trial, loss, score) -> (ms, RoundRecord)``."""
    mcfg = config.minimize
    model = engine.trainer.model
    model_spec = model.spec
    trainer = engine.trainer

    def scoring_loss(params, state, masks, x, y):
        return trainer.task.loss(model.apply(params, masks, x, state=state), y)

    score_fn = strategies.make_scorer(model, scoring_loss, mcfg, strategies.used(config))
    rules = depth_rules(config)
    layer_score_fn = strategies.make_layer_scorer(model, scoring_loss, rules)
    # Static: which kinds of round this job can propose at all.
    has_depth = bool(model_spec.bypassable) and any(r != "off" for r in rules)
    has_growth = grows(config)
    round_steps = int(mcfg.round_steps)
    cand_layer = jnp.asarray(masks_lib.layer_of_candidate(model_spec))  # (candidates,)
    is_candidate = jnp.asarray([layer.candidate for layer in model_spec.layers])
    positions = jnp.arange(len(model_spec.layers))

    def first(vector):
        """(first True position as a one-hot, whether there is one)."""
        index = jnp.argmax(vector)
        return (jnp.arange(vector.shape[0]) == index) & vector[index], vector[index]

    def layer_proposal(ms: MinState, spec: RunSpec, run, x, y):
        """The layer to bypass: (candidates,) one-hot of its live units, (layers,) one-hot."""
        if not has_depth:
            none = jnp.zeros(positions.shape, bool)
            return jnp.zeros(cand_layer.shape, bool), none
        on = masks_lib.layer_alive(model_spec, run.masks)
        scores = layer_score_fn(spec.depth, run.params, run.model_state, run.masks, x, y)
        allowed = on & ~ms.layer_failed & jnp.isfinite(scores) & (spec.depth > 0)
        best, ok = strategies.select(scores, allowed)
        layer = (positions == best) & ok
        units = layer[cand_layer] & masks_lib.flatten(model_spec, run.masks)
        return units, layer

    def grow_proposal(ms: MinState, spec: RunSpec, run):
        """The unit to enable: (candidates,) one-hot, (layers,) one-hot of its layer."""
        if not has_growth:
            none = jnp.zeros(positions.shape, bool)
            return jnp.zeros(cand_layer.shape, bool), none
        alive = masks_lib.flatten(model_spec, run.masks)
        on = masks_lib.layer_alive(model_spec, run.masks)
        dead_in = jnp.zeros(positions.shape, jnp.int32).at[cand_layer].add(~alive) > 0
        live_count = jnp.zeros(positions.shape, jnp.int32).at[cand_layer].add(alive)
        allowed = is_candidate & on & dead_in & ~ms.grow_failed & ms.growing & spec.grow
        best, ok = strategies.select(-live_count.astype(jnp.float32), allowed)
        layer = (positions == best) & ok
        unit, _ = first(layer[cand_layer] & ~alive)
        return unit, layer

    def propose(ms: MinState, spec: RunSpec, x, y):
        """Selects a change and builds the altered network (Adam reset) for one run."""
        key, score_key, init_key = jax.random.split(ms.key, 3)
        run = ms.run
        scores = score_fn(spec.strategy, run.params, run.model_state, run.masks, score_key, x, y)
        allowed = masks_lib.eligible(model_spec, run.masks) & ~ms.failed
        allowed = allowed & ~(spec.visit_once & ms.visited)
        live = jnp.sum(masks_lib.flatten(model_spec, run.masks))  # alive candidates
        k = group_size(spec, ms.group, scores, allowed, live)
        choice, _ = strategies.select(scores, allowed)
        chosen = choose_group(model_spec, scores, allowed, run.masks, k)
        layer_units, layer = layer_proposal(ms, spec, run, x, y)
        grow_unit, grow_layer = grow_proposal(ms, spec, run)
        kind = jnp.where(
            jnp.any(grow_unit), GROW, jnp.where(jnp.any(layer_units), LAYER, UNIT)
        ).astype(jnp.int32)
        chosen = jnp.where(kind == GROW, grow_unit, jnp.where(kind == LAYER, layer_units, chosen))
        layer = jnp.where(kind == GROW, grow_layer, jnp.where(kind == LAYER, layer, False))
        choice = jnp.where(kind == UNIT, choice, jnp.argmax(chosen)).astype(jnp.int32)
        # A run whose accepted network scores NaN/Inf has nothing to compare with.
        active = ~ms.done & jnp.any(chosen) & jnp.isfinite(ms.reference)
        onehot_flat = chosen & active
        onehot = masks_lib.unflatten(model_spec, onehot_flat, fill=False)
        fresh = model.init_variables(init_key) if (mcfg.reinit or has_growth) else None
        trial = alter(model_spec, run, onehot, mcfg.mode, fresh if mcfg.reinit else None)
        if has_growth:
            grown = enable(model_spec, run, onehot, fresh)
            trial = _tree_where(kind == GROW, grown, trial)
        if float(mcfg.get("distort", 0.0)) > 0:  # thesis 003's distorted pruning
            noisy = strategies.distort(trial.params, jax.random.fold_in(init_key, 1), mcfg.distort)
            dead = jax.tree.map(jnp.logical_not, trial.masks)
            kept = spec_lib.expand(model_spec, dead, trial.params)  # disabled units stay
            trial = trial.replace(params=jax.tree.map(jnp.where, kept, trial.params, noisy))
        trial = trial.replace(opt_state=optim.reset(engine.trainer.tx, trial.params))
        return trial, _Proposal(active, choice, onehot_flat, key, kind, layer & active)

    def decide(ms: MinState, spec: RunSpec, prop: _Proposal, trial, loss, score):
        """Accepts the trial or rolls back to `ms.run`, and applies the stopping rule."""
        run, active = ms.run, prop.active
        is_unit, is_layer, is_grow = (prop.kind == UNIT), (prop.kind == LAYER), (prop.kind == GROW)
        ratio = score / ms.reference
        # A NaN or Inf anywhere (loss, score, weights) rolls the round back.
        finite = jnp.isfinite(score) & jnp.isfinite(loss)
        for leaf in jax.tree.leaves(trial.params):
            finite &= jnp.all(jnp.isfinite(leaf))
        # Written without the division, so that a reference of 0 (e.g. an accuracy of 0
        # on a tiny eval split) accepts any finite score instead of comparing NaN. A
        # grown unit must raise the score by the margin.
        factor = jnp.where(is_grow, 1.0 + spec.grow_margin, spec.threshold)
        accept = active & finite & (score >= factor * ms.reference)
        # Rolled back: params, masks, frozen flags and Adam state exactly as they were
        # (the next round resets Adam first, which is the thesis's reset after a
        # reversion). Only the step counter moves on, so the next round draws new
        # batches.
        kept = _tree_where(accept, trial, run.replace(step=trial.step))
        new_reference = score if mcfg.reference == "last_accepted" else ms.baseline
        # Under the adaptive rule a failed group of several units is retried smaller and
        # does not count towards `max_failures`; a failed single unit does. Layer and
        # growth rounds never count.
        count = jnp.sum(prop.onehot).astype(jnp.int32)
        adaptive = spec.group == strategies.GROUPS.index("adaptive")
        counted = active & is_unit & ~(adaptive & (count > 1))
        failures = jnp.where(accept, 0, ms.failures + counted.astype(jnp.int32))
        rounds = ms.rounds + active.astype(jnp.int32)
        # A failed group of several units under the adaptive rule is retried smaller;
        # otherwise the units of a failed round are not proposed again until the next
        # accepted round (2.4.2: "select different masks if the network was restored").
        mark = jnp.where(adaptive & (count > 1), jnp.zeros_like(ms.failed), prop.onehot)
        mark = mark & is_unit
        failed = jnp.where(accept, jnp.zeros_like(ms.failed), ms.failed | mark)
        group = jnp.where(accept, 2 * count, jnp.maximum(count // 2, 1))
        group = jnp.where(active & is_unit, group, ms.group)
        visited = ms.visited | (prop.onehot & is_unit)
        # A failed layer (bypass or growth) is not tried again until one of its kind
        # is accepted.
        layer_failed = jnp.where(
            accept & is_layer, False, ms.layer_failed | (prop.layer & is_layer & ~accept)
        )
        grow_failed = jnp.where(
            accept & is_grow, False, ms.grow_failed | (prop.layer & is_grow & ~accept)
        )
        stop = ~active  # for a run still going: no eligible candidate is left
        stop |= (spec.max_rounds > 0) & (rounds >= spec.max_rounds)
        stop |= (spec.max_failures > 0) & (failures >= spec.max_failures)
        new = MinState(
            run=kept,
            reference=jnp.where(accept, new_reference, ms.reference),
            baseline=ms.baseline,
            failed=failed,
            visited=visited,
            failures=failures,
            rounds=rounds,
            group=group,
            done=ms.done | stop,
            key=prop.key,
            layer_failed=layer_failed,
            grow_failed=grow_failed,
            growing=ms.growing & is_grow,  # the first round that does not grow ends it
        )
        new = _tree_where(ms.done, ms, new)  # nothing changes for a stopped run
        record = RoundRecord(
            active=active,
            candidate=jnp.where(active, prop.choice, -1).astype(jnp.int32),
            count=jnp.where(active, count, 0),
            score=score,
            reference=ms.reference,
            ratio=ratio,
            accepted=accept,
            train_loss=loss,
            finite=finite,
            kind=prop.kind,
        )
        return new, record

    def prepare(ms: MinState, spec: RunSpec, eval_data: train.EvalData):
        # The scoring batch: the first eval batch, as the model sees it.
        x = trainer.eval_transform(train.decode(eval_data.inputs[0]))
        y = train.decode(eval_data.targets[0])
        return jax.vmap(propose, in_axes=(0, 0, None, None))(ms, spec, x, y)

    return prepare, jax.vmap(decide), round_steps
