"""First-order Taylor importance (Molchanov et al. 2016): the estimated change of the
loss when a unit is removed; the least important unit goes first."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxshrink.core import masks as masks_lib
from jaxshrink.search.strategies import Net, register
from jaxshrink.search.strategies.activity import preactivations


def taylor_terms(net: Net) -> dict:
    """``{candidate layer: (units,)}``: first-order Taylor importance (Molchanov et al.
    2016), ``mean over examples of |1/M sum over the M positions of z * dL/dz|`` for
    each unit's output z.

    The model multiplies each unit's output by its mask, so with float masks m the
    gradient dL/dm_u at m = 1 is exactly ``sum over positions of z * dL/dz``: one
    backward pass per example (vmapped) gives every unit's term, whatever the model.
    Dead units score 0 (they output nothing).
    """
    spec = net.spec
    float_masks = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), net.masks)

    def per_example(x, y):
        grad = jax.grad(lambda m: net.loss(net.params, net.state, m, x[None], y[None]))
        return grad(float_masks)

    grads = jax.vmap(per_example)(net.x, net.y)
    shapes = jax.eval_shape(
        lambda p, s, m, x: preactivations(net.model, p, s, m, x),
        net.params,
        net.state,
        net.masks,
        net.x[:1],
    )
    out = {}
    for name, _ in masks_lib.candidate_layout(spec):
        positions = shapes[name].shape[0]  # one example: positions x units
        term = jnp.mean(jnp.abs(grads[name] / positions), axis=0)
        out[name] = jnp.where(net.masks[name], term, 0.0)
    return out


@register("taylor", max_failures=2)
def taylor_score(net: Net, minimize_cfg):
    """First-order Taylor (Molchanov et al. 2016): the least important unit (the
    smallest estimated change of the loss when it is removed) goes first."""
    del minimize_cfg
    return -masks_lib.flatten(net.spec, taylor_terms(net))
