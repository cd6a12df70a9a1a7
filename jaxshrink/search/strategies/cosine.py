"""CosMax and its family (thesis 4.1, 4.3): how similar a unit is to the others of its layer.

A unit's vector is everything it owns (`spec.unit_vectors`: kernel, bias and batch-norm
scale and bias; inputs from dead units read 0). Per unit, the cosine similarities to
the other live units of its layer are reduced by an aggregation (`AGGREGATIONS`); the
most similar unit scores highest. ``cosine`` follows `minimize.aggregation` and
`minimize.absolute`; one more strategy per aggregation, signed and absolute
(`variant`), is registered by the package after every other family, so that a sweep
compares them side by side without moving the older strategies' indices.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.search.strategies import Net, register

AGGREGATIONS = ("max", "mean", "min", "std", "median")


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


def variant_name(how: str, absolute: bool) -> str:
    """The strategy name of one aggregation: 'cos:max', '|cos|:mean', ..."""
    return f"{'|cos|' if absolute else 'cos'}:{how}"


def variant(how: str, absolute: bool) -> Callable:
    """The scoring function of CosMax's family with the aggregation fixed (it ignores
    `minimize.aggregation` and `minimize.absolute`)."""

    def score(net: Net, minimize_cfg):
        del minimize_cfg
        return masks_lib.flatten(
            net.spec, cosine_stats(net.spec, net.params, net.masks, how, absolute)
        )

    score.__name__ = f"cosine_{'abs_' if absolute else ''}{how}_score"
    score.__doc__ = (
        f"CosMax's family with the aggregation fixed: the {how} of each unit's "
        f"{'|cos|' if absolute else 'cos'} to the other live units of its layer."
    )
    return score
