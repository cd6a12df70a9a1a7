"""Weight magnitude (Li et al. 2017): the unit that owns the smallest weights goes first.

A unit's weights are everything it owns (`spec.unit_vectors`: kernel, bias and
batch-norm scale and bias; inputs from dead units read 0).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.search.strategies import Net, register


def _norm_score(net: Net, order: int):
    """Minus the L`order` norm of each candidate's weights."""
    rows = {
        name: spec_lib.unit_vectors(net.spec, net.params, net.masks, name)
        for name, _ in masks_lib.candidate_layout(net.spec)
    }
    if order == 1:
        norms = {name: jnp.sum(jnp.abs(r), axis=1) for name, r in rows.items()}
    else:
        norms = {name: jnp.sqrt(jnp.sum(r * r, axis=1)) for name, r in rows.items()}
    return masks_lib.flatten(net.spec, {name: -v for name, v in norms.items()})


@register("l1_norm", max_failures=2)
def l1_norm_score(net: Net, minimize_cfg):
    """Weight magnitude: minus the L1 norm of what the unit owns, so the smallest unit
    goes first (Li et al. 2017 rank filters by this sum)."""
    del minimize_cfg
    return _norm_score(net, 1)


@register("l2_norm", max_failures=2)
def l2_norm_score(net: Net, minimize_cfg):
    """Weight magnitude: minus the L2 norm of what the unit owns (see `l1_norm`)."""
    del minimize_cfg
    return _norm_score(net, 2)
