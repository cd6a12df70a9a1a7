"""The thesis's two baselines (4.3): a random unit, and units in network order."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxshrink.core import masks as masks_lib
from jaxshrink.search.strategies import Net, register


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
