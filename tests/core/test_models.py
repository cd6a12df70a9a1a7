"""The masked networks: shapes, initialisation, and exact zeros for disabled units."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink.config import schema as config_lib
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import models
from jaxshrink.core import spec as spec_lib


def _config(**model):
    c = config_lib.base_config("sobel")
    c.model.update(model)
    return c


def _model(c, shape=(12, 12, 1)):
    return models.get_model(c.model, shape)


FCN = _model(_config())  # the thesis net 1 -> 5 -> 5 -> 1, kernel 5; any input size


def _uniform(seed, shape):
    """Inputs from numpy: each new shape of a jax.random call costs seconds to compile."""
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def _fcn_params(seed):
    """Params of the thesis FCN drawn like its init (normal, std 0.05, cut at 2 std)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(FCN.init, jax.random.PRNGKey(0))
    return jax.tree.map(
        lambda s: jnp.asarray(np.clip(rng.normal(0, 0.05, s.shape), -0.1, 0.1), jnp.float32),
        shapes,
    )


def test_param_shapes_follow_config():
    c = _config(num_layers=4, num_filters=3, kernel_size=3)
    shapes = jax.tree.map(jnp.shape, jax.eval_shape(_model(c, (8, 8, 1)).init, jax.random.key(0)))
    assert shapes == {
        "conv_0": {"kernel": (3, 3, 1, 3), "bias": (3,)},
        "conv_1": {"kernel": (3, 3, 3, 3), "bias": (3,)},
        "conv_2": {"kernel": (3, 3, 3, 3), "bias": (3,)},
        "conv_3": {"kernel": (3, 3, 3, 1), "bias": (1,)},
    }


def test_thesis_init_is_truncated_normal_std_005():
    # An 'rbg' key compiles in a fraction of the default threefry's time on a CPU.
    params = _model(_config(num_filters=64)).init(jax.random.key(1, impl="rbg"))
    w = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
    assert np.abs(w).max() <= 2 * 0.05 + 1e-7  # cut at two standard deviations
    # std of a N(0, 0.05) truncated at +-2 std is 0.05 * 0.8796.
    assert abs(w.std() - 0.05 * 0.8796) < 0.002
    assert abs(w.mean()) < 0.003


def test_output_shape_and_relu():
    model = _model(_config(), (16, 12, 1))
    params = model.init(jax.random.key(0, impl="rbg"))
    x = _uniform(1, (2, 16, 12, 1))
    y = model.apply(params, masks_lib.full(model.spec), x)
    assert y.shape == (2, 16, 12, 1)
    assert float(y.min()) >= 0.0


def _hidden_activations(params, masks, x, c):
    """Layer outputs, computed with lax.conv directly (independent of Flax)."""
    outs = []
    for i in range(c.model.num_layers):
        p = params[f"conv_{i}"]
        x = jax.lax.conv_general_dilated(
            x,
            p["kernel"],
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision="highest",
        )
        x = jax.nn.relu(x + p["bias"]) * masks[f"conv_{i}"]
        outs.append(x)
    return outs


def test_apply_matches_plain_convolutions():
    c, model = _config(), FCN
    params = _fcn_params(2)
    masks = masks_lib.full(model.spec)
    masks["conv_0"] = masks["conv_0"].at[1].set(False)
    x = _uniform(3, (2, 10, 10, 1))
    want = _hidden_activations(params, masks, x, c)[-1]
    got = model.apply(params, masks, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_disabled_filter_output_and_gradient_are_exactly_zero():
    c, model = _config(), FCN
    params = _fcn_params(4)
    # Make every filter active on this input so "zero" cannot happen by ReLU alone.
    params = jax.tree.map(lambda p: p, params)
    params["conv_1"]["bias"] = jnp.full((5,), 0.5)
    masks = masks_lib.full(model.spec)
    masks["conv_1"] = jnp.array([True, False, True, True, True])
    x = _uniform(5, (3, 12, 12, 1))

    acts = _hidden_activations(params, masks, x, c)
    assert np.all(np.asarray(acts[1][..., 1]) == 0.0)
    assert np.all(np.asarray(acts[1][..., 0]) > 0.0)

    def loss(p):
        return jnp.sum(model.apply(p, masks, x) ** 2) + jnp.sum(model.apply(p, masks, x))

    grads = jax.grad(loss)(params)
    assert np.all(np.asarray(grads["conv_1"]["kernel"][..., 1]) == 0.0)
    assert np.asarray(grads["conv_1"]["bias"])[1] == 0.0
    assert np.any(np.asarray(grads["conv_1"]["kernel"][..., 0]) != 0.0)
    # The next layer's weights that read the disabled channel get no gradient either.
    assert np.all(np.asarray(grads["conv_2"]["kernel"][:, :, 1, :]) == 0.0)


def test_masks_helpers():
    model = FCN
    params = _fcn_params(0)
    m = masks_lib.full(model.spec)
    m["conv_0"] = m["conv_0"].at[4].set(False)
    assert int(masks_lib.count_alive(m)) == 10
    assert masks_lib.to_rows(model.spec, m) == [
        [True, True, True, True, False],
        [True] * 5,
        [True],
    ]
    expanded = spec_lib.expand(model.spec, m, params)
    assert expanded["conv_0"]["kernel"].shape == (5, 5, 1, 5)
    assert not bool(expanded["conv_0"]["kernel"][..., 4].any())
    assert bool(expanded["conv_0"]["bias"][:4].all())
    assert bool(expanded["conv_0"]["kernel"][..., :4].all())


# ------------------------------------------------------------------ through a flatten

# conv (3 units, 3x3, SAME) on 4x4 -> max-pool 2 -> 2x2x3 -> NHWC flatten (12 inputs:
# pixel p, channel c at index 3 p + c) -> dense 4 -> dense 2.
FLAT_LAYERS = ["conv:3:3", "maxpool:2", "dense:4", "dense:2"]
C, OFF = 3, 1  # conv units; the disabled one
DEAD_ROWS = [OFF, OFF + C, OFF + 2 * C, OFF + 3 * C]  # 1, 4, 7, 10


def _flat_net():
    """Hand-set params that keep every unit active on positive inputs (no ReLU zeros),
    so a change in any live path reaches the output."""
    model = models.sequential_model(FLAT_LAYERS, (4, 4, 1))
    rng = np.random.default_rng(7)
    params = {
        "conv_0": {
            "kernel": jnp.asarray(np.abs(rng.normal(size=(3, 3, 1, 3))) + 0.1, jnp.float32),
            "bias": jnp.ones((3,)),
        },
        "dense_0": {
            "kernel": jnp.asarray(0.1 * rng.normal(size=(12, 4)), jnp.float32),
            "bias": jnp.full((4,), 10.0),
        },
        "dense_1": {
            "kernel": jnp.asarray(np.abs(rng.normal(size=(4, 2))) + 0.1, jnp.float32),
            "bias": jnp.zeros((2,)),
        },
    }
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, jax.eval_shape(model.init, jax.random.PRNGKey(0))
    )
    masks = masks_lib.full(model.spec)
    masks["conv_0"] = masks["conv_0"].at[OFF].set(False)
    x = _uniform(8, (2, 4, 4, 1))
    return model, params, masks, x


def _dense_input(model, params, masks, x):
    """What dense_0 reads: the flattened, pooled, masked conv output."""
    seen = {}

    def record(next_fun, args, kwargs, context):
        if context.module.name == "dense_0" and context.method_name == "__call__":
            seen["x"] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(params, masks, x)
    return np.asarray(seen["x"])


def test_disabled_conv_unit_zeroes_exactly_the_dense_inputs_it_feeds():
    model, params, masks, x = _flat_net()
    inputs = _dense_input(model, params, masks, x)
    assert inputs.shape == (2, 12)
    dead = np.zeros(12, bool)
    dead[DEAD_ROWS] = True
    assert np.all(inputs[:, dead] == 0.0)  # the unit's own output, at every pixel
    assert np.all(inputs[:, ~dead] > 0.0)  # everything else is live

    want = np.asarray(model.apply(params, masks, x))
    for row in range(12):
        kernel = params["dense_0"]["kernel"].at[row].add(1.0)
        changed = {**params, "dense_0": {**params["dense_0"], "kernel": kernel}}
        got = np.asarray(model.apply(changed, masks, x))
        if row in DEAD_ROWS:
            np.testing.assert_array_equal(got, want, err_msg=f"row {row}")
        else:
            assert np.all(np.abs(got - want) > 1e-3), row
    # The disabled unit's own weights do not matter either.
    conv = {"kernel": params["conv_0"]["kernel"].at[..., OFF].add(5.0), "bias": jnp.ones(3)}
    conv["bias"] = conv["bias"].at[OFF].set(-3.0)
    np.testing.assert_array_equal(model.apply({**params, "conv_0": conv}, masks, x), want)


def test_disabled_conv_unit_gets_exactly_zero_gradient_through_a_flatten():
    model, params, masks, x = _flat_net()

    def loss(p):
        y = model.apply(p, masks, x)
        return jnp.sum(y**2) + jnp.sum(y)

    grads = jax.grad(loss)(params)
    conv_k, conv_b = np.asarray(grads["conv_0"]["kernel"]), np.asarray(grads["conv_0"]["bias"])
    assert np.all(conv_k[..., OFF] == 0.0) and conv_b[OFF] == 0.0
    for live in (0, 2):
        assert np.all(conv_k[..., live] != 0.0) and conv_b[live] != 0.0
    dense_k = np.asarray(grads["dense_0"]["kernel"])
    dead = np.zeros(12, bool)
    dead[DEAD_ROWS] = True
    assert np.all(dense_k[dead] == 0.0)
    assert np.all(dense_k[~dead] != 0.0)


def test_disabled_dense_unit_zeroes_its_output_and_the_next_rows():
    model, params, masks, x = _flat_net()
    masks = masks_lib.full(model.spec)
    masks["dense_0"] = jnp.array([True, True, False, True])

    def loss(p):
        return jnp.sum(model.apply(p, masks, x) ** 2)

    grads = jax.grad(loss)(params)
    assert np.all(np.asarray(grads["dense_0"]["kernel"][:, 2]) == 0.0)
    assert float(grads["dense_0"]["bias"][2]) == 0.0
    assert np.all(np.asarray(grads["dense_1"]["kernel"][2]) == 0.0)
    assert np.all(np.asarray(grads["dense_1"]["kernel"])[[0, 1, 3]] != 0.0)
    want = model.apply(params, masks, x)
    k1 = params["dense_1"]["kernel"].at[2].add(1.0)
    changed = {**params, "dense_1": {**params["dense_1"], "kernel": k1}}
    np.testing.assert_array_equal(model.apply(changed, masks, x), want)


def test_thesis_004_initialisation_scales_by_fan_in():
    # 'he' (004, 2.6 and A.4): std sqrt(2 / n) behind a ReLU, sqrt(1 / n) for the first
    # layer, zero biases; n = kernel height * width * input channels.
    model = models.sequential_model(
        ("conv:64:5", "dense:256", "dense:10"), (8, 8, 4), init_scheme="he"
    )
    params = model.init(jax.random.PRNGKey(0))
    wants = {"conv_0": (1 / (5 * 5 * 4)) ** 0.5, "dense_0": (2 / (8 * 8 * 64)) ** 0.5}
    wants["dense_1"] = (2 / 256) ** 0.5
    for name, want in wants.items():
        kernel = np.asarray(params[name]["kernel"])
        # Thousands of draws: the sample std is within 5% of the scale, and the
        # normal is not truncated (some draws beyond 2 std).
        assert abs(kernel.std() / want - 1) < 0.05, name
        assert np.abs(kernel).max() > 2.5 * want, name
        assert not np.any(np.asarray(params[name]["bias"]))
