"""Selection strategies (thesis 2.4.3, 4.3) as jit-compatible scoring functions.

A strategy maps the current network to one score per *candidate* unit (see
`masks.candidate_layout`); the shared `select` step then takes the highest-scoring
eligible candidate. `STRATEGIES` is the one registry: adding a strategy is a scoring
function with the `register` decorator, which also states its stopping rule:

    @register("name", max_rounds=0, max_failures=0, visit_once=False)
    def score(net: Net, minimize_cfg) -> (num_candidates,) float

`net` holds one run's network (params, model state, masks), a PRNG key and a scoring
batch of the evaluation split with the model and the task's loss, so a score may look
at weights, activations or gradients. `minimize_cfg` is the static `config.minimize`
(options such as the cosine aggregation are read from it while tracing). The thesis's
stopping rules (4.3), overridable in `config.minimize`:

* ``cosine`` (the thesis's CosMax): the unit most similar to the others of its layer;
  after a failed round the next-most similar one (the n-th max); stops when
  `max_failures` (2: "the max and the second max") consecutive rounds fail.
* ``random``: a uniformly random eligible unit; stops after `max_rounds` (10) rounds.
* ``sequential``: units in network order, each visited once (accepted or not); stops
  when every candidate has been visited (10 rounds for the thesis network).

The scores live in one module per family: `cosine` (CosMax and one strategy per
aggregation), `order` (random, sequential), `activity` (APoZ and thesis 003's
activation counts and outliers), `norms` (weight magnitude), `taylor` (first-order
Taylor). `layers` scores whole layers for the depth search (`LAYER_RULES`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxshrink.core import spec as spec_lib


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
    """Adds the decorated scoring function to `STRATEGIES` under `name`.

    Args:
      name: the strategy's name (`minimize.strategy`, `sweep.strategies`).
      max_rounds: rounds after which a run stops (0: no limit).
      max_failures: consecutive failed rounds after which a run stops (0: no limit).
      visit_once: whether a candidate is never proposed twice.
      group: the `GROUPS` rule the strategy uses when `minimize.group` is 'auto'.
      group_threshold: its score threshold, for the 'threshold' rule.
    """
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
    threshold = minimize_cfg.group_threshold
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


def make_scorer(model, loss: Callable, minimize_cfg, names=None) -> Callable:
    """`score(kind, params, state, masks, key, x, y)`: the scores of strategy number `kind`.

    `model` is the `models.Model`, `loss(params, state, masks, x, y)` the task's loss
    in eval mode, `(x, y)` the scoring batch. `kind` (a position in `STRATEGIES`) is
    traced, so one compiled program serves every strategy of a sweep. Only the
    strategies in `names` (default: all) are compiled: under `vmap` each of them is
    computed for every run and one is picked per run, so a run pays for the scores it
    might use and no others. A `kind` outside `names` gets the first of them.
    """
    names = list(STRATEGIES) if names is None else list(dict.fromkeys(names))
    branches = tuple(
        functools.partial(_scores_of, STRATEGIES[name].score, model, loss, minimize_cfg)
        for name in names
    )
    table = tuple(names.index(n) if n in names else 0 for n in STRATEGIES)
    return functools.partial(_dispatch, branches, table)


def _scores_of(score: Callable, model, loss: Callable, minimize_cfg, args: tuple):
    """One strategy's scores of the run `args` = (params, state, masks, key, x, y)."""
    return score(Net(model, loss, *args), minimize_cfg)


def _dispatch(branches: tuple, table: tuple, kind, params, state, masks, key, x, y):
    """The scores of the branch that strategy `kind` maps to (`make_scorer`)."""
    args = (params, state, masks, key, x, y)
    if len(branches) == 1:
        return branches[0](args)
    return jax.lax.switch(jnp.asarray(table, jnp.int32)[kind], branches, args)


# The families register their strategies as they are imported, and the registration
# order is each strategy's index in a sweep (`index`): the thesis's three first, then
# the scores added later, so that no index ever moves. Each family imports `register`
# and `Net` from this module, defined above.
# isort: off
from jaxshrink.search.strategies import cosine  # noqa: E402  cosine
from jaxshrink.search.strategies import order  # noqa: E402  random, sequential
from jaxshrink.search.strategies import activity  # noqa: E402  apoz, activation_count, outliers
from jaxshrink.search.strategies import norms  # noqa: E402  l1_norm, l2_norm
from jaxshrink.search.strategies import taylor  # noqa: E402  taylor
from jaxshrink.search.strategies import layers  # noqa: E402  (whole layers, not registered)

# isort: on

# One strategy per cosine aggregation, signed and absolute ("cos:max", "|cos|:mean",
# ...), so that one sweep compares them side by side; "cosine" stays the one that
# follows `minimize.aggregation` / `minimize.absolute`. Same stopping rule as CosMax.
for _absolute in (False, True):
    for _how in cosine.AGGREGATIONS:
        register(cosine.variant_name(_how, _absolute), max_failures=2)(
            cosine.variant(_how, _absolute)
        )
del _absolute, _how

# The names the rest of the package reads as `strategies.X`.
from jaxshrink.search.strategies.activity import (  # noqa: E402
    activation_count_score,
    activity_of,
    apoz_score,
    outliers_score,
)
from jaxshrink.search.strategies.cosine import (  # noqa: E402
    AGGREGATIONS,
    aggregate,
    cosine_matrix,
    cosine_score,
    cosine_stats,
)
from jaxshrink.search.strategies.layers import LAYER_RULES, make_layer_scorer  # noqa: E402
from jaxshrink.search.strategies.norms import l1_norm_score, l2_norm_score  # noqa: E402
from jaxshrink.search.strategies.order import random_score, sequential_score  # noqa: E402
from jaxshrink.search.strategies.taylor import taylor_score, taylor_terms  # noqa: E402

__all__ = [
    "AGGREGATIONS",
    "GROUPS",
    "LAYER_RULES",
    "STRATEGIES",
    "Net",
    "Strategy",
    "activation_count_score",
    "activity",
    "activity_of",
    "aggregate",
    "apoz_score",
    "cosine",
    "cosine_matrix",
    "cosine_score",
    "cosine_stats",
    "group_rule",
    "index",
    "l1_norm_score",
    "l2_norm_score",
    "layers",
    "make_layer_scorer",
    "make_scorer",
    "norms",
    "order",
    "outliers_score",
    "random_score",
    "register",
    "select",
    "sequential_score",
    "stopping_rule",
    "taylor",
    "taylor_score",
    "taylor_terms",
]
