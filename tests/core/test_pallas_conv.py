"""The Pallas convolution kernels (`jaxshrink.core.pallas_conv`) in interpret mode against
`lax.conv_general_dilated` at precision HIGHEST (plus bias and ReLU): values and
gradients to float32 rounding, with halos crossing tiles, rows and columns rounded up,
asymmetric pads, under `vmap` over runs and in a Flax `nn.Conv`; what they do not cover
is XLA's bit for bit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxshrink.core import convs, pallas_conv

NHWC = ("NHWC", "HWIO", "NHWC")


def _normal(rng, shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _layer_args(x_shape, cout, seed=0, runs=None):
    """Random x (NHWC), 5x5 kernel and bias, each with a leading axis of `runs` if given."""
    rng = np.random.default_rng(seed)
    lead = () if runs is None else (runs,)
    cin = x_shape[-1]
    return (
        _normal(rng, lead + x_shape),
        _normal(rng, lead + (5, 5, cin, cout)),
        _normal(rng, lead + (cout,)),
    )


def _reference(x, kernel, bias, pads, relu):
    y = lax.conv_general_dilated(
        x, kernel, (1, 1), pads, dimension_numbers=NHWC, precision=lax.Precision.HIGHEST
    )
    if bias is not None:
        y = y + bias
    return jnp.maximum(y, 0.0) if relu else y


def _close(got, want):
    """Equal to float32 rounding: relative 1e-5, absolute 1e-5 of the largest value."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _value_and_grads(layer, x, kernel, bias, weights):
    """`layer`'s output and the gradients of sum(output * weights) w.r.t. its three
    arguments (weights random: every output position has its own cotangent)."""

    def loss(x, kernel, bias):
        y = layer(x, kernel, bias)
        return jnp.sum(y * weights), y

    (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        x, kernel, bias
    )
    return y, grads


@pytest.mark.parametrize(
    "x_shape,cout,pads,tile_rows",
    [
        ((3, 16, 8, 1), 5, ((2, 2), (2, 2)), 4),  # 4 tiles of 4 rows, halos crossing them
        ((3, 16, 8, 5), 5, ((1, 3), (0, 4)), 4),  # asymmetric pads, 7 columns rounded to 8
        ((3, 12, 8, 5), 1, ((2, 2), (2, 2)), 8),  # 12 rows as 2 tiles of 8, 4 rows padded
        ((3, 8, 16, 5), 5, ((4, 0), (3, 1)), None),  # the default tile
    ],
)
def test_fused_layer_values_and_gradients_equal_xla(x_shape, cout, pads, tile_rows):
    x, kernel, bias = _layer_args(x_shape, cout)
    out_shape = (
        x_shape[0],
        *(n + lo + hi - 4 for n, (lo, hi) in zip(x_shape[1:3], pads)),
        cout,
    )
    weights = _normal(np.random.default_rng(1), out_shape)

    def pallas(x, k, b):
        return pallas_conv.conv_bias_relu(x, k, b, pads, tile_rows=tile_rows)

    y, grads = _value_and_grads(pallas, x, kernel, bias, weights)
    y_ref, grads_ref = _value_and_grads(
        lambda x, k, b: _reference(x, k, b, pads, True), x, kernel, bias, weights
    )
    assert 0.2 < np.mean(np.asarray(y_ref) > 0) < 0.8  # the ReLU's mask matters
    _close(y, y_ref)
    for got, want in zip(grads, grads_ref):
        _close(got, want)


@pytest.mark.parametrize(
    "x_shape,cout,pads",
    [
        ((3, 8, 16, 5), 5, ((0, 0), (0, 0))),  # VALID: 4 x 12 out, columns rounded to 16
        ((3, 8, 8, 5), 1, "SAME"),
    ],
)
def test_convolution_values_and_gradients_equal_xla(x_shape, cout, pads):
    x, kernel, _ = _layer_args(x_shape, cout, seed=2)
    want_y = _reference(x, kernel, None, pads, False)
    weights = _normal(np.random.default_rng(3), want_y.shape)

    def loss(conv):
        return jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) * weights), argnums=(0, 1)))

    got = loss(lambda x, k: pallas_conv.conv(x, k, pads))(x, kernel)
    want = loss(lambda x, k: _reference(x, k, None, pads, False))(x, kernel)
    _close(pallas_conv.conv(x, kernel, pads), want_y)
    for g, w in zip(got, want):
        _close(g, w)


def test_every_tile_is_written():
    """Interpret mode starts outputs as NaN: the planar output, rounding rows and
    columns included, is NaN-free when every program writes its whole block."""
    x, kernel, bias = _layer_args((3, 12, 7, 5), 5)
    pads = ((2, 2), (2, 2))
    geo = pallas_conv._Geometry(x.shape[1:3], (5, 5), pads, 5, tile_rows=8)
    assert (geo.tiles, geo.hb, geo.wb) == (2, 16, 8)
    planes = pallas_conv._forward_planes(geo.planes(x), kernel, bias, geo, True, True)
    assert planes.shape == (3, 5, 16, 8)
    assert np.isfinite(np.asarray(planes)).all()
    _close(geo.crop(planes), _reference(x, kernel, bias, pads, True))


@pytest.mark.parametrize("shared_x", [False, True])
def test_vmap_over_runs_values_and_gradients(shared_x):
    """4 runs under `vmap` (Pallas adds a grid axis), each with its own kernel and bias
    and its own or a shared input; the gradient of the sum over runs."""
    runs, pads = 4, ((2, 2), (2, 2))
    xs, kernels, biases = _layer_args((3, 8, 8, 5), 5, seed=4, runs=runs)
    x_axis = None if shared_x else 0
    if shared_x:
        xs = xs[0]

    def grads(layer):
        def loss(xs, kernels, biases):
            y = jax.vmap(layer, in_axes=(x_axis, 0, 0))(xs, kernels, biases)
            return jnp.sum(jnp.sin(y)), y

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

    def pallas(x, k, b):
        return pallas_conv.conv_bias_relu(x, k, b, pads, tile_rows=4)

    (_, y), got = grads(pallas)(xs, kernels, biases)
    (_, y_ref), want = grads(lambda x, k, b: _reference(x, k, b, pads, True))(xs, kernels, biases)
    _close(y, y_ref)
    assert got[0].shape == xs.shape
    for g, w in zip(got, want):
        _close(g, w)


@pytest.mark.parametrize("through_convs", [False, True])
def test_flax_conv_with_the_wrapper_equals_nn_conv(through_convs):
    """The wrapper as `nn.Conv`'s `conv_general_dilated`, directly and as `model.conv`
    'pallas' picks it (`convs.conv_fn`)."""
    wrapper = pallas_conv.pallas_conv_general_dilated
    if through_convs:
        wrapper = convs.conv_fn("pallas")
    x = _normal(np.random.default_rng(5), (3, 16, 8, 1))
    plain = nn.Conv(5, (5, 5), padding="SAME")
    pallas = nn.Conv(5, (5, 5), padding="SAME", conv_general_dilated=wrapper)
    params = plain.init(jax.random.key(0), x)
    got = jax.jit(pallas.apply)(params, x)
    want = nn.Conv(5, (5, 5), padding="SAME", precision="highest").apply(params, x)
    _close(got, want)


@pytest.mark.parametrize(
    "x_shape,k_shape,dtype,kwargs",
    [
        ((2, 9, 9, 1), (5, 5, 1, 5), jnp.float32, {"window_strides": (2, 2)}),
        ((2, 9, 9, 1), (5, 5, 1, 5), jnp.float32, {"rhs_dilation": (2, 2)}),
        ((2, 8, 8, 4), (3, 3, 2, 4), jnp.float32, {"feature_group_count": 2}),
        ((2, 8, 8, 2), (3, 3, 2, 4), jnp.bfloat16, {}),
        ((2, 8, 8, 16), (3, 3, 16, 4), jnp.float32, {}),  # over 8 channels
        ((2, 8, 8, 2), (3, 3, 2, 4), jnp.float32, {"padding": ((3, 0), (1, 1))}),  # pad > k-1
    ],
)
def test_what_the_kernels_do_not_cover_is_xla_bit_for_bit(
    monkeypatch, x_shape, k_shape, dtype, kwargs
):
    def not_here(*args, **kwargs):
        raise AssertionError("the Pallas kernel was called")

    monkeypatch.setattr(pallas_conv, "conv", not_here)
    rng = np.random.default_rng(6)
    x, k = (jnp.asarray(rng.normal(size=s), dtype) for s in (x_shape, k_shape))
    kwargs = {"window_strides": (1, 1), "padding": "SAME", **kwargs}
    args = dict(dimension_numbers=NHWC, precision="highest", **kwargs)
    want = lax.conv_general_dilated(x, k, **args)
    got = pallas_conv.pallas_conv_general_dilated(x, k, **args)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_the_wrapper_takes_a_covered_layer(monkeypatch):
    calls = []
    monkeypatch.setattr(pallas_conv, "conv", lambda *a, **k: calls.append(a[2]) or a[0])
    x, k, _ = _layer_args((2, 8, 8, 1), 5)
    pallas_conv.pallas_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
    assert calls == [((2, 2), (2, 2))]


@pytest.mark.parametrize(
    "out_hw,cout,rows",
    [
        ((64, 64), 5, 16),
        ((128, 128), 5, 8),
        ((256, 256), 5, 4),
        ((64, 64), 1, 32),
        ((256, 256), 1, 32),
        ((12, 8), 5, 4),  # the largest power of two dividing 12
        ((20, 20), 5, 32),  # 4 rows would be under a quarter of the cap: one padded tile
        ((8, 7), 5, 8),
    ],
)
def test_default_tile_rows(out_hw, cout, rows):
    assert pallas_conv.default_tile_rows(*out_hw, cout) == rows


def test_bad_arguments_are_refused():
    x, k, b = _layer_args((2, 8, 8, 1), 5)
    with pytest.raises(ValueError, match="pads"):
        pallas_conv.conv(x, k, ((5, 0), (2, 2)))
    with pytest.raises(ValueError, match="float32"):
        pallas_conv.conv(x.astype(jnp.bfloat16), k, "SAME")
    with pytest.raises(ValueError, match="bias"):
        pallas_conv.conv_bias_relu(x, k, b[:3], "SAME")
    with pytest.raises(ValueError, match="power of two"):
        pallas_conv.conv(x, k, "SAME", tile_rows=3)
