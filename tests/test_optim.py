"""Adam with per-unit freezing, static layer freezing, and the reset."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxshrink import masks as masks_lib
from jaxshrink import optim


def _params():
    return {
        "conv_0": {"kernel": jnp.ones((2, 2, 1, 3)), "bias": jnp.ones((3,))},
        "conv_1": {"kernel": jnp.ones((2, 2, 3, 1)), "bias": jnp.ones((1,))},
    }


def _cfg(**kw):
    c = ml_collections.ConfigDict(
        {"learning_rate": 0.1, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "frozen_layers": ()}
    )
    c.update(kw)
    return c


def test_frozen_units_get_exactly_zero_update_and_others_match_adam():
    params = _params()
    grads = jax.tree.map(
        lambda p: jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) + 1, params
    )
    frozen = masks_lib.full(params, False)
    frozen["conv_0"] = jnp.array([False, True, False])
    tx = optim.make_optimizer(_cfg(), params)
    state = tx.init(params)
    update = jax.jit(lambda g, s, p, f: tx.update(g, s, p, frozen=f))
    updates, _ = update(grads, state, params, frozen)

    ref_updates, _ = optax.adam(0.1).update(grads, optax.adam(0.1).init(params), params)
    assert np.all(np.asarray(updates["conv_0"]["kernel"][..., 1]) == 0.0)
    assert float(updates["conv_0"]["bias"][1]) == 0.0
    # Unfrozen units get plain Adam's update (jit vs eager may differ in the last ulp).
    ref = ref_updates["conv_0"]["kernel"][..., 0]
    np.testing.assert_allclose(updates["conv_0"]["kernel"][..., 0], ref, rtol=1e-6)
    np.testing.assert_allclose(
        updates["conv_1"]["kernel"], ref_updates["conv_1"]["kernel"], rtol=1e-6
    )


def test_new_freeze_pattern_does_not_recompile():
    params = _params()
    tx = optim.make_optimizer(_cfg(), params)
    state = tx.init(params)
    traces = []

    @jax.jit
    def update(g, s, p, f):
        traces.append(1)
        return tx.update(g, s, p, frozen=f)

    for pattern in ([False, True, False], [True, True, False], [False, False, False]):
        frozen = masks_lib.full(params, False)
        frozen["conv_0"] = jnp.array(pattern)
        update(params, state, params, frozen)
    assert len(traces) == 1


def test_static_frozen_layer_uses_optax_masked():
    params = _params()
    tx = optim.make_optimizer(_cfg(frozen_layers=("conv_1",)), params)
    updates, _ = tx.update(params, tx.init(params), params, frozen=masks_lib.full(params, False))
    assert not np.any(np.asarray(updates["conv_1"]["kernel"]))
    assert np.all(np.asarray(updates["conv_0"]["kernel"]) != 0.0)


def test_unknown_frozen_layer_is_a_clear_error():
    try:
        optim.make_optimizer(_cfg(frozen_layers=("conv_9",)), _params())
    except ValueError as e:
        assert "optim.frozen_layers" in str(e) and "conv_0" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_reset_equals_fresh_init_after_training():
    params = _params()
    tx = optim.make_optimizer(_cfg(), params)
    fresh = tx.init(params)
    state = fresh
    for _ in range(3):
        updates, state = tx.update(params, state, params, frozen=masks_lib.full(params, False))
        params = optax.apply_updates(params, updates)
    assert not all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(fresh))
    )
    reset = optim.reset(tx, params)
    assert jax.tree.structure(reset) == jax.tree.structure(fresh)
    for a, b in zip(jax.tree.leaves(reset), jax.tree.leaves(fresh)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
