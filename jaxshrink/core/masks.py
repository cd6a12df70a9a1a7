"""Helpers over per-unit trees: ``{layer: (units,)}``, one entry per unit.

The same shape of tree holds "alive" masks (True = unit enabled), "frozen" flags
(True = unit receives no update) and per-unit scores. Layers and their order come
from the model's `spec.ModelSpec`.

*Candidates* are the units that a minimization round may disable: the units of the
candidate layers (every layer but the output layer, unless the model says
otherwise), flattened in network order into one vector, so strategies score and
select over one array and a flat index names a unit (`candidate_name`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink.core import spec as spec_lib

full = spec_lib.full  # full(spec, value=True): every unit set to `value`


def candidate_layout(spec: spec_lib.ModelSpec) -> list[tuple[str, int]]:
    """(layer, units) of the candidate layers, in network order."""
    return [(layer.name, layer.units) for layer in spec.candidates]


def num_candidates(spec: spec_lib.ModelSpec) -> int:
    return sum(units for _, units in candidate_layout(spec))


def flatten(spec: spec_lib.ModelSpec, tree: dict) -> jax.Array:
    """Concatenates the candidate layers' per-unit values into one vector."""
    return jnp.concatenate([jnp.asarray(tree[name]) for name, _ in candidate_layout(spec)])


def unflatten(spec: spec_lib.ModelSpec, vector: jax.Array, fill=False) -> dict:
    """The inverse of `flatten`; layers that are not candidates get `fill`."""
    out, start = {}, 0
    for layer in spec.layers:
        if layer.candidate:
            out[layer.name] = vector[start : start + layer.units]
            start += layer.units
        else:
            out[layer.name] = jnp.full((layer.units,), fill, vector.dtype)
    return out


def eligible(spec: spec_lib.ModelSpec, masks: dict) -> jax.Array:
    """Candidates that may be disabled: alive, and not the last live unit of a layer."""
    parts = []
    for name, _ in candidate_layout(spec):
        alive = masks[name]
        parts.append(alive & (jnp.sum(alive) > 1))
    return jnp.concatenate(parts)


def candidate_name(spec: spec_lib.ModelSpec, index: int) -> str:
    """'conv_1/3' for a flat candidate index."""
    for name, units in candidate_layout(spec):
        if index < units:
            return f"{name}/{index}"
        index -= units
    raise IndexError(index)


def to_rows(spec: spec_lib.ModelSpec, masks: dict) -> list[list[bool]]:
    """One list of booleans per layer, in network order (rows may differ in length)."""
    return [np.asarray(masks[name]).tolist() for name in spec.names]


def count_alive(masks: dict) -> jax.Array:
    """Number of enabled units over all layers."""
    return sum(jnp.sum(m) for m in jax.tree.leaves(masks))


def start_masks(spec: spec_lib.ModelSpec, widths) -> dict:
    """A run's start inside its envelope: the first ``widths[i]`` units of layer ``i``
    alive (0 bypasses a bypassable layer); an empty `widths` keeps every unit."""
    if not len(widths):
        return full(spec)
    return {layer.name: jnp.arange(layer.units) < int(w) for layer, w in zip(spec.layers, widths)}


def layer_alive(spec: spec_lib.ModelSpec, masks: dict) -> jax.Array:
    """(layers,) bool: which maskable layers have a live unit (compute, not bypassed)."""
    return jnp.stack([jnp.any(jnp.asarray(masks[name])) for name in spec.names])


def layer_of_candidate(spec: spec_lib.ModelSpec) -> np.ndarray:
    """(candidates,) int: the position in `spec.layers` of each candidate's layer."""
    positions = {layer.name: i for i, layer in enumerate(spec.layers)}
    return np.concatenate(
        [np.full(units, positions[name], np.int32) for name, units in candidate_layout(spec)]
    )
