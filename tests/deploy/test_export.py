"""The compact network: dropped units, same function, hand-counted params and FLOPs, files."""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxshrink import data
from jaxshrink.config import schema as config_lib
from jaxshrink.core import models
from jaxshrink.core import spec as spec_lib
from jaxshrink.deploy import export

CFG = config_lib.base_config("sobel")  # thesis net: 1 -> 5 -> 5 -> 1, kernel 5
MODEL = models.get_model(CFG.model, (12, 12, 1))
SPEC = MODEL.spec
# Inputs from numpy: each new shape of a jax.random call costs seconds to compile.
X = jnp.asarray(np.random.default_rng(99).uniform(size=(2, 12, 12, 1)), jnp.float32)


def _masks(m0, m1):
    return {
        "conv_0": jnp.asarray(m0, bool),
        "conv_1": jnp.asarray(m1, bool),
        "conv_2": jnp.ones((1,), bool),
    }


def _shapes(model):
    return jax.eval_shape(model.init, jax.random.PRNGKey(0))


def _params(seed):
    """Random thesis params, drawn like the init scaled up 10x (std 0.5, cut at 1 around
    the mean) so that activations are O(1). Kernels have mean 0.1 and the hidden biases
    0.5, so every hidden unit is active on part of X (checked for every net of one unit
    per layer, seeds 0-3) while the ReLUs still clip. The output layer's kernel is made
    non-negative and its bias 1, so the final ReLU clips nothing (its inputs are ReLU
    outputs) and every pixel is compared."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda s: jnp.asarray(np.clip(rng.normal(0.1, 0.5, s.shape), -0.9, 1.1), jnp.float32),
        _shapes(MODEL),
    )
    for name in ("conv_0", "conv_1"):
        params[name]["bias"] = params[name]["bias"] + 0.5
    params["conv_2"]["kernel"] = jnp.abs(params["conv_2"]["kernel"])
    params["conv_2"]["bias"] = jnp.ones((1,))
    return params


def _zeros(model):
    """Params of the right shapes; counts do not depend on the values."""
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _shapes(model))


def _bits(n):
    return [bool(n >> i & 1) for i in range(5)]


def _compact_apply(model, small, masks, x):
    """The compact network, built at the kept widths and run with every unit on."""
    small_model = model.at_widths(model.spec.widths(masks))
    ones = spec_lib.full(small_model.spec)
    return small_model.apply(jax.tree.map(jnp.asarray, small), ones, x)


def test_compact_shapes_and_values():
    params = _params(0)
    m0, m1 = [1, 0, 1, 0, 1], [0, 1, 1, 1, 1]  # 3 and 4 units kept
    small = export.compact(SPEC, params, _masks(m0, m1))
    assert SPEC.widths(_masks(m0, m1)) == {"conv_0": 3, "conv_1": 4, "conv_2": 1}
    assert jax.tree.map(np.shape, small) == {
        "conv_0": {"kernel": (5, 5, 1, 3), "bias": (3,)},
        "conv_1": {"kernel": (5, 5, 3, 4), "bias": (4,)},
        "conv_2": {"kernel": (5, 5, 4, 1), "bias": (1,)},
    }
    k0, k1, k2 = (np.asarray(params[f"conv_{i}"]["kernel"]) for i in range(3))
    np.testing.assert_array_equal(small["conv_0"]["kernel"], k0[:, :, :, [0, 2, 4]])
    np.testing.assert_array_equal(
        small["conv_0"]["bias"], np.asarray(params["conv_0"]["bias"])[[0, 2, 4]]
    )
    np.testing.assert_array_equal(
        small["conv_1"]["kernel"], k1[:, :, [0, 2, 4], :][..., [1, 2, 3, 4]]
    )
    np.testing.assert_array_equal(small["conv_1"]["bias"], np.asarray(params["conv_1"]["bias"])[1:])
    np.testing.assert_array_equal(small["conv_2"]["kernel"], k2[:, :, [1, 2, 3, 4], :])
    np.testing.assert_array_equal(small["conv_2"]["bias"], params["conv_2"]["bias"])


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 31), st.integers(1, 31), st.integers(0, 3))
def test_compact_network_computes_the_masked_function(b0, b1, seed):
    m0, m1 = _bits(b0), _bits(b1)  # at least one unit alive per layer
    params, masks = _params(seed), _masks(m0, m1)
    small = export.compact(SPEC, params, masks)
    n0, n1 = sum(m0), sum(m1)
    assert SPEC.widths(masks) == {"conv_0": n0, "conv_1": n1, "conv_2": 1}
    assert small["conv_1"]["kernel"].shape == (5, 5, n0, n1)
    assert small["conv_2"]["kernel"].shape == (5, 5, n1, 1)
    want = np.asarray(MODEL.apply(params, masks, X))
    got = np.asarray(_compact_apply(MODEL, small, masks, X))
    assert got.shape == want.shape == (2, 12, 12, 1)
    assert np.all(want >= 1)  # nothing is clipped
    assert np.ptp(want) > 0.1  # and the hidden layers matter
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _fcn(kernel_size, input_shape):
    c = config_lib.base_config("sobel")
    c.model.kernel_size = kernel_size
    return models.get_model(c.model, input_shape)


def test_count_params_and_flops_by_hand():
    full = _masks([1] * 5, [1] * 5)
    zeros = _zeros(MODEL)
    # 25*1*5 + 5 + 25*5*5 + 5 + 25*5*1 + 1 = 130 + 630 + 126 = 886
    assert spec_lib.count_params(export.compact(SPEC, zeros, full)) == 886
    assert spec_lib.count_params(zeros) == 886
    # per pixel: 2*25*1*5 + 5 + 2*25*5*5 + 5 + 2*25*5*1 + 1 = 255 + 1255 + 251 = 1761
    assert spec_lib.count_flops(_fcn(5, (1, 1, 1)).spec, full) == 1761
    assert spec_lib.count_flops(_fcn(5, (10, 7, 1)).spec, full) == 1761 * 70
    assert spec_lib.count_flops(_fcn(5, (10, 7, 1)).spec) == 1761 * 70  # None: all units

    # 2 units off in conv_0 (3 kept), 1 off in conv_1 (4 kept):
    small = _masks([0, 1, 1, 0, 1], [1, 1, 0, 1, 1])
    # 25*1*3 + 3 + 25*3*4 + 4 + 25*4*1 + 1 = 78 + 304 + 101 = 483
    assert spec_lib.count_params(export.compact(SPEC, zeros, small)) == 483
    # 2*25*1*3 + 3 + 2*25*3*4 + 4 + 2*25*4*1 + 1 = 153 + 604 + 201 = 958
    assert spec_lib.count_flops(_fcn(5, (1, 1, 1)).spec, small) == 958
    assert spec_lib.count_flops(_fcn(5, (256, 256, 1)).spec, small) == 958 * 256 * 256

    # kernel 3, 2 input channels, conv_0 with 1 unit, conv_1 with 2:
    # 9*2*1 + 1 + 9*1*2 + 2 + 9*2*1 + 1 = 19 + 20 + 19 = 58
    one = _masks([0, 0, 1, 0, 0], [1, 0, 0, 0, 1])
    model = _fcn(3, (2, 3, 2))
    assert spec_lib.count_params(export.compact(model.spec, _zeros(model), one)) == 58
    # 2*9*2*1 + 1 + 2*9*1*2 + 2 + 2*9*2*1 + 1 = 37 + 38 + 37 = 112
    assert spec_lib.count_flops(model.spec, one) == 112 * 6

    # The count is the size of the compact params tree.
    sizes = sum(x.size for x in jax.tree.leaves(export.compact(SPEC, _params(0), small)))
    assert sizes == 483


# conv (3 units, 3x3, SAME) on 4x4x1 -> max-pool 2 -> 2x2x3 -> NHWC flatten (12 inputs:
# pixel p, channel c at index 3 p + c) -> dense 4 -> dense 2.
FLAT = models.sequential_model(["conv:3:3", "maxpool:2", "dense:4", "dense:2"], (4, 4, 1))
DENSE_IN = ("params", ("dense_0", "kernel"), -2)


def _flat_masks(conv, dense):
    return {
        "conv_0": jnp.asarray(conv, bool),
        "dense_0": jnp.asarray(dense, bool),
        "dense_1": jnp.ones((2,), bool),
    }


def test_conv_pool_dense_counts_by_hand():
    spec, zeros = FLAT.spec, _zeros(FLAT)
    full = _flat_masks([1, 1, 1], [1, 1, 1, 1])
    # params: conv 9*1*3 + 3 = 30; dense_0 12*4 + 4 = 52; dense_1 4*2 + 2 = 10 -> 92
    assert spec_lib.count_params(zeros) == 92
    assert spec_lib.count_params(export.compact(spec, zeros, full)) == 92
    # FLOPs: conv at 16 output pixels 16 * (2*9*1*3 + 3) = 16 * 57 = 912;
    # dense_0 2*12*4 + 4 = 100; dense_1 2*4*2 + 2 = 18 -> 1030 (pooling is not counted)
    assert spec_lib.count_flops(spec, full) == 1030

    # conv unit 1 off (2 kept: 4 pixels * 2 = 8 dense inputs), dense_0 unit 3 off (3 kept):
    masks = _flat_masks([1, 0, 1], [1, 1, 1, 0])
    # params: 9*1*2 + 2 = 20; 8*3 + 3 = 27; 3*2 + 2 = 8 -> 55
    assert spec_lib.count_params(export.compact(spec, zeros, masks)) == 55
    # FLOPs: 16 * (2*9*1*2 + 2) = 608; 2*8*3 + 3 = 51; 2*3*2 + 2 = 14 -> 673
    assert spec_lib.count_flops(spec, masks) == 673

    # conv units 0 and 2 off (1 kept: 4 dense inputs), dense_0 units 0 and 2 off (2 kept):
    masks = _flat_masks([0, 1, 0], [0, 1, 0, 1])
    # params: 9 + 1 = 10; 4*2 + 2 = 10; 2*2 + 2 = 6 -> 26
    assert spec_lib.count_params(export.compact(spec, zeros, masks)) == 26
    # FLOPs: 16 * (2*9*1*1 + 1) = 304; 2*4*2 + 2 = 18; 2*2*2 + 2 = 10 -> 332
    assert spec_lib.count_flops(spec, masks) == 332


@pytest.mark.parametrize("dead", [[0], [1], [2], [0, 2]])
def test_disabled_conv_unit_drops_every_flattened_copy(dead):
    C = 3
    conv = [c not in dead for c in range(C)]
    masks = _flat_masks(conv, [1, 1, 1, 1])
    rows = [c + C * p for c in dead for p in range(4)]  # c, c + C, c + 2C, c + 3C
    keep = np.asarray(spec_lib.input_keep(FLAT.spec, masks)[DENSE_IN])
    assert keep.shape == (12,)
    assert sorted(np.flatnonzero(~keep).tolist()) == sorted(rows)
    # The dense_1 kernel reads dense_0, all alive.
    assert np.asarray(
        spec_lib.input_keep(FLAT.spec, masks)[("params", ("dense_1", "kernel"), -2)]
    ).all()

    # kernel[i, j] = 100 i + j: a row's values say which input it read.
    kernel = np.arange(12)[:, None] * 100.0 + np.arange(4)[None, :]
    params = jax.tree.map(np.asarray, _zeros(FLAT))
    params["dense_0"]["kernel"] = kernel.astype(np.float32)
    small = export.compact(FLAT.spec, params, masks)
    kept_rows = [i for i in range(12) if i not in rows]
    np.testing.assert_array_equal(small["dense_0"]["kernel"], kernel[kept_rows])
    assert small["conv_0"]["kernel"].shape == (3, 3, 1, C - len(dead))


def test_export_writes_and_loads(tmp_path):
    model = models.get_model(CFG.model, (8, 8, 1))
    params = _params(1)
    masks = _masks([0, 1, 1, 0, 1], [1, 1, 0, 1, 1])
    path = os.path.join(tmp_path, "net")
    x = X[:1, :8, :8]
    report = export.export(path, model, params, masks, x)
    assert sorted(os.listdir(path)) == ["model.json", "params.npz"]

    assert report.layers == ("conv_0", "conv_1", "conv_2")
    assert report.widths == (3, 4, 1)
    assert report.full_widths == (5, 5, 1)
    assert report.params == 483
    assert report.full_params == 886
    assert report.flops == 958 * 64  # hand counts per pixel (above), 8x8 pixels
    assert report.full_flops == 1761 * 64
    want = np.asarray(model.apply(params, masks, x))
    assert report.max_abs_diff <= 1e-5 * max(1.0, float(np.abs(want).max()))
    assert report.inference_seconds > 0 and report.full_inference_seconds > 0
    assert report.timing_batch == (1, 8, 8, 1)
    with open(os.path.join(path, "model.json")) as f:
        meta = json.load(f)
    assert meta == {"input_shape": [8, 8, 1], **report.to_json()}

    loaded = export.load(path)
    small = export.compact(model.spec, params, masks)
    assert jax.tree.structure(loaded) == jax.tree.structure(small)
    for leaf, expected in zip(jax.tree.leaves(loaded), jax.tree.leaves(small)):
        assert leaf.dtype == expected.dtype
        np.testing.assert_array_equal(leaf, expected)
    # The loaded network runs and matches the masked one.
    got = _compact_apply(model, loaded, masks, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_export_refuses_a_mismatch(tmp_path, monkeypatch):
    params = _params(2)
    masks = _masks([1] * 5, [1, 0, 1, 1, 1])
    real = export.compact

    def wrong(model_spec, p, m):
        small = real(model_spec, p, m)
        small["conv_2"]["bias"] = small["conv_2"]["bias"] + 1.0
        return small

    monkeypatch.setattr(export, "compact", wrong)
    with pytest.raises(AssertionError, match="differs"):
        export.export(str(tmp_path), MODEL, params, masks, X[:1, :8, :8])
    assert not os.path.exists(os.path.join(tmp_path, "params.npz"))


# ---------------------------------------------------------------- every family


# family -> (config file loaded with :quick, model overrides, input shape or None for
# the data's): the test-sized member of every registered chain family (the plain
# modules' families are in tests/core/test_wrap.py).
FAMILY_CASES = {
    "fcn": ("sobel", {}, (12, 12, 1)),
    "cnn": ("mnist", {}, None),
    "mlp": ("summation", {"hidden": (16,)}, None),
}


def test_every_family_has_a_case():
    assert set(FAMILY_CASES) == set(models.CHAINS)


@functools.cache
def _family(name):
    """(model, params, x) of one registered family at a test-sized input."""
    config_name, overrides, shape = FAMILY_CASES[name]
    c = load_config(config_name, "quick")
    c.model.update(overrides)
    shape = shape or data.input_shape(c.data)
    assert c.model.name == name
    model = models.get_model(c.model, shape)
    # LeCun-scaled kernels and positive biases keep most ReLUs active; the output
    # layer is made non-negative with bias 1 so a final ReLU clips nothing.
    rng = np.random.default_rng(0)
    params = {}
    for layer, shapes in _shapes(model).items():
        kernel = rng.normal(
            0, 1 / math.sqrt(math.prod(shapes["kernel"].shape[:-1])), shapes["kernel"].shape
        )
        bias = rng.uniform(0, 0.5, shapes["bias"].shape)
        if layer == model.layers[-1]:
            kernel, bias = np.abs(kernel), np.ones_like(bias)
        params[layer] = {
            "kernel": jnp.asarray(kernel, jnp.float32),
            "bias": jnp.asarray(bias, jnp.float32),
        }
    x = jnp.asarray(rng.uniform(size=(2, *shape)), jnp.float32)
    return model, params, x


@pytest.mark.parametrize("name", sorted(models.CHAINS))
@settings(max_examples=6, deadline=None)  # ~0.5 s per example: a new compact shape each
@given(st.data())
def test_every_family_masked_equals_compact(name, draw):
    model, params, x = _family(name)
    masks = {}
    for layer in model.spec.layers:
        if not layer.candidate:
            masks[layer.name] = jnp.ones((layer.units,), bool)
            continue
        units = layer.units
        bits = draw.draw(st.lists(st.booleans(), min_size=units, max_size=units), label=layer.name)
        bits[draw.draw(st.integers(0, units - 1), label="kept")] = True  # >= 1 unit per layer
        masks[layer.name] = jnp.asarray(bits, bool)
    small = export.compact(model.spec, params, masks)
    widths = model.spec.widths(masks)
    for layer in model.spec.layers:
        assert small[layer.name]["bias"].shape == (widths[layer.name],)
    want = np.asarray(model.apply(params, masks, x))
    got = np.asarray(_compact_apply(model, small, masks, x))
    assert got.shape == want.shape
    assert np.any(want != 0)
    np.testing.assert_allclose(got, want, atol=1e-5)
