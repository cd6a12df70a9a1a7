"""Which whole layer a round bypasses (the depth search, `minimize.depth`).

The rules (`LAYER_RULES`): 'off' (the thesis: widths only), 'cost' (the layer whose
bypass raises the task's loss on the scoring batch least) or 'fewest' (the layer with
the fewest live units; ties: the earlier layer). Only bypassable layers
(`spec.Layer.bypass`) are ever scored.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax.numpy as jnp

LAYER_RULES = ("off", "cost", "fewest")


def make_layer_scorer(model, loss: Callable, rules=LAYER_RULES) -> Callable:
    """`scores(rule, params, state, masks, x, y) -> (layers,)` over `model.spec.layers`:
    higher bypasses first; -inf for a layer that cannot be bypassed. `rule` is a traced
    position in `LAYER_RULES`; `rules` (static) are the ones a job uses, so 'cost'
    costs its forward passes only where it is used."""
    return functools.partial(_layer_scores, tuple(model.spec.layers), loss, "cost" in rules)


def _layer_scores(layers: tuple, loss: Callable, with_cost: bool, rule, params, state, masks, x, y):
    """`make_layer_scorer`'s scores; `with_cost`: whether the 'cost' rule is computed."""
    fewest = jnp.stack([-jnp.sum(jnp.asarray(masks[layer.name])) for layer in layers])
    out = fewest.astype(jnp.float32)
    if with_cost:
        costs = []
        for layer in layers:
            if not layer.bypass:
                costs.append(jnp.zeros((), jnp.float32))
                continue
            bypassed = {**masks, layer.name: jnp.zeros_like(masks[layer.name])}
            costs.append(-loss(params, state, bypassed, x, y).astype(jnp.float32))
        out = jnp.where(rule == LAYER_RULES.index("cost"), jnp.stack(costs), out)
    bypass = jnp.asarray([layer.bypass for layer in layers])
    return jnp.where(bypass, out, -jnp.inf)
