"""Weight quantization: exact grids, the half-step error bound, hand-computed codes and
sizes on the thesis network, and the bit-width search's threshold rule."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from jaxshrink.config import schema as config_lib
from jaxshrink.core import models
from jaxshrink.deploy import quantize as qz

CFG = config_lib.base_config("sobel")  # thesis net: 1 -> 5 -> 5 -> 1, kernel 5
MODEL = models.get_model(CFG.model, (12, 12, 1))
SPEC = MODEL.spec
SCHEMES = [
    qz.Scheme(bits, symmetric, per_channel)
    for bits in range(2, 9)
    for symmetric in (True, False)
    for per_channel in (True, False)
]


@pytest.fixture(scope="module")
def params():
    """Random params of the thesis net's shapes (drawn in numpy: no init to compile)."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(MODEL.init, jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), shapes)


# ------------------------------------------------------------------------------ grids


def test_grid():
    assert qz.grid(qz.Scheme(8)) == (-127, 127)
    assert qz.grid(qz.Scheme(2)) == (-1, 1)
    assert qz.grid(qz.Scheme(8, symmetric=False)) == (0, 255)
    assert qz.grid(qz.Scheme(3, symmetric=False)) == (0, 7)


def test_symmetric_8_bits_on_the_grid_round_trips_exactly():
    k = np.arange(-127, 128, dtype=np.float32)  # includes +-127, so max|w| = 127 * scale
    w = k * np.float32(2**-7)
    qt = qz.quantize(w, qz.Scheme(8, per_channel=False))
    np.testing.assert_array_equal(np.asarray(qt.q), k.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(qt.scale), [np.float32(2**-7)])
    np.testing.assert_array_equal(np.asarray(qt.zero_point), [0])
    np.testing.assert_array_equal(np.asarray(qz.dequantize(qt)), w)
    # Per channel: two channels with their own power-of-two scales.
    w2 = np.stack([k * np.float32(2**-7), k[::-1] * np.float32(2**-3)], axis=-1)
    out = qz.fake_quantize(w2, qz.Scheme(8))
    assert out.dtype == np.float32 and out.shape == w2.shape
    np.testing.assert_array_equal(np.asarray(out), w2)


def test_asymmetric_8_bits_on_the_grid_round_trips_exactly():
    k = np.arange(256, dtype=np.float32)
    w = (k - 64) * np.float32(2**-8)  # lo = -0.25, hi = 191/256: scale 2^-8, zero point 64
    qt = qz.quantize(w, qz.Scheme(8, symmetric=False, per_channel=False))
    np.testing.assert_array_equal(np.asarray(qt.scale), [np.float32(2**-8)])
    np.testing.assert_array_equal(np.asarray(qt.zero_point), [64])
    np.testing.assert_array_equal(np.asarray(qt.q), k.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(qz.dequantize(qt)), w)


@pytest.mark.parametrize("scheme", SCHEMES, ids=str)
def test_off_the_grid_error_is_at_most_half_a_step(scheme):
    w = np.random.default_rng(scheme.bits).normal(0.2, 1.0, (3, 4, 5)).astype(np.float32)
    qt = qz.quantize(w, scheme)
    qmin, qmax = qz.grid(scheme)
    q = np.asarray(qt.q)
    assert q.dtype == np.int32 and q.min() >= qmin and q.max() <= qmax
    scale = np.asarray(qt.scale)
    err = np.abs(np.asarray(qz.dequantize(qt)) - w)
    assert np.all(err <= scale * (0.5 + 1e-4)), (err / scale).max()


# ---------------------------------------------------------------------- hand examples


def test_symmetric_hand_example():
    # 2 bits: qmax 1. Channel 0 (0.5, 0.25): scale 0.5, 0.25 / 0.5 = 0.5 rounds to even 0.
    # Channel 1 (-1, 2): scale 2, -1 / 2 = -0.5 rounds to 0, 2 / 2 = 1.
    w = np.array([[0.5, -1.0], [0.25, 2.0]], np.float32)
    qt = qz.quantize(w, qz.Scheme(2))
    np.testing.assert_array_equal(np.asarray(qt.q), [[1, 0], [0, 1]])
    np.testing.assert_array_equal(np.asarray(qt.scale), [[0.5, 2.0]])
    np.testing.assert_array_equal(np.asarray(qt.zero_point), [[0, 0]])
    np.testing.assert_array_equal(np.asarray(qz.dequantize(qt)), [[0.5, 0.0], [0.0, 2.0]])


def test_asymmetric_hand_example():
    # 2 bits: qmax 3. Channel 0 (-1, 0.5, 2): lo -1, hi 2, scale 1, zero point 1,
    # codes round(w) + 1 = (0, 1, 3) (0.5 rounds to even 0).
    # Channel 1 (0, 3, 1.5): lo 0, hi 3, scale 1, zero point 0, codes (0, 3, 2).
    w = np.array([[-1.0, 0.0], [0.5, 3.0], [2.0, 1.5]], np.float32)
    qt = qz.quantize(w, qz.Scheme(2, symmetric=False))
    np.testing.assert_array_equal(np.asarray(qt.q), [[0, 0], [1, 3], [3, 2]])
    np.testing.assert_array_equal(np.asarray(qt.scale), [[1.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(qt.zero_point), [[1, 0]])
    np.testing.assert_array_equal(
        np.asarray(qz.dequantize(qt)), [[-1.0, 0.0], [0.0, 3.0], [2.0, 2.0]]
    )
    # Per tensor: lo -1, hi 3, scale 4/3, zero point round(0.75) = 1; w / scale =
    # (-0.75, 0, 0.375, 2.25, 0.75, 1.875) rounds to (-1, 0, 0, 2, 1, 2), plus 1.
    w = np.array([[-1.0, 0.0], [0.5, 3.0], [1.0, 2.5]], np.float32)
    qt = qz.quantize(w, qz.Scheme(2, symmetric=False, per_channel=False))
    np.testing.assert_array_equal(np.asarray(qt.zero_point), [[1]])
    np.testing.assert_allclose(np.asarray(qt.scale), [[4 / 3]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(qt.q), [[0, 1], [1, 3], [2, 3]])


@pytest.mark.parametrize("symmetric", [True, False])
def test_scale_shapes_and_an_all_zero_channel(symmetric):
    w = np.random.default_rng(0).normal(size=(5, 5, 1, 5)).astype(np.float32)
    w[..., 2] = 0.0
    per_channel = qz.quantize(w, qz.Scheme(4, symmetric))
    per_tensor = qz.quantize(w, qz.Scheme(4, symmetric, per_channel=False))
    assert per_channel.scale.shape == per_channel.zero_point.shape == (1, 1, 1, 5)
    assert per_tensor.scale.shape == per_tensor.zero_point.shape == (1, 1, 1, 1)
    assert per_channel.scale.dtype == np.float32 and per_channel.zero_point.dtype == np.int32
    assert float(per_channel.scale[0, 0, 0, 2]) == 1.0
    assert np.all(np.asarray(per_channel.q)[..., 2] == np.asarray(per_channel.zero_point)[..., 2])
    assert np.all(np.asarray(qz.dequantize(per_channel))[..., 2] == 0.0)
    # Other axes as the channel axis.
    assert qz.quantize(w, qz.Scheme(4, symmetric), axis=0).scale.shape == (5, 1, 1, 1)


def test_jit_with_a_static_scheme_matches_eager():
    w = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    scheme = qz.Scheme(5, symmetric=False)
    jitted = jax.jit(qz.fake_quantize, static_argnames=("scheme", "axis"))
    np.testing.assert_array_equal(
        np.asarray(jitted(w, scheme=scheme, axis=-1)), np.asarray(qz.fake_quantize(w, scheme))
    )


# -------------------------------------------------------------------- thesis network


def test_quantize_params_changes_only_kernels(params):
    before = {name: np.array(params[name]["kernel"]) for name in SPEC.names}
    scheme = qz.Scheme(3, symmetric=False)
    out = qz.quantize_params(SPEC, params, scheme)
    table = qz.codes(SPEC, params, scheme)
    for name in SPEC.names:
        kernel = np.asarray(out[name]["kernel"])
        assert kernel.dtype == np.float32 and kernel.shape == before[name].shape
        assert not np.array_equal(kernel, before[name])
        assert out[name]["bias"] is params[name]["bias"]
        np.testing.assert_array_equal(np.asarray(params[name]["kernel"]), before[name])
        # On the grid: exactly the dequantized codes, with codes in 0..7.
        assert isinstance(table[name].q, np.ndarray)
        assert table[name].q.min() >= 0 and table[name].q.max() <= 7
        np.testing.assert_array_equal(kernel, np.asarray(qz.dequantize(table[name])))
        assert table[name].scale.shape == (1, 1, 1, SPEC.layer(name).units)


def test_stored_bytes_of_the_thesis_network(params):
    # Kernels 5*5*1*5, 5*5*5*5, 5*5*5*1: 125, 625, 125 values; biases 5 + 5 + 1 = 11.
    assert qz.float_bytes(params) == 4 * 886 == 3544
    # 8 bits: 875 bytes of codes, 11 per-channel scales, 11 float biases.
    assert qz.stored_bytes(SPEC, params, qz.Scheme(8)) == 875 + 11 * 4 + 11 * 4 == 963
    # 3 bits per tensor: ceil(375/8) + ceil(1875/8) + ceil(375/8) = 47 + 235 + 47 = 329,
    # 3 scales, 3 one-byte zero points, the biases.
    asym = qz.Scheme(3, symmetric=False, per_channel=False)
    assert qz.stored_bytes(SPEC, params, asym) == 329 + 3 * 4 + 3 * 1 + 44 == 388
    # 3 bits per channel: zero points ceil(15/8) + ceil(15/8) + ceil(3/8) = 5 bytes.
    asym = qz.Scheme(3, symmetric=False)
    assert qz.stored_bytes(SPEC, params, asym) == 329 + 11 * 4 + 5 + 44 == 422
    assert qz.stored_bytes(SPEC, params, qz.Scheme(3, per_channel=False)) == 329 + 12 + 44


# ------------------------------------------------------------------------ bit search


def _scorer(table):
    calls = []

    def score_of(bits):
        calls.append(bits)
        return table[bits]

    return score_of, calls


def test_search_bits_stops_at_the_first_failure():
    score_of, calls = _scorer({8: 1.0, 7: 0.99, 6: 0.97, 5: 0.90, 4: 0.95})
    chosen, trials = qz.search_bits(score_of, (8, 7, 6, 5, 4), 1.0, 0.95)
    assert chosen == 6
    assert calls == [8, 7, 6, 5]  # 0.90 < 0.95 * 0.97: 4 bits are never tried
    assert [t["accepted"] for t in trials] == [True, True, True, False]
    assert [t["bits"] for t in trials] == [8, 7, 6, 5]
    assert trials[2]["ratio"] == pytest.approx(0.97 / 0.99)
    assert trials[3]["score"] == 0.90


def test_search_bits_baseline_rule_differs():
    table = {8: 0.97, 7: 0.93, 6: 0.89, 5: 0.5}
    # last_accepted: 0.89 >= 0.9 * 0.93; 0.5 < 0.9 * 0.89.
    assert qz.search_bits(_scorer(table)[0], (8, 7, 6, 5), 1.0, 0.9)[0] == 6
    # baseline: 0.89 < 0.9 * 1.0.
    chosen, trials = qz.search_bits(_scorer(table)[0], (8, 7, 6, 5), 1.0, 0.9, "baseline")
    assert chosen == 7 and len(trials) == 3
    assert trials[1]["ratio"] == pytest.approx(0.93)


def test_search_bits_rejects_nan_and_can_choose_nothing():
    score_of, calls = _scorer({8: 1.0, 7: math.nan, 6: 1.0})
    chosen, trials = qz.search_bits(score_of, (8, 7, 6), 1.0, 0.5)
    assert chosen == 8 and calls == [8, 7] and not trials[1]["accepted"]
    chosen, trials = qz.search_bits(_scorer({8: 0.1})[0], (8,), 1.0, 0.95)
    assert chosen is None and len(trials) == 1


def test_search_bits_rejects_bad_arguments():
    score_of, calls = _scorer({8: 1.0})
    with pytest.raises(ValueError, match="last_accepted"):
        qz.search_bits(score_of, (8,), 1.0, 0.95, rule="best")
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        qz.search_bits(score_of, (8, 1), 1.0, 0.95)
    assert calls == []


def test_rules_match_the_unit_search():
    from jaxshrink.search import minimize

    assert qz.RULES == minimize.REFERENCES


@pytest.mark.parametrize("bits", [0, 1, 9, 16, -8, 2.5, 8.0, True, "8", None])
def test_invalid_bits_raise(bits):
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        qz.Scheme(bits)


def test_numpy_integer_bits_are_accepted():
    assert qz.Scheme(np.int64(4)).bits == 4
    assert type(qz.Scheme(np.int64(4)).bits) is int
