"""Tests for jaxshrink.core.metrics: every metric is checked against an independent computation."""

from __future__ import annotations

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxshrink.core import metrics
from jaxshrink.core.metrics import (
    f1_loss,
    f1_score,
    f1_score_per_image,
    mae,
    mse,
    uiqi,
    uiqi_per_image,
)

# --------------------------------------------------------------------------- helpers


def _rand(shape, seed, low=0.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def _nhwc(*images):
    """Stack 2-D images into an (N, H, W, 1) float32 batch."""
    return np.stack([np.asarray(im, dtype=np.float32) for im in images])[..., None]


def _np_losses(o, t):
    """Plain NumPy per-image loop of the thesis formulas (float64)."""
    o, t = np.asarray(o, np.float64), np.asarray(t, np.float64)
    maes, mses, f1s, f1_losses = [], [], [], []
    for oi, ti in zip(o, t, strict=True):
        diff = oi - ti
        maes.append(np.abs(diff).mean())
        mses.append((diff**2).mean())
        e = np.abs(diff).sum()
        tp = (oi * ti).sum()
        f1s.append(2 * tp / (2 * tp + e))
        f1_losses.append(e / (2 * tp + e))
    return np.mean(maes), np.mean(mses), np.array(f1s), np.mean(f1_losses)


def _naive_uiqi_image(x, y, w):
    """Paper formula over every w x w window, written directly (float64, 2-D images).

    Special cases as in the authors' img_qi.m: start from Q = 1, use
    2 mx my / (mx^2 + my^2) when only the variance factor is zero, and the full
    formula when neither factor is zero.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    h, wd = x.shape
    qs = []
    for i in range(h - w + 1):
        for j in range(wd - w + 1):
            a = x[i : i + w, j : j + w].ravel()
            b = y[i : i + w, j : j + w].ravel()
            n = a.size
            mx, my = a.mean(), b.mean()
            sx2 = ((a - mx) ** 2).sum() / (n - 1)
            sy2 = ((b - my) ** 2).sum() / (n - 1)
            sxy = ((a - mx) * (b - my)).sum() / (n - 1)
            d_var, d_mean = sx2 + sy2, mx**2 + my**2
            if d_var != 0 and d_mean != 0:
                q = 4 * sxy * mx * my / (d_var * d_mean)
            elif d_var == 0 and d_mean != 0:
                q = 2 * mx * my / d_mean
            else:
                q = 1.0
            qs.append(q)
    return float(np.mean(qs))


# Two hand-written 2x2 images (a batch of N=2).
_O = _nhwc([[0.5, 1.0], [0.0, 0.25]], [[0.0, 0.0], [0.0, 0.0]])
_T = _nhwc([[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]])


# --------------------------------------------------------------------------- MAE / MSE / F1


def test_mae_mse_hand_computed():
    # Image 1: |O-T| = 0.5, 0, 0, 0.25 -> mean 0.75/4 = 0.1875
    #          (O-T)^2 = 0.25, 0, 0, 0.0625 -> mean 0.3125/4 = 0.078125
    # Image 2: |O-T| = 1, 0, 0, 0 -> mean 0.25; squares the same -> 0.25
    # MAE = (0.1875 + 0.25) / 2 = 0.21875; MSE = (0.078125 + 0.25) / 2 = 0.1640625
    assert float(mae(_O, _T)) == pytest.approx(0.21875, abs=1e-7)
    assert float(mse(_O, _T)) == pytest.approx(0.1640625, abs=1e-7)


def test_f1_hand_computed_per_image_then_mean():
    # Image 1: E = 0.5 + 0.25 = 0.75, TP = 0.5*1 + 1*1 = 1.5 -> 2TP = 3
    #          F1 = 3 / 3.75 = 0.8, loss = 0.75 / 3.75 = 0.2
    # Image 2: E = 1, TP = 0 -> F1 = 0, loss = 1
    # Batch: F1 = (0.8 + 0) / 2 = 0.4, loss = (0.2 + 1) / 2 = 0.6.
    # (A global F1 over batch sums would be 3 / 4.75 = 0.6316..., which must NOT come out.)
    np.testing.assert_allclose(f1_score_per_image(_O, _T), [0.8, 0.0], atol=1e-7)
    assert float(f1_score(_O, _T)) == pytest.approx(0.4, abs=1e-7)
    assert float(f1_loss(_O, _T)) == pytest.approx(0.6, abs=1e-7)


def test_losses_match_numpy_loop_on_random_arrays():
    o, t = _rand((3, 7, 5, 1), 0), _rand((3, 7, 5, 1), 1)
    ref_mae, ref_mse, ref_f1, ref_f1_loss = _np_losses(o, t)
    np.testing.assert_allclose(mae(o, t), ref_mae, rtol=1e-6)
    np.testing.assert_allclose(mse(o, t), ref_mse, rtol=1e-6)
    np.testing.assert_allclose(f1_score_per_image(o, t), ref_f1, rtol=1e-6)
    np.testing.assert_allclose(f1_score(o, t), ref_f1.mean(), rtol=1e-6)
    np.testing.assert_allclose(f1_loss(o, t), ref_f1_loss, rtol=1e-6)


def test_f1_loss_plus_score_is_one():
    o, t = _rand((4, 6, 6, 1), 2), (_rand((4, 6, 6, 1), 3) > 0.5).astype(np.float32)
    np.testing.assert_allclose(f1_loss(o, t) + f1_score(o, t), 1.0, rtol=1e-6)


def test_f1_identical_binary_images():
    t = (_rand((2, 5, 5, 1), 4) > 0.5).astype(np.float32)
    assert float(f1_score(t, t)) == 1.0
    assert float(f1_loss(t, t)) == 0.0


def test_f1_all_zero_pair_is_perfect_with_finite_gradient():
    z = jnp.zeros((2, 4, 4, 1))
    assert float(f1_score(z, z)) == 1.0
    assert float(f1_loss(z, z)) == 0.0
    np.testing.assert_array_equal(f1_score_per_image(z, z), [1.0, 1.0])
    for fn in (f1_loss, f1_score):
        grad = jax.grad(fn)(z, z)
        assert bool(jnp.all(jnp.isfinite(grad)))
    # Only the all-zero image is special; the other image of the batch is unaffected.
    o = jnp.stack([jnp.zeros((4, 4, 1)), jnp.full((4, 4, 1), 0.5)])
    t = jnp.stack([jnp.zeros((4, 4, 1)), jnp.ones((4, 4, 1))])
    # Image 2: E = 16*0.5 = 8, 2TP = 2*16*0.5 = 16 -> loss 8/24 = 1/3.
    assert float(f1_loss(o, t)) == pytest.approx((0.0 + 1 / 3) / 2, rel=1e-6)
    assert bool(jnp.all(jnp.isfinite(jax.grad(f1_loss)(o, t))))


def test_f1_gradient_matches_finite_difference():
    o, t = _rand((2, 3, 3, 1), 5, 0.1, 1.0), _rand((2, 3, 3, 1), 6)
    o64 = o.astype(np.float64)
    g = np.asarray(jax.grad(f1_loss)(jnp.asarray(o), jnp.asarray(t)))
    eps, idx = 1e-4, (1, 2, 0, 0)
    up, down = o64.copy(), o64.copy()
    up[idx] += eps
    down[idx] -= eps
    fd = (_np_losses(up, t)[3] - _np_losses(down, t)[3]) / (2 * eps)
    assert g[idx] == pytest.approx(fd, rel=1e-3)


_image_batches = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)).flatmap(
    lambda s: st.tuples(
        *[
            hnp.arrays(
                np.float32,
                (s[0], s[1], s[2], 1),
                elements=st.floats(0, 2, width=32, allow_nan=False, allow_infinity=False),
            )
            for _ in range(2)
        ]
    )
)


@settings(max_examples=50, deadline=None)
@given(_image_batches)
def test_f1_score_in_unit_interval_for_nonnegative_inputs(pair):
    o, t = pair
    per_image = np.asarray(f1_score_per_image(o, t))
    assert np.all(np.isfinite(per_image))
    assert np.all((per_image >= 0) & (per_image <= 1))
    score, loss = float(f1_score(o, t)), float(f1_loss(o, t))
    assert 0.0 <= score <= 1.0
    assert 0.0 <= loss <= 1.0


def test_integer_images_are_promoted():
    # uint8 would overflow in O*T (200*100); promotion makes it exact.
    o = np.full((1, 2, 2, 1), 200, np.uint8)
    t = np.full((1, 2, 2, 1), 100, np.uint8)
    # E = 4*100 = 400, 2TP = 2*4*20000 = 160000 -> F1 = 160000/160400
    assert float(f1_score(o, t)) == pytest.approx(160000 / 160400, rel=1e-6)
    assert float(mae(o, t)) == 100.0
    assert float(mse(o, t)) == 10000.0


# --------------------------------------------------------------------------- UIQI


def test_uiqi_matches_naive_window_loop():
    x, y = _rand((3, 12, 12, 1), 7), _rand((3, 12, 12, 1), 8)
    # Make the pair correlated so Q is not near 0 and the test is sensitive.
    y = (0.6 * x + 0.4 * y).astype(np.float32)
    ref = np.array([_naive_uiqi_image(x[i, ..., 0], y[i, ..., 0], 8) for i in range(3)])
    np.testing.assert_allclose(uiqi_per_image(x, y), ref, atol=2e-6)
    np.testing.assert_allclose(uiqi(x, y), ref.mean(), atol=2e-6)


@pytest.mark.parametrize("window", [3, 5, 12])
def test_uiqi_other_window_sizes_match_naive(window):
    x, y = _rand((2, 12, 12, 1), 9), _rand((2, 12, 12, 1), 10)
    ref = np.array([_naive_uiqi_image(x[i, ..., 0], y[i, ..., 0], window) for i in range(2)])
    np.testing.assert_allclose(uiqi_per_image(x, y, window=window), ref, atol=2e-6)


def test_uiqi_window_one_is_the_matlab_mean_term():
    # With N = 1 the paper's 1/(N-1) variances are undefined; img_qi.m (which never
    # divides by N-1) sees denominator1 = 0 and uses 2 x y / (x^2 + y^2) per pixel.
    x, y = _rand((1, 4, 4, 1), 24, 0.1, 1.0), _rand((1, 4, 4, 1), 25, 0.1, 1.0)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    expected = np.mean(2 * x64 * y64 / (x64**2 + y64**2))
    assert float(uiqi(x, y, window=1)) == pytest.approx(expected, abs=1e-6)


def test_uiqi_identical_images_is_one():
    x = _rand((2, 12, 12, 1), 11)
    np.testing.assert_allclose(uiqi_per_image(x, x), [1.0, 1.0], atol=1e-6)


def test_uiqi_affine_map_closed_form_single_window():
    # y = a x + b with a > 0: correlation is exactly 1, so
    # Q = [2 mx my / (mx^2 + my^2)] * [2 sx sy / (sx^2 + sy^2)], sy = a sx, my = a mx + b
    #   = [2 mx my / (mx^2 + my^2)] * [2a / (1 + a^2)].
    a, b = 2.0, 0.5
    x = _rand((1, 8, 8, 1), 12)
    y = (a * x + b).astype(np.float32)
    x64 = x.astype(np.float64).ravel()
    assert np.corrcoef(x64, a * x64 + b)[0, 1] == pytest.approx(1.0)
    mx = x64.mean()
    my = a * mx + b
    expected = (2 * mx * my / (mx**2 + my**2)) * (2 * a / (1 + a**2))
    assert expected < 0.9  # means and contrasts differ, so Q < 1 despite corr = 1
    assert float(uiqi(x, y)) == pytest.approx(expected, abs=1e-6)


def test_uiqi_affine_map_closed_form_sliding_windows():
    a, b = 0.5, 0.25
    x = _rand((1, 12, 12, 1), 13)
    y = (a * x + b).astype(np.float32)
    x64 = x[0, ..., 0].astype(np.float64)
    qs = []
    for i in range(5):
        for j in range(5):
            mx = x64[i : i + 8, j : j + 8].mean()
            my = a * mx + b
            qs.append((2 * mx * my / (mx**2 + my**2)) * (2 * a / (1 + a**2)))
    assert float(uiqi(x, y)) == pytest.approx(np.mean(qs), abs=1e-6)


def test_uiqi_constant_images_special_cases():
    ones = np.ones((1, 12, 12, 1), np.float32)
    # Both constant (zero variance), nonzero means 1 and 3: Q = 2*1*3 / (1 + 9) = 0.6.
    assert float(uiqi(ones, 3 * ones)) == pytest.approx(0.6, abs=1e-6)
    # Same with values that are inexact in float32: 2*0.1*0.3 / (0.01 + 0.09) = 0.6.
    assert float(uiqi(0.1 * ones, 0.3 * ones)) == pytest.approx(0.6, abs=1e-6)
    # Equal constants: 2c^2 / 2c^2 = 1.
    assert float(uiqi(0.7 * ones, 0.7 * ones)) == pytest.approx(1.0, abs=1e-6)
    # Both all zero: both factors vanish -> Q = 1.
    assert float(uiqi(0 * ones, 0 * ones)) == 1.0
    # One constant, the other not: covariance is 0 -> Q = 0 exactly.
    y = _rand((1, 12, 12, 1), 14)
    assert float(uiqi(0.5 * ones, y)) == 0.0
    assert float(uiqi(0 * ones, y)) == 0.0


def test_uiqi_zero_mean_windows_follow_matlab():
    # img_qi.m has no 2 sxy / (sx^2 + sy^2) branch: a window whose means are both
    # zero keeps the initial Q = 1, even for y = -x (documented quirk).
    checker = np.indices((8, 8)).sum(axis=0) % 2 * 2.0 - 1.0  # +-1, mean 0
    x = _nhwc(checker)
    assert float(uiqi(x, x)) == 1.0
    assert float(uiqi(x, -x)) == 1.0
    assert _naive_uiqi_image(checker, -checker, 8) == 1.0


def test_uiqi_multichannel_averages_channels():
    x, y = _rand((1, 10, 10, 2), 15), _rand((1, 10, 10, 2), 16)
    ref = np.mean([_naive_uiqi_image(x[0, ..., c], y[0, ..., c], 8) for c in range(2)])
    assert float(uiqi(x, y)) == pytest.approx(ref, abs=2e-6)


def test_uiqi_gradient_is_finite_including_degenerate_windows():
    x = jnp.asarray(_rand((1, 10, 10, 1), 17))
    for y in (x * 0.5, jnp.zeros_like(x), jnp.ones_like(x)):
        assert bool(jnp.all(jnp.isfinite(jax.grad(uiqi)(x, y))))
    z = jnp.zeros_like(x)
    assert bool(jnp.all(jnp.isfinite(jax.grad(uiqi)(z, z))))


# --------------------------------------------------------------------------- jit / vmap / API


@pytest.mark.parametrize(
    "fn", [mae, mse, f1_loss, f1_score, f1_score_per_image, uiqi, uiqi_per_image]
)
def test_jit_gives_same_value(fn):
    o, t = _rand((3, 12, 12, 1), 18), _rand((3, 12, 12, 1), 19)
    np.testing.assert_allclose(jax.jit(fn)(o, t), fn(o, t), rtol=1e-6, atol=1e-7)


def test_jit_with_static_window():
    o, t = _rand((2, 12, 12, 1), 20), _rand((2, 12, 12, 1), 21)
    jitted = jax.jit(uiqi, static_argnames="window")
    np.testing.assert_allclose(jitted(o, t, window=4), uiqi(o, t, window=4), rtol=1e-6)
    jitted_partial = jax.jit(functools.partial(uiqi, window=4))
    np.testing.assert_allclose(jitted_partial(o, t), uiqi(o, t, window=4), rtol=1e-6)


@pytest.mark.parametrize("fn", [mae, mse, f1_loss, f1_score, uiqi])
def test_vmap_over_extra_leading_axis(fn):
    o, t = _rand((2, 3, 9, 9, 1), 22), _rand((2, 3, 9, 9, 1), 23)
    expected = np.array([fn(o[k], t[k]) for k in range(2)])
    np.testing.assert_allclose(jax.vmap(fn)(o, t), expected, rtol=1e-6, atol=1e-7)


def test_input_validation():
    a = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="shapes differ"):
        mae(a, np.zeros((1, 4, 5, 1), np.float32))
    with pytest.raises(ValueError, match="rank 4"):
        f1_score(a[0], a[0])
    with pytest.raises(ValueError, match="window"):
        uiqi(a, a, window=5)
    with pytest.raises(ValueError, match="window"):
        uiqi(a, a, window=0)


def test_module_exports():
    assert set(metrics.__all__) >= {
        "mae",
        "mse",
        "f1_loss",
        "f1_score",
        "f1_score_per_image",
        "uiqi",
        "uiqi_per_image",
        "UIQI_WINDOW",
    }


def test_f1_loss_of_an_edgeless_target_is_one_with_an_exactly_zero_gradient():
    target = jnp.zeros((2, 4, 4, 1))
    output = jnp.linspace(0.1, 2.0, 32).reshape(2, 4, 4, 1)
    loss, grad = jax.value_and_grad(metrics.f1_loss)(output, target)
    assert float(loss) == 1.0
    assert not np.any(np.asarray(grad))  # exactly 0: Adam would amplify rounding noise
    # Mixed batch: the edgeless image adds a constant, the other one its gradient.
    mixed = target.at[1, 0, 0, 0].set(1.0)
    g = jax.grad(metrics.f1_loss)(output, mixed)
    assert not np.any(np.asarray(g[0])) and np.any(np.asarray(g[1]))
