"""Optimizers with per-unit freezing, static layer freezing, weight decay, and the reset."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxshrink.config import schema as config_lib
from jaxshrink.config import validate
from jaxshrink.core import errors, models, optim
from jaxshrink.core import masks as masks_lib

# conv_0 (1 -> 3 units, 2x2) -> conv_1 (3 -> 1 unit, 2x2)
SPEC = models.sequential_model(["conv:3:2", "conv:1:2"], (4, 4, 1)).spec
# conv_0 (2 units, 1x1) on 2x2x1 -> flatten (4 inputs, conv unit c feeds c, c + 2) -> dense 3
FLAT = models.sequential_model(["conv:2:1", "dense:3"], (2, 2, 1)).spec


def _params():
    return {
        "conv_0": {"kernel": jnp.ones((2, 2, 1, 3)), "bias": jnp.ones((3,))},
        "conv_1": {"kernel": jnp.ones((2, 2, 3, 1)), "bias": jnp.ones((1,))},
    }


def _grads(params):
    return jax.tree.map(
        lambda p: jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) + 1, params
    )


def _cfg(**kw):
    c = ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 0.1,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "weight_decay_mode": "l2",
            "l1": 0.0,
            "frozen_layers": (),
        }
    )
    c.update(kw)
    return c


def test_frozen_units_get_exactly_zero_update_and_others_match_adam():
    params = _params()
    grads = _grads(params)
    frozen = masks_lib.full(SPEC, False)
    frozen["conv_0"] = jnp.array([False, True, False])
    tx = optim.make_optimizer(_cfg(), SPEC, params)
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
    # Freezing a unit freezes what it owns only: conv_1 still learns from its input 1.
    assert np.all(np.asarray(updates["conv_1"]["kernel"][:, :, 1, :]) != 0.0)
    # frozen=None freezes nothing.
    updates, _ = tx.update(grads, state, params)
    assert np.all(np.asarray(updates["conv_0"]["kernel"]) != 0.0)


def test_frozen_conv_unit_before_a_flatten_freezes_only_what_it_owns():
    params = {
        "conv_0": {"kernel": jnp.ones((1, 1, 1, 2)), "bias": jnp.ones((2,))},
        "dense_0": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones((3,))},
    }
    tx = optim.make_optimizer(_cfg(name="sgd"), FLAT, params)
    frozen = masks_lib.full(FLAT, False)
    frozen["conv_0"] = jnp.array([True, False])
    frozen["dense_0"] = jnp.array([False, False, True])
    grads = _grads(params)
    updates, _ = tx.update(grads, tx.init(params), params, frozen=frozen)
    # grads: conv_0 kernel [1, 2], bias [1, 2]; conv_0/0 frozen, conv_0/1 gets -0.1 * 2.
    np.testing.assert_allclose(updates["conv_0"]["kernel"], [[[[0.0, -0.2]]]], rtol=1e-6)
    np.testing.assert_allclose(updates["conv_0"]["bias"], [0.0, -0.2], rtol=1e-6)
    assert (
        float(updates["conv_0"]["kernel"][0, 0, 0, 0]) == float(updates["conv_0"]["bias"][0]) == 0
    )
    # dense_0/2 is frozen (its column and bias); the rows conv_0/0 feeds are not.
    want = -0.1 * np.asarray(grads["dense_0"]["kernel"])
    want[:, 2] = 0.0
    np.testing.assert_allclose(updates["dense_0"]["kernel"], want, rtol=1e-6)
    np.testing.assert_allclose(updates["dense_0"]["bias"], [-0.1, -0.2, 0.0], rtol=1e-6)


def test_new_freeze_pattern_does_not_recompile():
    params = _params()
    tx = optim.make_optimizer(_cfg(), SPEC, params)
    state = tx.init(params)
    traces = []

    @jax.jit
    def update(g, s, p, f):
        traces.append(1)
        return tx.update(g, s, p, frozen=f)

    for pattern in ([False, True, False], [True, True, False], [False, False, False]):
        frozen = masks_lib.full(SPEC, False)
        frozen["conv_0"] = jnp.array(pattern)
        update(params, state, params, frozen)
    assert len(traces) == 1


def test_static_frozen_layer_uses_optax_masked():
    params = _params()
    tx = optim.make_optimizer(_cfg(frozen_layers=("conv_1",)), SPEC, params)
    updates, _ = tx.update(params, tx.init(params), params, frozen=masks_lib.full(SPEC, False))
    assert not np.any(np.asarray(updates["conv_1"]["kernel"]))
    assert not np.any(np.asarray(updates["conv_1"]["bias"]))
    assert np.all(np.asarray(updates["conv_0"]["kernel"]) != 0.0)


def test_unknown_frozen_layer_is_a_clear_error():
    c = config_lib.base_config("sobel")
    c.optim.frozen_layers = ("conv_9",)
    with pytest.raises(errors.ConfigError, match="optim.frozen_layers") as err:
        validate.validate(c)  # the one place config names are rejected
    assert "conv_9" in str(err.value) and "conv_0" in str(err.value)
    model = models.get_model(c.model, (8, 8, 1))  # and the library call refuses it too
    with pytest.raises(ValueError, match="optim.frozen_layers: unknown layers"):
        optim.make_optimizer(c.optim, model.spec, jax.eval_shape(model.init, jax.random.key(0)))


def test_registry():
    assert sorted(optim.OPTIMIZERS) == ["adam", "momentum", "rmsprop", "sgd"]
    assert config_lib.base_config("sobel").optim.name == "adam"


def _one_step(cfg, params, grads):
    tx = optim.make_optimizer(cfg, SPEC, params)
    updates, _ = tx.update(grads, tx.init(params), params, frozen=masks_lib.full(SPEC, False))
    return updates


@pytest.mark.parametrize(
    "cfg, reference",
    [
        (dict(name="adam"), optax.adam(0.1, b1=0.9, b2=0.999, eps=1e-8)),
        (dict(name="sgd"), optax.sgd(0.1)),
        (dict(name="momentum", momentum=0.3), optax.sgd(0.1, momentum=0.3)),
        (
            dict(name="rmsprop", decay=0.9, momentum=0.0),
            optax.rmsprop(0.1, decay=0.9, eps=1e-8, initial_scale=1.0),
        ),
    ],
)
def test_each_optimizer_matches_optax_over_two_steps(cfg, reference):
    params, grads = _params(), _grads(_params())
    tx = optim.make_optimizer(_cfg(**cfg), SPEC, params)
    state, ref_state = tx.init(params), reference.init(params)
    for _ in range(2):
        updates, state = tx.update(grads, state, params, frozen=masks_lib.full(SPEC, False))
        want, ref_state = reference.update(grads, ref_state, params)
        for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_rmsprop_starts_its_mean_square_at_one():
    # TensorFlow 1's RMSProp: ms_1 = 0.9 * 1 + 0.1 g^2; update -lr g / sqrt(ms_1 + eps).
    params = _params()
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 2.0), params)
    updates = _one_step(_cfg(name="rmsprop", decay=0.9, momentum=0.0), params, grads)
    want = -0.1 * 2.0 / np.sqrt(0.9 + 0.1 * 4.0 + 1e-8)
    for leaf in jax.tree.leaves(updates):
        np.testing.assert_allclose(leaf, want, rtol=1e-6)


def test_weight_decay_is_l2_on_kernels_only():
    # SGD with L2: update = -lr (g + wd w) on kernels, -lr g on biases.
    params = jax.tree.map(lambda p: 2.0 * p, _params())  # every weight is 2
    grads = _grads(params)
    updates = _one_step(_cfg(name="sgd", weight_decay=0.5), params, grads)
    for name in ("conv_0", "conv_1"):
        g_k, g_b = np.asarray(grads[name]["kernel"]), np.asarray(grads[name]["bias"])
        np.testing.assert_allclose(updates[name]["kernel"], -0.1 * (g_k + 0.5 * 2.0), rtol=1e-6)
        np.testing.assert_allclose(updates[name]["bias"], -0.1 * g_b, rtol=1e-6)
    # weight_decay 0 (the default) adds nothing.
    updates = _one_step(_cfg(name="sgd", weight_decay=0.0), params, grads)
    np.testing.assert_allclose(
        updates["conv_0"]["kernel"], -0.1 * np.asarray(grads["conv_0"]["kernel"]), rtol=1e-6
    )
    # Decay never moves a frozen unit.
    tx = optim.make_optimizer(_cfg(name="sgd", weight_decay=0.5), SPEC, params)
    frozen = masks_lib.full(SPEC, False)
    frozen["conv_0"] = jnp.array([True, False, False])
    updates, _ = tx.update(grads, tx.init(params), params, frozen=frozen)
    assert not np.any(np.asarray(updates["conv_0"]["kernel"][..., 0]))


def test_decoupled_decay_is_the_update_of_thesis_004():
    # Eq. 2.41, w <- (1 - lr wd) w - lr m_hat / (sqrt(v_hat) + eps). Adam's first step
    # has m_hat = g and v_hat = g^2, so with lr 0.1, wd 0.5 and every weight 2 the
    # kernels move by -0.1 g / (g + eps) - 0.1 * 0.5 * 2 and the biases by the first
    # term only.
    params = jax.tree.map(lambda p: 2.0 * p, _params())
    grads = _grads(params)
    cfg = _cfg(weight_decay=0.5, weight_decay_mode="decoupled")
    updates = _one_step(cfg, params, grads)
    for name in ("conv_0", "conv_1"):
        g_k, g_b = np.asarray(grads[name]["kernel"]), np.asarray(grads[name]["bias"])
        adam_k, adam_b = -0.1 * g_k / (g_k + 1e-8), -0.1 * g_b / (g_b + 1e-8)
        np.testing.assert_allclose(updates[name]["kernel"], adam_k - 0.1, rtol=1e-5)
        np.testing.assert_allclose(updates[name]["bias"], adam_b, rtol=1e-5)
    # The coupled L2 form goes through Adam's scaling instead: g + wd w = g + 1, whose
    # first Adam step is again -lr (the sign), so the kernels move by -0.1 only.
    # (rtol 1e-5: float32 rounding of the bias-corrected moments.)
    coupled = _one_step(_cfg(weight_decay=0.5), params, grads)
    np.testing.assert_allclose(coupled["conv_0"]["kernel"], -0.1, rtol=1e-5)


def test_reset_equals_fresh_init_after_training():
    params = _params()
    tx = optim.make_optimizer(_cfg(), SPEC, params)
    fresh = tx.init(params)
    state = fresh
    for _ in range(3):
        updates, state = tx.update(params, state, params, frozen=masks_lib.full(SPEC, False))
        params = optax.apply_updates(params, updates)
    assert not all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(fresh))
    )
    reset = optim.reset(tx, params)
    assert jax.tree.structure(reset) == jax.tree.structure(fresh)
    for a, b in zip(jax.tree.leaves(reset), jax.tree.leaves(fresh)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
