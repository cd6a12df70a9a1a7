"""What a minimization carries and records: its state, its runs' rules, a round's record.

`MinState` is everything a run carries from round to round (its accepted network, its
reference score, what has failed); `RunSpec` is what distinguishes one run of a batch
from another (threshold, strategy, stopping and group rules, depth and growth), all
traced data so that one compiled round serves every run; `RoundRecord` is what a round
did; `Proposal` is the change a round tests, between its selection and its decision.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.core import train
from jaxshrink.search import strategies

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


class Proposal(NamedTuple):
    """The change one round of one run tests (between its selection and its decision)."""

    active: jax.Array  # bool: the run tests something this round
    choice: jax.Array  # int32 flat index of the best-scored candidate tested
    onehot: jax.Array  # (candidates,) bool: the units disabled (or, growing, enabled)
    key: jax.Array  # the run's PRNG key for the next round
    kind: jax.Array  # int32 position in `KINDS`
    layer: jax.Array  # (layers,) bool: the layer bypassed or grown (none for a unit)


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
) -> RunSpec:
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
        group_size=np.int32(minimize_cfg.group_size),
        group_fraction=np.float32(minimize_cfg.group_fraction),
        group_threshold=np.float32(group_threshold),
        depth=np.int32(strategies.LAYER_RULES.index(depth or minimize_cfg.depth)),
        grow=np.bool_(minimize_cfg.grow if grow is None else grow),
        grow_margin=np.float32(minimize_cfg.grow_margin),
    )


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


def tree_where(pred: jax.Array, new, old):
    """`new` where the scalar `pred` holds, else `old`, leaf by leaf."""
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)
