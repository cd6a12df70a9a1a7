"""Block-diagonal packing of runs (`jaxshrink.core.packed_conv`, `model.conv='packed'`):
the same values and gradients as XLA's vmapped convolution, in grouped convolutions of
K runs each."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from jax import lax

from jaxshrink.config import validate
from jaxshrink.core import convs, errors, packed_conv

HIGHEST = lax.Precision.HIGHEST
SAME5 = ((2, 2), (2, 2))


def _runs(r, b=3, hw=(8, 6), cin=5, cout=5, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(r, b, *hw, cin)).astype(np.float32)
    w = rng.normal(size=(r, k, k, cin, cout)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(w)


def _xla(x, w, pads=SAME5):
    return lax.conv_general_dilated(
        x, w, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST
    )


def _loss(conv):
    # A nonlinear function of the output, so that every output element's gradient differs.
    return lambda x, w: jnp.sum(jnp.sin(conv(x, w)))


def test_the_block_diagonal_kernel_on_a_hand_made_case():
    # Two runs, one group of both: 1x1 kernels of one input and two output channels.
    kernels = jnp.array([[[[[1.0, 2.0]]]], [[[[3.0, 4.0]]]]])  # (R=2, 1, 1, I=1, O=2)
    packed = packed_conv.block_diagonal(kernels, 2)
    assert packed.shape == (1, 1, 2, 4)
    np.testing.assert_array_equal(packed[0, 0], [[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0]])
    # Groups of one run: the kernels side by side, no zeros.
    np.testing.assert_array_equal(packed_conv.block_diagonal(kernels, 1)[0, 0], [[1, 2, 3, 4]])


@pytest.mark.parametrize("cin,cout", [(1, 5), (5, 5), (5, 1)])
@pytest.mark.parametrize("runs,k", [(4, 2), (3, 2), (4, 4), (2, 8), (1, 4)])
def test_values_and_gradients_equal_xla_under_vmap(cin, cout, runs, k):
    x, w = _runs(runs, cin=cin, cout=cout, seed=runs * 10 + k)
    conv = lambda x, w: packed_conv.conv(x, w, SAME5, HIGHEST, k)  # noqa: E731
    np.testing.assert_allclose(jax.vmap(conv)(x, w), jax.vmap(_xla)(x, w), rtol=1e-5, atol=1e-5)
    want = jax.grad(lambda x, w: jnp.sum(jax.vmap(_loss(_xla))(x, w)), (0, 1))(x, w)
    # Both gradient forms of the batched engine: grad of the summed runs ('sum'),
    # and vmap of each run's grad ('vmap').
    summed = jax.grad(lambda x, w: jnp.sum(jax.vmap(_loss(conv))(x, w)), (0, 1))(x, w)
    per_run = jax.vmap(jax.grad(_loss(conv), (0, 1)))(x, w)
    for got in (summed, per_run):
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * float(jnp.abs(e).max()))


def test_shared_inputs_and_asymmetric_padding():
    x, w = _runs(3, cin=2, cout=3)
    pads = ((1, 3), (0, 4))
    conv = lambda x, w: packed_conv.conv(x, w, pads, HIGHEST, 2)  # noqa: E731
    got = jax.vmap(conv, in_axes=(None, 0))(x[0], w)
    want = jax.vmap(lambda w: _xla(x[0], w, pads))(w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_one_run_is_xla_bit_for_bit():
    x, w = _runs(1)
    got = packed_conv.conv(x[0], w[0], SAME5, HIGHEST, 4)
    np.testing.assert_array_equal(got, _xla(x[0], w[0]))


def test_the_runs_become_grouped_convolutions_of_k_runs():
    x, w = _runs(8, cin=1, cout=5)
    conv = lambda x, w: packed_conv.conv(x, w, SAME5, HIGHEST, 4)  # noqa: E731
    text = jax.jit(jax.vmap(conv)).lower(x, w).as_text()
    # Two groups of 4 runs x 1 input channel, 4 x 5 outputs each: a (5, 5, 4, 40) kernel.
    assert "feature_group_count = 2" in text
    assert "tensor<5x5x4x40xf32>" in text


def test_the_model_option_trains_with_xlas_gradients():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(3, 2, 8, 8, 1)).astype(np.float32))

    def grads(conv):
        layer = nn.Conv(4, (5, 5), padding="SAME", precision="highest", **conv)
        params = jax.vmap(lambda k: layer.init(k, x[0]))(jax.random.split(jax.random.key(0), 3))
        loss = lambda p, x: jnp.sum(jnp.tanh(layer.apply(p, x)))  # noqa: E731
        return jax.vmap(jax.grad(loss))(params, x)

    got = grads({"conv_general_dilated": convs.conv_fn("packed:2")})
    want = grads({})
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,want", [("packed", ("packed", None)), ("packed:8", ("packed", 8))])
def test_packed_names_carry_their_runs_per_group(name, want):
    assert convs.split_name(name) == want
    c = tiny_config()
    c.model.conv = name
    validate.validate(c)


@pytest.mark.parametrize("name", ["packed:0", "packed:x", "direct:2", "packed:"])
def test_a_bad_packed_name_is_refused(name):
    with pytest.raises(ValueError, match="conv"):
        convs.split_name(name)
    c = tiny_config()
    c.model.conv = name
    with pytest.raises(errors.ConfigError, match="model.conv"):
        validate.validate(c)
