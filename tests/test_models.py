"""The masked FCN: shapes, initialisation, and exact zeros for disabled filters."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink import config as config_lib
from jaxshrink import masks as masks_lib
from jaxshrink import models


def _config(**model):
    c = config_lib.base_config("sobel")
    c.model.update(model)
    return c


def test_param_shapes_follow_config():
    c = _config(num_layers=4, num_filters=3, kernel_size=3)
    params = models.init(jax.random.PRNGKey(0), c)
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == {
        "conv_0": {"kernel": (3, 3, 1, 3), "bias": (3,)},
        "conv_1": {"kernel": (3, 3, 3, 3), "bias": (3,)},
        "conv_2": {"kernel": (3, 3, 3, 3), "bias": (3,)},
        "conv_3": {"kernel": (3, 3, 3, 1), "bias": (1,)},
    }


def test_thesis_init_is_truncated_normal_std_005():
    params = models.init(jax.random.PRNGKey(1), _config(num_filters=64))
    w = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
    assert np.abs(w).max() <= 2 * 0.05 + 1e-7  # cut at two standard deviations
    # std of a N(0, 0.05) truncated at +-2 std is 0.05 * 0.8796.
    assert abs(w.std() - 0.05 * 0.8796) < 0.002
    assert abs(w.mean()) < 0.003


def test_output_shape_and_relu():
    c = _config()
    params = models.init(jax.random.PRNGKey(0), c)
    apply = models.make_apply(c)
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 12, 1))
    y = apply(params, masks_lib.full(params), x)
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
    c = _config()
    params = models.init(jax.random.PRNGKey(2), c)
    masks = masks_lib.full(params)
    masks["conv_0"] = masks["conv_0"].at[1].set(False)
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, 10, 10, 1))
    want = _hidden_activations(params, masks, x, c)[-1]
    got = models.make_apply(c)(params, masks, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_disabled_filter_output_and_gradient_are_exactly_zero():
    c = _config()
    params = models.init(jax.random.PRNGKey(4), c)
    # Make every filter active on this input so "zero" cannot happen by ReLU alone.
    params = jax.tree.map(lambda p: p, params)
    params["conv_1"]["bias"] = jnp.full((5,), 0.5)
    masks = masks_lib.full(params)
    masks["conv_1"] = jnp.array([True, False, True, True, True])
    x = jax.random.uniform(jax.random.PRNGKey(5), (3, 12, 12, 1))

    acts = _hidden_activations(params, masks, x, c)
    assert np.all(np.asarray(acts[1][..., 1]) == 0.0)
    assert np.all(np.asarray(acts[1][..., 0]) > 0.0)

    apply = models.make_apply(c)

    def loss(p):
        return jnp.sum(apply(p, masks, x) ** 2) + jnp.sum(apply(p, masks, x))

    grads = jax.grad(loss)(params)
    assert np.all(np.asarray(grads["conv_1"]["kernel"][..., 1]) == 0.0)
    assert np.asarray(grads["conv_1"]["bias"])[1] == 0.0
    assert np.any(np.asarray(grads["conv_1"]["kernel"][..., 0]) != 0.0)
    # The next layer's weights that read the disabled channel get no gradient either.
    assert np.all(np.asarray(grads["conv_2"]["kernel"][:, :, 1, :]) == 0.0)


def test_masks_helpers():
    params = models.init(jax.random.PRNGKey(0), _config())
    m = masks_lib.full(params)
    m["conv_0"] = m["conv_0"].at[4].set(False)
    assert int(masks_lib.count_alive(m)) == 10
    assert masks_lib.to_rows(m) == [[True, True, True, True, False], [True] * 5, [True]]
    expanded = masks_lib.expand(m, params)
    assert expanded["conv_0"]["kernel"].shape == (5, 5, 1, 5)
    assert not bool(expanded["conv_0"]["kernel"][..., 4].any())
    assert bool(expanded["conv_0"]["bias"][:4].all())
