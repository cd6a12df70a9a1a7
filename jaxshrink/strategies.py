"""Selection strategies (thesis 2.4.3, 4.3) as jit-compatible scoring functions.

A strategy maps the current network to one score per *candidate* unit (see
`masks.candidate_layout`); the shared `select` step then takes the highest-scoring
eligible candidate. `STRATEGIES` is the one registry: adding a strategy is a scoring
function with the `register` decorator, which also states its stopping rule:

    @register("name", max_rounds=0, max_failures=0, visit_once=False)
    def score(net: Net, minimize_cfg) -> (num_candidates,) float

`net` holds one run's network (params, model state, masks), a PRNG key and a scoring
batch of the evaluation split with the model and the task's loss, so a score may look
at weights, activations or gradients. `minimize_cfg` is the static
`config.minimize` (options such as the cosine aggregation are read from it while
tracing). The thesis's stopping rules (4.3),
overridable in `config.minimize`:

* ``cosine`` (the thesis's CosMax): the unit most similar to the others of its layer;
  after a failed round the next-most similar one (the n-th max); stops when
  `max_failures` (2: "the max and the second max") consecutive rounds fail.
* ``random``: a uniformly random eligible unit; stops after `max_rounds` (10) rounds.
* ``sequential``: units in network order, each visited once (accepted or not); stops
  when every candidate has been visited (10 rounds for the thesis network).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxshrink import masks as masks_lib
from jaxshrink import spec as spec_lib

AGGREGATIONS = ("max", "mean", "min", "std", "median")


class Net(NamedTuple):
    """What a scoring function sees of one run: arrays are traced, `model` and `loss`
    are static."""

    model: Any  # models.Model: `model.spec`, `model.apply(params, masks, x, state=)`
    loss: Callable  # (params, state, masks, x, y) -> scalar: the task's loss, eval mode
    params: Any
    state: Any  # batch-norm statistics ({} for a model without)
    masks: Any  # per-unit bool trees (True = alive)
    key: jax.Array
    x: jax.Array  # a scoring batch of the eval split, as the model sees it
    y: jax.Array

    @property
    def spec(self) -> spec_lib.ModelSpec:
        return self.model.spec


# How many units a round proposes (`minimize.group`; see `minimize` for the rules):
# one (the thesis), a fixed count, a fraction of the live candidates, every candidate
# whose score reaches `group_threshold`, or an adaptive count that doubles after an
# accepted round and halves after a rollback.
GROUPS = ("one", "fixed", "fraction", "threshold", "adaptive")


class Strategy(NamedTuple):
    """A scoring function, its stopping rule and its default group rule."""

    score: Callable  # (net, minimize_cfg) -> (candidates,)
    max_rounds: int  # 0 = no limit
    max_failures: int  # consecutive failed rounds that stop the run; 0 = no limit
    visit_once: bool  # True: a candidate is never proposed twice (sequential)
    group: str  # the `GROUPS` rule used when `minimize.group` is 'auto'
    group_threshold: float  # its score threshold, when `group` is 'threshold'


STRATEGIES: dict[str, Strategy] = {}  # in registration order: a sweep's strategy index


def register(
    name: str,
    *,
    max_rounds: int = 0,
    max_failures: int = 0,
    visit_once: bool = False,
    group: str = "one",
    group_threshold: float = 0.0,
):
    """Adds the decorated scoring function to `STRATEGIES` under `name`."""
    if group not in GROUPS:
        raise ValueError(f"strategy {name!r}: group {group!r}; allowed: {GROUPS}")

    def add(score: Callable) -> Callable:
        STRATEGIES[name] = Strategy(
            score, max_rounds, max_failures, visit_once, group, float(group_threshold)
        )
        return score

    return add


def select(scores: jax.Array, allowed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the best allowed candidate, and whether there was one.

    Ties go to the lowest index, so the choice is deterministic.
    """
    masked = jnp.where(allowed, scores, -jnp.inf)
    return jnp.argmax(masked), jnp.any(allowed)


def cosine_matrix(vectors: jax.Array) -> jax.Array:
    """Pairwise cosine similarities of the rows (0 for an all-zero row)."""
    norms = jnp.linalg.norm(vectors, axis=1)
    safe = jnp.where(norms > 0, norms, 1.0)
    unit = vectors / safe[:, None]
    return unit @ unit.T


def aggregate(values: jax.Array, valid: jax.Array, how: str) -> jax.Array:
    """Reduces each row of `values` over the columns where `valid` is True.

    Rows without a valid column get -inf (they can never be chosen).
    """
    count = jnp.sum(valid, axis=1)
    if how == "max":
        out = jnp.max(jnp.where(valid, values, -jnp.inf), axis=1)
    elif how == "min":
        out = jnp.min(jnp.where(valid, values, jnp.inf), axis=1)
    elif how == "mean":
        out = jnp.sum(jnp.where(valid, values, 0.0), axis=1) / jnp.maximum(count, 1)
    elif how == "std":
        mean = jnp.sum(jnp.where(valid, values, 0.0), axis=1) / jnp.maximum(count, 1)
        var = jnp.sum(jnp.where(valid, (values - mean[:, None]) ** 2, 0.0), axis=1)
        out = jnp.sqrt(var / jnp.maximum(count, 1))
    elif how == "median":
        out = jnp.nanmedian(jnp.where(valid, values, jnp.nan), axis=1)
    else:
        raise ValueError(f"unknown aggregation {how!r}; allowed: {AGGREGATIONS}")
    return jnp.where(count > 0, out, -jnp.inf)


def cosine_stats(model_spec: spec_lib.ModelSpec, params, masks, how: str, absolute: bool):
    """Per unit, `how` of its cosine similarities to the other live units of its layer."""
    out = {}
    for name, _ in masks_lib.candidate_layout(model_spec):
        sims = cosine_matrix(spec_lib.unit_vectors(model_spec, params, masks, name))
        if absolute:
            sims = jnp.abs(sims)
        alive = masks[name]
        valid = alive[None, :] & alive[:, None] & ~jnp.eye(alive.shape[0], dtype=bool)
        out[name] = aggregate(sims, valid, how)
    return out


@register("cosine", max_failures=2)
def cosine_score(net: Net, minimize_cfg):
    """CosMax and its variants: the most similar unit scores highest."""
    how, absolute = minimize_cfg.aggregation, bool(minimize_cfg.absolute)
    stats = cosine_stats(net.spec, net.params, net.masks, how, absolute)
    return masks_lib.flatten(net.spec, stats)


@register("random", max_rounds=10)
def random_score(net: Net, minimize_cfg):
    """Uniform random scores: a random eligible unit is chosen."""
    del minimize_cfg
    return jax.random.uniform(net.key, (masks_lib.num_candidates(net.spec),))


@register("sequential", visit_once=True)
def sequential_score(net: Net, minimize_cfg):
    """Earlier units score higher, so they are visited in network order."""
    del minimize_cfg
    return -jnp.arange(masks_lib.num_candidates(net.spec), dtype=jnp.float32)


def index(name: str) -> int:
    """The position of strategy `name` in `STRATEGIES` (a traced `RunSpec.strategy`)."""
    return list(STRATEGIES).index(name)


def group_rule(minimize_cfg, name: str | None = None) -> tuple[str, float]:
    """(group, group_threshold) of strategy `name` (default: the config's).

    `minimize_cfg.group` of 'auto' keeps the strategy's rule; `group_threshold` of None
    keeps the strategy's threshold.
    """
    rule = STRATEGIES[name or minimize_cfg.strategy]
    group = rule.group if minimize_cfg.group == "auto" else minimize_cfg.group
    threshold = minimize_cfg.get("group_threshold")
    return group, rule.group_threshold if threshold is None else float(threshold)


def stopping_rule(minimize_cfg, name: str | None = None) -> tuple[int, int, bool]:
    """(max_rounds, max_failures, visit_once) of strategy `name` (default: the config's).

    `minimize_cfg.max_rounds` / `max_failures` of -1 keep the thesis's rule.
    """
    rule = STRATEGIES[name or minimize_cfg.strategy]
    max_rounds = rule.max_rounds if minimize_cfg.max_rounds < 0 else int(minimize_cfg.max_rounds)
    max_failures = (
        rule.max_failures if minimize_cfg.max_failures < 0 else int(minimize_cfg.max_failures)
    )
    return max_rounds, max_failures, rule.visit_once


def make_scorer(model, loss: Callable, minimize_cfg) -> Callable:
    """`score(kind, params, state, masks, key, x, y)`: the scores of strategy number `kind`.

    `model` is the `models.Model`, `loss(params, state, masks, x, y)` the task's loss
    in eval mode, `(x, y)` the scoring batch. `kind` is traced, so one compiled program
    serves every strategy of a sweep (under `vmap` all of them are computed and one is
    picked per run: they cost little next to a round's training).
    """
    branches = [
        lambda args, fn=strategy.score: fn(Net(model, loss, *args), minimize_cfg)
        for strategy in STRATEGIES.values()
    ]

    def score(kind, params, state, masks, key, x, y):
        return jax.lax.switch(kind, branches, (params, state, masks, key, x, y))

    return score
