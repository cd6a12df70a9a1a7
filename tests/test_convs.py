"""The per-tap kernel gradient: XLA's forward pass bit for bit, XLA's gradients to rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from jax import lax

from jaxshrink import convs, errors, models, validate
from jaxshrink import spec as spec_lib

NHWC = ("NHWC", "HWIO", "NHWC")


def _pair(x_shape, k_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
    return x, k


def _loss(conv, padding, strides=(1, 1)):
    def loss(x, k):
        y = conv(x, k, strides, padding, dimension_numbers=NHWC, precision="highest")
        return jnp.sum(jnp.sin(y))  # a non-trivial output gradient

    return jax.grad(loss, argnums=(0, 1))


@pytest.mark.parametrize(
    "x_shape,k_shape,padding",
    [
        ((2, 8, 8, 1), (5, 5, 1, 3), "SAME"),
        ((2, 7, 9, 3), (3, 3, 3, 2), "VALID"),
        ((1, 8, 8, 2), (4, 4, 2, 2), "SAME"),  # even kernel: padding (1, 2)
        ((1, 6, 6, 2), (3, 3, 2, 4), ((2, 0), (1, 1))),
    ],
)
def test_forward_is_xla_and_gradients_equal_xla(x_shape, k_shape, padding):
    x, k = _pair(x_shape, k_shape)
    args = ((1, 1), padding)
    want = lax.conv_general_dilated(x, k, *args, dimension_numbers=NHWC, precision="highest")
    got = convs.conv_general_dilated(x, k, *args, dimension_numbers=NHWC, precision="highest")
    np.testing.assert_array_equal(got, want)
    (dx_ref, dk_ref), (dx, dk) = (
        jax.jit(_loss(f, padding))(x, k)
        for f in (lax.conv_general_dilated, convs.conv_general_dilated)
    )
    np.testing.assert_array_equal(dx, dx_ref)  # XLA's own input gradient
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-5)


def test_a_strided_convolution_is_left_to_xla():
    x, k = _pair((1, 8, 8, 2), (3, 3, 2, 2))
    ref = jax.jit(_loss(lax.conv_general_dilated, "SAME", (2, 2)))(x, k)
    got = jax.jit(_loss(convs.conv_general_dilated, "SAME", (2, 2)))(x, k)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)


def _model_grads(conv):
    c = tiny_config()
    c.model.conv = conv
    model = models.get_model(c.model, (12, 12, 1))
    params = model.init(jax.random.PRNGKey(0))
    masks = spec_lib.full(model.spec)
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 12, 12, 1)), jnp.float32)
    return jax.grad(lambda p: jnp.sum(model.apply(p, masks, x) ** 2))(params)


def test_the_model_option_trains_with_the_same_gradients():
    grads = {conv: _model_grads(conv) for conv in convs.IMPLEMENTATIONS}
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        grads["taps"],
        grads["xla"],
    )


def test_an_unknown_conv_is_refused():
    c = tiny_config()
    c.model.conv = "fast"
    with pytest.raises(errors.ConfigError, match="model.conv"):
        validate.validate(c)
