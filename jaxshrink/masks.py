"""Helpers over the boolean per-unit mask pytree.

A mask tree maps each maskable layer name to a boolean vector with one entry per
output unit (a conv filter or a dense neuron). The same shape of tree is used for
"disabled" masks (True = unit alive) and for "frozen" flags (True = unit receives no
update). Output units are the last axis of every parameter leaf (Flax's layout for
`Conv` and `Dense` kernels and for biases), which is what `expand` relies on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def full(params: dict, value: bool = True) -> dict:
    """A mask tree with every unit set to `value`, shaped after `params`' biases."""
    return {name: jnp.full(layer["bias"].shape[-1:], value, bool) for name, layer in params.items()}


def expand(unit_tree: dict, params: dict) -> dict:
    """Broadcasts per-unit values onto every parameter leaf of the unit's layer.

    Args:
      unit_tree: ``{layer: (units,)}`` array of any dtype.
      params: ``{layer: {leaf: (..., units)}}``.

    Returns:
      A tree shaped like `params` where ``out[layer][leaf][..., u] = unit_tree[layer][u]``.
    """
    return {
        name: {leaf: jnp.broadcast_to(unit_tree[name], p.shape) for leaf, p in layer.items()}
        for name, layer in params.items()
    }


def layer_names(mask_tree: dict) -> list[str]:
    """Layer names in network order (``conv_0``, ``conv_1``, ... sorted numerically)."""
    return sorted(mask_tree, key=lambda n: (n.rstrip("0123456789"), int(n.split("_")[-1])))


def to_rows(mask_tree: dict) -> list[list[bool]]:
    """One list of booleans per layer, in network order (rows may differ in length)."""
    return [np.asarray(mask_tree[n]).tolist() for n in layer_names(mask_tree)]


def count_alive(mask_tree: dict) -> jax.Array:
    """Number of enabled units over all layers."""
    return sum(jnp.sum(m) for m in jax.tree.leaves(mask_tree))
