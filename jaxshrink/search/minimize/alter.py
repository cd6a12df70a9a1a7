"""What a round does to a network: disable units (`alter`), enable them (`enable`), and
thesis 003's distortion of the weights (`distort`).

All are pure functions of one run's `train.TrainState`; the modes (`state.MODES`) are
described in the package's doc.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxshrink.core import spec as spec_lib
from jaxshrink.core import train
from jaxshrink.search.minimize.state import GATED_MODES, MODES, RELEARN_MODES


def alter(model_spec, run: train.TrainState, onehot: dict, mode: str, values=None):
    """The run with the units of `onehot` disabled in `mode` (see the package's doc).

    Args:
      model_spec: the model's spec.
      run: one run's state.
      onehot: per-unit bool tree, True for the units to disable.
      mode: one of `MODES`.
      values: ``(params, model_state)`` whose slices replace what the disabled units
        own (`Model.init_variables` for re-drawn values; `model_state` may be None to
        keep the statistics). None keeps the values in a gated mode and sets the
        params to zero in a relearning mode, the thesis's "zero values".
    """
    params, model_state = run.params, run.model_state
    if mode in RELEARN_MODES and values is None:
        values = (jax.tree.map(jnp.zeros_like, params), None)
    if values is not None:
        params, model_state = _replace_owned(model_spec, onehot, (params, model_state), values)
    others = jax.tree.map(jnp.logical_not, onehot)
    if mode in GATED_MODES:
        masks = jax.tree.map(lambda m, h: m & ~h, run.masks, onehot)
        if mode == "disabled_frozen":
            frozen = jax.tree.map(jnp.logical_not, masks)  # every disabled unit stays put
        else:  # "disabled_frozen_others_frozen": nothing trains
            frozen = jax.tree.map(jnp.ones_like, onehot)
    elif mode in RELEARN_MODES:
        masks = run.masks  # the unit stays in the network and may relearn
        frozen = run.frozen if mode == "disabled" else others
    else:
        raise ValueError(f"minimize.mode {mode!r}; allowed: {MODES}")
    return run.replace(params=params, model_state=model_state, masks=masks, frozen=frozen)


def _replace_owned(model_spec, onehot: dict, current: tuple, values: tuple) -> tuple:
    """``(params, model_state)`` of `current` with the slices the units of `onehot` own
    taken from `values` (a `model_state` of None in `values` keeps the statistics)."""
    params, model_state = current
    new_params, new_state = values
    owned = spec_lib.expand(model_spec, onehot, params)
    params = jax.tree.map(jnp.where, owned, new_params, params)
    if new_state is not None:
        model_state = {
            name: jax.tree.map(
                jnp.where,
                spec_lib.expand(model_spec, onehot, tree, collection=name),
                new_state[name],
                tree,
            )
            for name, tree in model_state.items()
        }
    return params, model_state


def enable(model_spec, run: train.TrainState, onehot: dict, values):
    """The run with the dead units of `onehot` enabled (growth), their values (params
    and model state) taken from `values` = ``(params, model_state)``, e.g. fresh ones
    from `Model.init_variables`. They train from now on; the other dead units stay
    frozen."""
    grown = alter(model_spec, run, onehot, "disabled_frozen", values)  # copies the values
    masks = jax.tree.map(jnp.logical_or, run.masks, onehot)
    return grown.replace(masks=masks, frozen=jax.tree.map(jnp.logical_not, masks))


# Thesis 003's "distorted" pruning (2.8.1): the gradients pointed mostly one way, a sign
# of a feature representation shared by all hidden units, so 003 adds random values to
# the weights ("currently rand(weights.shape)*(1-var(weights))", values between -1 and
# 1), which "allowed some weights to become unused". A round distorts its trial before
# retraining (`minimize.distort`, its scale; 0 = off), so that a rolled-back round also
# undoes its distortion. 003's "regularized" pruning is an L1 term on the loss
# (`optim.l1`); both together are its "regularized and distorted" runs.


def distort(params, key: jax.Array, scale: float):
    """Thesis 003's distortion: every kernel w (rank >= 2) gets
    ``scale * U(-1, 1) * (1 - var(w))`` added, elementwise; biases and batch-norm
    parameters are kept. `scale` 0 returns `params` unchanged."""
    if scale == 0:
        return params
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, w in zip(keys, leaves):
        if w.ndim >= 2:
            noise = jax.random.uniform(k, w.shape, w.dtype, minval=-1.0, maxval=1.0)
            w = w + scale * noise * (1.0 - jnp.var(w))
        out.append(w)
    return jax.tree.unflatten(tree, out)


def distort_live(model_spec, run: train.TrainState, key: jax.Array, scale: float):
    """The run with `distort` applied to what its live units own (disabled units keep
    their values)."""
    noisy = distort(run.params, key, scale)
    dead = jax.tree.map(jnp.logical_not, run.masks)
    kept = spec_lib.expand(model_spec, dead, run.params)
    return run.replace(params=jax.tree.map(jnp.where, kept, run.params, noisy))
