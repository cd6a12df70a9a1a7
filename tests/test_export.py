"""The compact network: dropped units, same function, hand-counted params and FLOPs, files."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxshrink import config as config_lib
from jaxshrink import export, models

CFG = config_lib.base_config("sobel")  # thesis net: 1 -> 5 -> 5 -> 1, kernel 5
X = jax.random.uniform(jax.random.PRNGKey(99), (2, 12, 12, 1))


def _masks(m0, m1):
    return {
        "conv_0": jnp.asarray(m0, bool),
        "conv_1": jnp.asarray(m1, bool),
        "conv_2": jnp.ones((1,), bool),
    }


def _params(seed):
    """Random thesis params, scaled up so that activations are O(1); the output layer's
    kernel is made non-negative and its bias 1, so the final ReLU clips nothing (its
    inputs are ReLU outputs) and every pixel is compared."""
    params = models.init(jax.random.PRNGKey(seed), CFG)
    params = jax.tree.map(lambda p: 10.0 * p, params)
    params["conv_2"]["kernel"] = jnp.abs(params["conv_2"]["kernel"])
    params["conv_2"]["bias"] = jnp.ones((1,))
    return params


def _bits(n):
    return [bool(n >> i & 1) for i in range(5)]


def test_compact_shapes_and_values():
    params = _params(0)
    m0, m1 = [1, 0, 1, 0, 1], [0, 1, 1, 1, 1]  # 3 and 4 units kept
    small = export.compact(params, _masks(m0, m1))
    assert export.widths(small) == (3, 4, 1)
    assert jax.tree.map(jnp.shape, small) == {
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
    small = export.compact(params, masks)
    n0, n1 = sum(m0), sum(m1)
    assert export.widths(small) == (n0, n1, 1)
    assert small["conv_1"]["kernel"].shape == (5, 5, n0, n1)
    assert small["conv_2"]["kernel"].shape == (5, 5, n1, 1)
    want = np.asarray(models.make_apply(CFG)(params, masks, X))
    got = np.asarray(export.make_compact_apply(CFG.model, small)(small, X))
    assert got.shape == want.shape == (2, 12, 12, 1)
    assert np.all(want >= 1)  # nothing is clipped
    assert np.ptp(want) > 0.1  # and the hidden layers matter
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_count_params_and_flops_by_hand():
    full = _masks([1] * 5, [1] * 5)
    # 25*1*5 + 5 + 25*5*5 + 5 + 25*5*1 + 1 = 130 + 630 + 126 = 886
    assert export.count_params(full, 5) == 886
    # per pixel: 2*25*1*5 + 5 + 2*25*5*5 + 5 + 2*25*5*1 + 1 = 255 + 1255 + 251 = 1761
    assert export.count_flops(full, 5, 1, 1) == 1761
    assert export.count_flops(full, 5, 10, 7) == 1761 * 70

    # 2 units off in conv_0 (3 kept), 1 off in conv_1 (4 kept):
    small = _masks([0, 1, 1, 0, 1], [1, 1, 0, 1, 1])
    # 25*1*3 + 3 + 25*3*4 + 4 + 25*4*1 + 1 = 78 + 304 + 101 = 483
    assert export.count_params(small, 5) == 483
    # 2*25*1*3 + 3 + 2*25*3*4 + 4 + 2*25*4*1 + 1 = 153 + 604 + 201 = 958
    assert export.count_flops(small, 5, 1, 1) == 958
    assert export.count_flops(small, 5, 256, 256) == 958 * 256 * 256

    # kernel 3, 2 input channels, conv_0 with 1 unit, conv_1 with 2:
    # 9*2*1 + 1 + 9*1*2 + 2 + 9*2*1 + 1 = 19 + 20 + 19 = 58
    one = _masks([0, 0, 1, 0, 0], [1, 0, 0, 0, 1])
    assert export.count_params(one, 3, in_channels=2) == 58
    # 2*9*2*1 + 1 + 2*9*1*2 + 2 + 2*9*2*1 + 1 = 37 + 38 + 37 = 112
    assert export.count_flops(one, 3, 2, 3, in_channels=2) == 112 * 6

    # The count is the size of the compact params tree.
    sizes = sum(x.size for x in jax.tree.leaves(export.compact(_params(0), small)))
    assert sizes == 483


def test_export_writes_and_loads(tmp_path):
    params = _params(1)
    masks = _masks([0, 1, 1, 0, 1], [1, 1, 0, 1, 1])
    path = os.path.join(tmp_path, "net")
    x = X[:1, :8, :8]
    report = export.export(path, CFG.model, params, masks, models.make_apply(CFG), x)
    assert sorted(os.listdir(path)) == ["model.json", "params.npz"]

    assert report["widths"] == [3, 4, 1]
    assert report["full_widths"] == [5, 5, 1]
    assert report["params"] == export.count_params(masks, 5) == 483
    assert report["full_params"] == 886
    want = np.asarray(models.make_apply(CFG)(params, masks, x))
    assert report["max_abs_diff"] <= 1e-5 * max(1.0, float(np.abs(want).max()))
    assert report["inference_seconds"] > 0 and report["full_inference_seconds"] > 0
    assert report["timing_batch"] == [1, 8, 8, 1]
    with open(os.path.join(path, "model.json")) as f:
        meta = json.load(f)
    assert meta == {"kernel_size": 5, "in_channels": 1, **report}

    loaded = export.load(path)
    small = export.compact(params, masks)
    assert jax.tree.structure(loaded) == jax.tree.structure(small)
    for leaf, expected in zip(jax.tree.leaves(loaded), jax.tree.leaves(small)):
        assert leaf.dtype == expected.dtype
        np.testing.assert_array_equal(leaf, expected)
    # The loaded network runs and matches the masked one.
    got = export.make_compact_apply(CFG.model, loaded)(loaded, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_export_refuses_a_mismatch(tmp_path):
    params = _params(2)
    masks = _masks([1] * 5, [1, 0, 1, 1, 1])

    def wrong(p, m, x):
        return models.make_apply(CFG)(p, m, x) + 1.0

    with pytest.raises(AssertionError, match="differs"):
        export.export(str(tmp_path), CFG.model, params, masks, wrong, X[:1, :8, :8])
    assert not os.path.exists(os.path.join(tmp_path, "params.npz"))
