"""Selection strategies (thesis 2.4.3, 4.3) as jit-compatible scoring functions.

A strategy maps the current network to one score per *candidate* unit; the shared
`select` step then takes the highest-scoring eligible candidate. Candidates are the
units of every layer but the output layer, flattened in layer order (see
`candidate_layout`). Adding a strategy is a scoring function plus a registry entry:

    def score(params, masks, key) -> (num_candidates,) float

Each strategy also carries the thesis's stopping rule (section 4.3), overridable in
`config.minimize`:

* ``cosine`` (the thesis's CosMax): the unit most similar to the others of its layer;
  after a failed round the next-most similar one (the n-th max); stops when
  `max_failures` (2: "the max and the second max") consecutive rounds fail.
* ``random``: a uniformly random eligible unit; stops after `max_rounds` (10) rounds.
* ``sequential``: units in network order, each visited once (accepted or not); stops
  when every candidate has been visited (10 rounds for the thesis network).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxshrink import masks as masks_lib

AGGREGATIONS = ("max", "mean", "min", "std", "median")


class Strategy(NamedTuple):
    """A scoring function and its stopping rule."""

    score: Callable  # (params, masks, key) -> (num_candidates,) float32
    max_rounds: int  # 0 = no limit
    max_failures: int  # consecutive failed rounds that stop the run; 0 = no limit
    visit_once: bool  # True: a candidate is never proposed twice (sequential)


def candidate_layout(masks: dict) -> list[tuple[str, int]]:
    """(layer, units) of the candidate layers: all but the output layer, in order."""
    names = masks_lib.layer_names(masks)
    return [(name, int(masks[name].shape[0])) for name in names[:-1]]


def flatten(tree: dict, masks: dict) -> jax.Array:
    """Concatenates per-unit values of the candidate layers into one vector."""
    return jnp.concatenate([tree[name] for name, _ in candidate_layout(masks)])


def unflatten(vector: jax.Array, masks: dict, fill=False) -> dict:
    """The inverse of `flatten`; the output layer gets `fill`."""
    out, start = {}, 0
    for name, units in candidate_layout(masks):
        out[name] = vector[start : start + units]
        start += units
    last = masks_lib.layer_names(masks)[-1]
    out[last] = jnp.full(masks[last].shape, fill, vector.dtype)
    return out


def eligible(masks: dict) -> jax.Array:
    """Candidates that may be disabled: alive, and not the last live unit of a layer."""
    parts = []
    for name, _ in candidate_layout(masks):
        alive = masks[name]
        parts.append(alive & (jnp.sum(alive) > 1))
    return jnp.concatenate(parts)


def select(scores: jax.Array, allowed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the best allowed candidate, and whether there was one.

    Ties go to the lowest index, so the choice is deterministic.
    """
    masked = jnp.where(allowed, scores, -jnp.inf)
    return jnp.argmax(masked), jnp.any(allowed)


def unit_vectors(params: dict, masks: dict, name: str) -> jax.Array:
    """(units, k*k*C_in + 1) rows: each unit's kernel flattened, its bias appended.

    Input channels fed by disabled units of the previous layer are zeroed: those
    weights read a constant zero and do not shape what the unit computes.
    """
    kernel, bias = params[name]["kernel"], params[name]["bias"]
    names = masks_lib.layer_names(masks)
    index = names.index(name)
    if index > 0:
        kernel = kernel * masks[names[index - 1]].astype(kernel.dtype)[:, None]
    units = kernel.shape[-1]
    flat = jnp.moveaxis(kernel, -1, 0).reshape(units, -1)
    return jnp.concatenate([flat, bias[:, None]], axis=1)


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
        raise ValueError(f"minimize.aggregation: unknown {how!r}; allowed: {AGGREGATIONS}")
    return jnp.where(count > 0, out, -jnp.inf)


def cosine_stats(params: dict, masks: dict, how: str, absolute: bool) -> dict:
    """Per unit, `how` of its cosine similarities to the other live units of its layer."""
    out = {}
    for name, _ in candidate_layout(masks):
        sims = cosine_matrix(unit_vectors(params, masks, name))
        if absolute:
            sims = jnp.abs(sims)
        alive = masks[name]
        valid = alive[None, :] & alive[:, None] & ~jnp.eye(alive.shape[0], dtype=bool)
        out[name] = aggregate(sims, valid, how)
    return out


def cosine_score(params, masks, key, *, how: str = "max", absolute: bool = False):
    """CosMax and its variants: the most similar unit scores highest."""
    del key
    return flatten(cosine_stats(params, masks, how, absolute), masks)


def random_score(params, masks, key):
    """Uniform random scores: a random eligible unit is chosen."""
    del params
    size = sum(units for _, units in candidate_layout(masks))
    return jax.random.uniform(key, (size,))


def sequential_score(params, masks, key):
    """Earlier units score higher, so they are visited in network order."""
    del params, key
    size = sum(units for _, units in candidate_layout(masks))
    return -jnp.arange(size, dtype=jnp.float32)


STRATEGIES = ("cosine", "random", "sequential")  # the order of `make_scorer`'s branches


def get_strategy(minimize_cfg) -> Strategy:
    """The strategy named by `minimize_cfg.strategy`, with its stopping rule.

    `minimize_cfg.max_rounds` / `max_failures` of -1 keep the thesis's rule.
    """
    name = minimize_cfg.strategy
    if name == "cosine":
        score = functools.partial(
            cosine_score, how=minimize_cfg.aggregation, absolute=bool(minimize_cfg.absolute)
        )
        how = minimize_cfg.aggregation
        if how not in AGGREGATIONS:
            raise ValueError(f"minimize.aggregation: unknown {how!r}; allowed: {AGGREGATIONS}")
        rule = (0, 2, False)
    elif name == "random":
        score, rule = random_score, (10, 0, False)
    elif name == "sequential":
        score, rule = sequential_score, (0, 0, True)
    else:
        raise ValueError(f"minimize.strategy: unknown {name!r}; allowed: {STRATEGIES}")
    max_rounds = rule[0] if minimize_cfg.max_rounds < 0 else int(minimize_cfg.max_rounds)
    max_failures = rule[1] if minimize_cfg.max_failures < 0 else int(minimize_cfg.max_failures)
    return Strategy(score, max_rounds, max_failures, rule[2])


def make_scorer(minimize_cfg) -> Callable:
    """`score(kind, params, masks, key)`: the scores of strategy `STRATEGIES[kind]`.

    `kind` is traced, so one compiled program serves every strategy of a sweep (under
    `vmap` all three are computed and one is picked per run: they cost microseconds
    next to a round's training). The cosine aggregation is the config's.
    """
    how = minimize_cfg.aggregation
    if how not in AGGREGATIONS:
        raise ValueError(f"minimize.aggregation: unknown {how!r}; allowed: {AGGREGATIONS}")
    cosine = functools.partial(cosine_score, how=how, absolute=bool(minimize_cfg.absolute))
    branches = {"cosine": cosine, "random": random_score, "sequential": sequential_score}

    def score(kind, params, masks, key):
        return jax.lax.switch(kind, [branches[name] for name in STRATEGIES], params, masks, key)

    return score
