"""Optimizers with per-unit freezing, and the thesis's optimizer reset.

`make_optimizer(optim_cfg, model_spec, params)` chains, in this order:

1. L2 weight decay (`weight_decay` > 0, `weight_decay_mode` 'l2'): adds
   ``weight_decay * w`` to the gradient of every kernel, which is the gradient of the
   loss term ``weight_decay / 2 * sum w²`` of thesis 004 (2.5.1, eq. 2.40; "the sum is
   over all weights", so biases are not decayed); with `weight_decay_mode`
   'decoupled', the update 004 writes (eq. 2.41) instead: after the optimizer, every
   kernel shrinks by ``learning_rate * weight_decay * w`` (AdamW's form);
   L1 (`l1` > 0): adds ``l1 * sign(w)`` to the gradient of every parameter, the
   (sub)gradient of the loss term ``l1 * sum |w|`` of thesis 003's "regularized"
   pruning (2.8.1: an L1 regularizer added to the loss "to push the high bias and w2
   values closer to 0", so biases included);
2. the optimizer named by `optim_cfg.name` (`OPTIMIZERS`): Adam (thesis 001 2.3.2,
   004), Momentum (003's summation network), RMSProp (003's MNIST classifier), SGD;
3. per-unit freezing (`freeze_units`);
4. static whole-layer freezing (`frozen_layers`, with `optax.masked`).

Freezing comes in two kinds, because `optax.masked` takes one *static* Python bool
per leaf (a per-element or traced mask fails):

* A whole leaf frozen for the entire run (a layer that is not to be trained) is
  static structure, so it uses `optax.masked` with `optax.set_to_zero()`.
* Individual units frozen during minimization change from round to round and from
  run to run in a batch. They are carried as a traced boolean per-unit tree
  (`frozen`, see `masks`) and passed to `update` as an extra argument, so a new
  freeze pattern never recompiles. `freeze_units` zeroes the updates of exactly what
  those units own (`spec.expand`).

`reset(tx, params)` is the thesis's Adam reset (001 section 2.4: accumulators, step
count and bias-correction powers back to their initial values): it re-runs `tx.init`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxshrink.core import spec as spec_lib


def _adam(c):
    return optax.adam(c.learning_rate, b1=c.b1, b2=c.b2, eps=c.eps)


def _momentum(c):
    return optax.sgd(c.learning_rate, momentum=c.momentum)


def _rmsprop(c):
    # TensorFlow 1's RMSPropOptimizer (what thesis 003 used) starts its mean square
    # at 1, not 0 (optax's `initial_scale`), and adds eps inside the square root.
    return optax.rmsprop(
        c.learning_rate,
        decay=c.decay,
        eps=c.eps,
        initial_scale=1.0,
        momentum=c.momentum or None,
    )


def _sgd(c):
    return optax.sgd(c.learning_rate)


OPTIMIZERS = {"adam": _adam, "momentum": _momentum, "rmsprop": _rmsprop, "sgd": _sgd}
DECAY_MODES = ("l2", "decoupled")


class FreezeUnitsState(NamedTuple):
    """Stateless."""


def freeze_units(model_spec: spec_lib.ModelSpec) -> optax.GradientTransformationExtraArgs:
    """Zeroes the updates of frozen units.

    `update(updates, state, params, *, frozen)` takes `frozen`, a per-unit boolean
    tree (True = frozen). Placed after the optimizer in the chain, the frozen units'
    parameters stay bit-for-bit unchanged, whatever its moments hold. `frozen=None`
    freezes nothing.
    """

    def init_fn(params):
        del params
        return FreezeUnitsState()

    def update_fn(updates, state, params=None, *, frozen=None, **extra_args):
        del params, extra_args
        if frozen is None:
            return updates, state
        stop = spec_lib.expand(model_spec, frozen, updates, fill=False)
        updates = jax.tree.map(lambda u, s: jnp.where(s, jnp.zeros_like(u), u), updates, stop)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _kernels(params: dict) -> dict:
    """True for weight matrices and kernels (rank >= 2), False for biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def add_l1(strength: float) -> optax.GradientTransformation:
    """Adds ``strength * sign(p)`` to the gradient: the loss term strength * sum |p|."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        updates = jax.tree.map(lambda u, p: u + strength * jnp.sign(p), updates, params)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def decoupled_decay(rate: float, params: dict) -> optax.GradientTransformation:
    """Thesis 004's weight decay (2.5.1, eq. 2.41), after the optimizer's step:
    ``w <- (1 - rate) w - eta m_hat / sqrt(v_hat)`` with ``rate = eta * lambda``, on the
    kernels only (the decay term of "the sum over all weights"), outside Adam's
    moments, unlike the L2 gradient term which Adam rescales."""
    return optax.masked(optax.add_decayed_weights(-rate), _kernels(params))


def make_optimizer(
    optim_cfg: ml_collections.ConfigDict, model_spec: spec_lib.ModelSpec, params: dict
) -> optax.GradientTransformationExtraArgs:
    """The configured optimizer with weight decay and freezing (see the module doc).

    Args:
      optim_cfg: `config.optim`: `name`, `learning_rate` and that optimizer's
        fields, `weight_decay`, `l1`, `frozen_layers` (layers never trained).
      model_spec: the model's spec (what each unit owns).
      params: a params tree (or its shapes), for the optimizer's structure.
    """
    parts = []
    decay = float(optim_cfg.weight_decay)
    decoupled = optim_cfg.weight_decay_mode == "decoupled"
    if decay > 0 and not decoupled:
        parts.append(optax.masked(optax.add_decayed_weights(decay), _kernels(params)))
    l1 = float(optim_cfg.l1)
    if l1 > 0:
        parts.append(add_l1(l1))
    parts.append(OPTIMIZERS[optim_cfg.name](optim_cfg))
    if decay > 0 and decoupled:
        parts.append(decoupled_decay(float(optim_cfg.learning_rate) * decay, params))
    parts.append(freeze_units(model_spec))
    frozen_layers = tuple(optim_cfg.frozen_layers)
    if frozen_layers:
        unknown = sorted(set(frozen_layers) - set(model_spec.names))
        if unknown:
            raise ValueError(
                f"optim.frozen_layers: unknown layers {unknown}; allowed: {model_spec.names}"
            )
        prefixes = [tuple(name.split("/")) for name in frozen_layers]

        def is_frozen(path, _):
            keys = tuple(getattr(k, "key", k) for k in path)
            return any(keys[: len(p)] == p for p in prefixes)

        frozen = jax.tree_util.tree_map_with_path(is_frozen, params)
        parts.append(optax.masked(optax.set_to_zero(), frozen))
    return optax.chain(*parts)


def reset(tx: optax.GradientTransformation, params: dict) -> optax.OptState:
    """A fresh optimizer state: the thesis resets Adam after every change or rollback."""
    return tx.init(params)
