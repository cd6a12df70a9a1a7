"""Scores from how often a unit fires: APoZ and thesis 003's activation counts and outliers.

They assume a ReLU after every maskable layer (every network of the theses uses one),
so a unit's output is zero exactly where the value its ReLU sees is <= 0. That value is
read with Flax's `capture_intermediates`: the layer's own output or, when the spec
says a batch norm belongs to the layer, the batch norm's. They are measured on the
scoring batch: the first eval batch, or with `minimize.score_split='train'` the
training examples, as thesis 003 counts. Dead units get whatever their formula
gives: `select` and the group rules only look at eligible (live) candidates, and
layer statistics (outliers) are taken over the live units only.

Thesis 003 (2.8.1) also runs these rules "distorted" (`minimize.distort`, see
`minimize.alter.distort`) and "regularized" (`optim.l1`); neither changes a score, so
they are options of training, not strategies.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxshrink.core import masks as masks_lib
from jaxshrink.search.strategies import Net, register

OUTLIER_SLACK = 1e-6  # in activation frequency: the "outliers" boundary counts


def preactivations(model, params, state, masks, x) -> dict:
    """``{candidate layer: (examples * positions, units)}``: what each ReLU sees (the
    output of `spec.Layer.preactivation_path`; for a channel group, that of its first
    producer)."""
    paths = {layer.preactivation_path(): layer.name for layer in model.spec.candidates}
    captured = model.capture(params, state, masks, x, paths)
    out = {}
    for path, name in paths.items():
        value = captured[path]
        out[name] = value.reshape(-1, value.shape[-1])
    return out


def activity_of(net: Net) -> dict:
    """``{candidate layer: (examples * positions, units) bool}``: where a unit is active.

    Active = the unit outputs a non-zero value: its pre-activation is > 0 (ReLU) and the
    unit is alive. A convolution's unit is counted at every output position, as thesis
    003 counts "the output feature activations of a convolution operation" (2.2.3).
    """
    pre = preactivations(net.model, net.params, net.state, net.masks, net.x)
    return {name: (value > 0) & net.masks[name][None, :] for name, value in pre.items()}


@register("apoz", max_failures=2)
def apoz_score(net: Net, minimize_cfg):
    """APoZ (Hu et al. 2016, "Network Trimming"): the fraction of a unit's outputs over
    the scoring batch (examples x positions) that are zero. A unit that never fires
    scores 1, the highest possible."""
    del minimize_cfg
    act = activity_of(net)
    return masks_lib.flatten(
        net.spec, {name: 1.0 - jnp.mean(a.astype(jnp.float32), axis=0) for name, a in act.items()}
    )


@register("activation_count", max_failures=1, group="threshold", group_threshold=0.0)
def activation_count_score(net: Net, minimize_cfg):
    """Thesis 003's vanilla pruning (2.8.1): minus the number of activations.

    003 counts each unit's activations over the data and prunes every unit whose count
    is at or below an activation threshold t (0 in its experiments), repeating while a
    cycle prunes something. The score is ``-count`` (count over the examples and
    positions of the scoring batch), so the threshold group rule with
    ``group_threshold = -t`` (the default, -0) is exactly that rule: score >= -t
    <=> count <= t. It stops after one failed round (003 stops when a cycle prunes
    nothing). With `minimize.group` 'one' the least active unit goes first.
    """
    del minimize_cfg
    act = activity_of(net)
    return masks_lib.flatten(
        net.spec, {name: -jnp.sum(a, axis=0).astype(jnp.float32) for name, a in act.items()}
    )


@register("outliers", max_failures=1, group="threshold", group_threshold=0.0)
def outliers_score(net: Net, minimize_cfg):
    """Thesis 003's "outliers" (2.8.2): units far less active than their layer.

    With f the fraction of a unit's outputs that are non-zero (1 - APoZ) and the mean
    and (population) standard deviation of f over the live units of its layer, the
    score is ``(mean - 2 std) - f``: the threshold group rule with its default
    threshold 0 disables every unit with f below mean - 2 std at once. A unit on the
    boundary (to within `OUTLIER_SLACK`) counts as an outlier, so that the plausible
    tie of one silent unit among four equally active ones (f = 0, 1, 1, 1, 1: mean -
    2 std = 0 exactly) does not hang on float rounding. Note that n live units put
    none more than sqrt(n - 1) std below their mean: a layer needs at least 5 live
    units (6 for a strict outlier) before the rule can fire.
    """
    del minimize_cfg
    act = activity_of(net)
    out = {}
    for name, a in act.items():
        freq = jnp.mean(a.astype(jnp.float32), axis=0)
        alive = net.masks[name]
        n = jnp.maximum(jnp.sum(alive), 1)
        mean = jnp.sum(jnp.where(alive, freq, 0.0)) / n
        std = jnp.sqrt(jnp.sum(jnp.where(alive, (freq - mean) ** 2, 0.0)) / n)
        out[name] = (mean - 2.0 * std + OUTLIER_SLACK) - freq
    return masks_lib.flatten(net.spec, out)
