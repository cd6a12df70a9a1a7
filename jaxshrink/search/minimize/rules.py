"""The rules of a round: how many units it tests, which, whether it keeps the change,
and when a run stops.

A change is kept when ``score >= threshold * reference`` (a grown unit: ``score >= (1 +
grow_margin) * reference``) and everything is finite; otherwise the run rolls back to
its last accepted network bit for bit. Only failed unit rounds count towards
`max_failures`; every round counts towards `max_rounds`. All functions here see one
run (the round vmaps them over the batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxshrink.core import masks as masks_lib
from jaxshrink.search import strategies
from jaxshrink.search.minimize.state import (
    GROW,
    LAYER,
    UNIT,
    MinState,
    Proposal,
    RoundRecord,
    RunSpec,
    tree_where,
)


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


def verdict(spec: RunSpec, prop: Proposal, params, loss, score, reference):
    """(accept, finite): whether the round keeps its change, and whether the loss, the
    score and every weight were finite (a NaN or Inf anywhere rolls the round back)."""
    finite = jnp.isfinite(score) & jnp.isfinite(loss)
    for leaf in jax.tree.leaves(params):
        finite &= jnp.all(jnp.isfinite(leaf))
    # Written without the division, so that a reference of 0 (e.g. an accuracy of 0
    # on a tiny eval split) accepts any finite score instead of comparing NaN. A
    # grown unit must raise the score by the margin.
    factor = jnp.where(prop.kind == GROW, 1.0 + spec.grow_margin, spec.threshold)
    return prop.active & finite & (score >= factor * reference), finite


def after_unit_round(ms: MinState, spec: RunSpec, prop: Proposal, accept) -> dict:
    """The unit bookkeeping after a round: failures, failed, group and visited."""
    is_unit = prop.kind == UNIT
    count = jnp.sum(prop.onehot).astype(jnp.int32)
    # Under the adaptive rule a failed group of several units is retried smaller and
    # does not count towards `max_failures`; a failed single unit does. Layer and
    # growth rounds never count.
    adaptive = spec.group == strategies.GROUPS.index("adaptive")
    counted = prop.active & is_unit & ~(adaptive & (count > 1))
    failures = jnp.where(accept, 0, ms.failures + counted.astype(jnp.int32))
    # Otherwise the units of a failed round are not proposed again until the next
    # accepted round (2.4.2: "select different masks if the network was restored").
    mark = jnp.where(adaptive & (count > 1), jnp.zeros_like(ms.failed), prop.onehot)
    mark = mark & is_unit
    failed = jnp.where(accept, jnp.zeros_like(ms.failed), ms.failed | mark)
    group = jnp.where(accept, 2 * count, jnp.maximum(count // 2, 1))
    group = jnp.where(prop.active & is_unit, group, ms.group)
    visited = ms.visited | (prop.onehot & is_unit)
    return dict(failures=failures, failed=failed, group=group, visited=visited)


def after_layer_round(ms: MinState, prop: Proposal, accept) -> dict:
    """layer_failed and grow_failed after a round: a failed layer (bypass or growth) is
    not tried again until one of its kind is accepted."""
    is_layer, is_grow = prop.kind == LAYER, prop.kind == GROW
    layer_failed = jnp.where(
        accept & is_layer, False, ms.layer_failed | (prop.layer & is_layer & ~accept)
    )
    grow_failed = jnp.where(
        accept & is_grow, False, ms.grow_failed | (prop.layer & is_grow & ~accept)
    )
    return dict(layer_failed=layer_failed, grow_failed=grow_failed)


def stops(spec: RunSpec, active, rounds, failures):
    """Whether the run's stopping rule fires: it tested nothing (no eligible candidate
    is left), or it reached `max_rounds` or `max_failures` (0: no limit)."""
    stop = ~active
    stop |= (spec.max_rounds > 0) & (rounds >= spec.max_rounds)
    stop |= (spec.max_failures > 0) & (failures >= spec.max_failures)
    return stop


def commit(ms: MinState, spec: RunSpec, prop: Proposal, trial, accept, score, reference: str):
    """The run's state after the round: the trial if accepted, else `ms.run` exactly as
    it was (params, masks, frozen flags and Adam state; the next round resets Adam
    first, which is the thesis's reset after a reversion). Only the step counter moves
    on, so the next round draws new batches. A stopped run does not change at all.

    `reference` is `minimize.reference`: what an accepted round compares the next with.
    """
    kept = tree_where(accept, trial, ms.run.replace(step=trial.step))
    new_reference = score if reference == "last_accepted" else ms.baseline
    rounds = ms.rounds + prop.active.astype(jnp.int32)
    unit = after_unit_round(ms, spec, prop, accept)
    new = ms.replace(
        run=kept,
        reference=jnp.where(accept, new_reference, ms.reference),
        rounds=rounds,
        done=ms.done | stops(spec, prop.active, rounds, unit["failures"]),
        key=prop.key,
        growing=ms.growing & (prop.kind == GROW),  # the first round that does not grow ends it
        **unit,
        **after_layer_round(ms, prop, accept),
    )
    return tree_where(ms.done, ms, new)


def decide(ms: MinState, spec: RunSpec, prop: Proposal, trial, loss, score, *, reference: str):
    """Accepts the trial or rolls back to `ms.run`, and applies the stopping rule.

    Returns the run's new `MinState` and its `RoundRecord`; `reference` is
    `minimize.reference` (static).
    """
    accept, finite = verdict(spec, prop, trial.params, loss, score, ms.reference)
    count = jnp.sum(prop.onehot).astype(jnp.int32)
    record = RoundRecord(
        active=prop.active,
        candidate=jnp.where(prop.active, prop.choice, -1).astype(jnp.int32),
        count=jnp.where(prop.active, count, 0),
        score=score,
        reference=ms.reference,
        ratio=score / ms.reference,
        accepted=accept,
        train_loss=loss,
        finite=finite,
        kind=prop.kind,
    )
    return commit(ms, spec, prop, trial, accept, score, reference), record
