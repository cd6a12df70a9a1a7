"""Adam with per-unit freezing, and the thesis's optimizer reset.

Freezing comes in two kinds, because `optax.masked` takes one *static* Python bool
per leaf (a per-element or traced mask fails, see DESIGN.md):

* A whole leaf frozen for the entire run (e.g. a layer that is not to be trained,
  `config.optim.frozen_layers`) is static structure, so it uses `optax.masked` with
  `optax.set_to_zero()`.
* Individual units frozen during minimization change from round to round and from
  seed to seed in a batch. They are carried as a traced boolean tree (`frozen`, one
  bool per unit, see `masks`) and passed to `update` as an extra argument, so a new
  freeze pattern never recompiles. `freeze_units` zeroes those units' updates.

`reset(tx, params)` is the thesis's Adam reset (section 2.4: accumulators, step
count and bias-correction powers back to their initial values): it simply re-runs
`tx.init`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxshrink import masks as masks_lib


class FreezeUnitsState(NamedTuple):
    """Stateless."""


def freeze_units() -> optax.GradientTransformationExtraArgs:
    """Zeroes the updates of frozen units.

    `update(updates, state, params, *, frozen)` takes `frozen`, a per-unit boolean
    tree (True = frozen) shaped like a mask tree. Placed after Adam in the chain, the
    frozen units' parameters stay bit-for-bit unchanged, whatever Adam's moments
    hold. `frozen=None` freezes nothing.
    """

    def init_fn(params):
        del params
        return FreezeUnitsState()

    def update_fn(updates, state, params=None, *, frozen=None, **extra_args):
        del params, extra_args
        if frozen is None:
            return updates, state
        keep = masks_lib.expand(jax.tree.map(jnp.logical_not, frozen), updates)
        updates = jax.tree.map(lambda u, k: jnp.where(k, u, jnp.zeros_like(u)), updates, keep)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _static_leaf_mask(params: dict, frozen_layers) -> dict:
    """True for the leaves of the layers to train (`optax.masked` convention)."""
    return {
        name: {leaf: name not in frozen_layers for leaf in layer} for name, layer in params.items()
    }


def make_optimizer(
    optim_cfg: ml_collections.ConfigDict, params: dict
) -> optax.GradientTransformationExtraArgs:
    """Adam (thesis 2.3.2) followed by per-unit freezing and static layer freezing.

    Args:
      optim_cfg: `config.optim` with `learning_rate`, `b1`, `b2`, `eps` and
        `frozen_layers` (names of layers never trained).
      params: a params tree, used only for its structure when layers are frozen.
    """
    parts = [
        optax.adam(optim_cfg.learning_rate, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps),
        freeze_units(),
    ]
    frozen_layers = tuple(optim_cfg.get("frozen_layers", ()))
    if frozen_layers:
        unknown = sorted(set(frozen_layers) - set(params))
        if unknown:
            raise ValueError(
                f"optim.frozen_layers: unknown layers {unknown}; allowed: {sorted(params)}"
            )
        leaf_mask = _static_leaf_mask(params, frozen_layers)
        frozen_mask = jax.tree.map(lambda train: not train, leaf_mask)
        parts.append(optax.masked(optax.set_to_zero(), frozen_mask))
    return optax.chain(*parts)


def reset(tx: optax.GradientTransformation, params: dict) -> optax.OptState:
    """A fresh optimizer state: the thesis resets Adam after every change or rollback."""
    return tx.init(params)
