"""The CPU convolutions of `jaxshrink.core.convs` against `lax.conv_general_dilated`: the per-tap
kernel gradient (XLA's forward pass bit for bit), the direct form (XLA's values to
rounding), their fallbacks, and `vmap`."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config
from jax import lax

from jaxshrink.config import validate
from jaxshrink.core import convs, errors, models
from jaxshrink.core import spec as spec_lib

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


def test_the_model_option_trains_with_the_same_gradients(direct_convs):
    grads = {conv: _model_grads(conv) for conv in convs.IMPLEMENTATIONS}
    for conv in ("taps", "direct", "auto"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
            grads[conv],
            grads["xla"],
        )
    # On this CPU 'auto' is the direct form for the tiny FCN's layers, bit for bit.
    jax.tree.map(np.testing.assert_array_equal, grads["auto"], grads["direct"])


_DIRECT_CASES = [
    ((2, 8, 8, 1), (5, 5, 1, 3), "SAME"),
    ((2, 7, 9, 3), (3, 3, 3, 2), "VALID"),
    ((1, 8, 8, 2), (4, 4, 2, 2), "SAME"),  # even kernel: padding (1, 2)
    ((1, 6, 6, 2), (3, 3, 2, 4), ((2, 0), (1, 1))),
]


@pytest.mark.parametrize("reduced_limit", [1 << 16, 0])  # tap sums, then XLA's kernel grad
@pytest.mark.parametrize("x_shape,k_shape,padding", _DIRECT_CASES)
def test_direct_values_and_gradients_equal_xla(
    x_shape, k_shape, padding, reduced_limit, monkeypatch
):
    monkeypatch.setattr(convs, "DIRECT_MAX_REDUCED", reduced_limit)
    x, k = _pair(x_shape, k_shape)
    args = ((1, 1), padding)
    want = lax.conv_general_dilated(x, k, *args, dimension_numbers=NHWC, precision="highest")
    got = jax.jit(
        lambda x, k: convs.direct_conv_general_dilated(x, k, *args, dimension_numbers=NHWC)
    )(x, k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    (dx_ref, dk_ref), (dx, dk) = (
        jax.jit(_loss(f, padding))(x, k)
        for f in (lax.conv_general_dilated, convs.direct_conv_general_dilated)
    )
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kernel_hw, pads", [((5, 5), ((2, 2), (2, 2))), ((3, 4), ((0, 2), (1, 2)))]
)
def test_row_products_equal_the_per_tap_sums(kernel_hw, pads):
    # Small integers: every product and sum is exact in float32, so the two forms of
    # the kernel gradient agree bit for bit.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(-3, 4, size=(2, 7, 9, 3)), jnp.float32)
    g_hw = [n + lo + hi - k + 1 for n, (lo, hi), k in zip((7, 9), pads, kernel_hw)]
    g = jnp.asarray(rng.integers(-3, 4, size=(2, *g_hw, 2)), jnp.float32)
    xt, gt = convs._channels_first(x, pads), jnp.transpose(g, (0, 3, 1, 2))
    want = convs._tap_sums(xt, gt, kernel_hw)
    assert want.shape == (*kernel_hw, 3, 2)
    np.testing.assert_array_equal(convs._row_products(xt, gt, kernel_hw), want)


def test_the_kernel_gradient_form_follows_batch_and_positions():
    assert convs._own_kernel_grad_faster((3, 64, 64, 5))  # the FCN at 64 px
    assert convs._own_kernel_grad_faster((7, 96, 96, 1))  # 64,512 positions
    assert not convs._own_kernel_grad_faster((8, 14, 14, 8))  # batches of 8 on: XLA's
    assert not convs._own_kernel_grad_faster((3, 148, 148, 5))  # 65,712 > 2^16 positions


def test_direct_on_a_hand_computed_case():
    # A 3x3 image of 1..9, a kernel with 1 at its centre and 2 at its right: every output
    # is its pixel plus twice its right neighbour ('SAME' pads the last column with 0).
    x = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    k = jnp.zeros((3, 3, 1, 1)).at[1, 1].set(1.0).at[1, 2].set(2.0)
    got = convs.direct_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
    np.testing.assert_array_equal(got[0, :, :, 0], [[5, 8, 3], [14, 17, 6], [23, 26, 9]])
    # d(sum out)/dx: each pixel counts once for itself and twice for its left neighbour.
    dx, dk = jax.grad(
        lambda x, k: jnp.sum(
            convs.direct_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
        ),
        argnums=(0, 1),
    )(x, k)
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 3, 3], [1, 3, 3], [1, 3, 3]])
    # d(sum out)/dk[i, j]: the sum of the pixels that tap (i, j) reads.
    np.testing.assert_array_equal(dk[:, :, 0, 0], [[12, 21, 16], [27, 45, 33], [24, 39, 28]])


@pytest.mark.parametrize("batched_x", [True, False])
def test_direct_under_vmap_equals_one_run_at_a_time(batched_x):
    # Runs' kernels batched (the engine's vmap over runs), the images shared or not.
    xs, ks = _pair((3, 2, 8, 8, 2), (3, 5, 5, 2, 3), seed=2)
    if not batched_x:
        xs = xs[0]

    def loss(x, k):
        y = convs.direct_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
        return jnp.sum(jnp.sin(y)), y

    grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
    in_axes = (0 if batched_x else None, 0)
    (dx, dk), y = jax.jit(jax.vmap(grad, in_axes=in_axes))(xs, ks)
    for r in range(3):
        (dx_r, dk_r), y_r = jax.jit(grad)(xs[r] if batched_x else xs, ks[r])
        np.testing.assert_allclose(y[r], y_r, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dx[r], dx_r, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dk[r], dk_r, rtol=1e-6, atol=1e-6)


def test_the_fence_keeps_the_value_for_every_input_nan_and_inf_included():
    for first in (1.0, jnp.nan, jnp.inf, -jnp.inf):
        x = jnp.array([first, 1.0, 2.0])
        got = jax.jit(lambda x: convs._fence(lambda v: (v * 2, v[1:]), x))(x)
        np.testing.assert_array_equal(got[0], x * 2)
        np.testing.assert_array_equal(got[1], [1.0, 2.0])


def test_the_fence_is_a_conditional_xla_keeps():
    # The boundary the direct form relies on: without it XLA fuses each layer's sum
    # into the next and recomputes it for every read.
    x, k = _pair((1, 8, 8, 2), (3, 3, 2, 2))

    def conv(x, k):
        return convs.direct_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)

    text = jax.jit(lambda x, k: conv(jax.nn.relu(conv(x, k)), k)).lower(x, k).compile().as_text()
    assert text.count(" conditional(") == 2


@pytest.mark.parametrize("cin, cout", [(1, 8), (4, 8), (8, 4), (5, 5)])
def test_auto_takes_the_direct_form_up_to_8_channels_and_32_pairs(cin, cout, direct_convs):
    x, k = _pair((2, 6, 6, cin), (3, 3, cin, cout))
    fn = jax.jit(
        lambda x, k: convs.auto_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
    )
    assert " conditional(" in fn.lower(x, k).compile().as_text()  # the fenced direct form


@pytest.mark.parametrize(
    "x,k,strides",
    [
        (jnp.ones((1, 6, 6, 8)), jnp.ones((3, 3, 8, 9)), (1, 1)),  # 9 > 8 output channels
        (jnp.ones((1, 6, 6, 1)), jnp.ones((3, 3, 1, 9)), (1, 1)),  # 9 > 8 output channels
        (jnp.ones((1, 6, 6, 6)), jnp.ones((3, 3, 6, 6)), (1, 1)),  # 36 > 32 channel pairs
        (jnp.ones((1, 6, 6, 2), jnp.bfloat16), jnp.ones((3, 3, 2, 2), jnp.bfloat16), (1, 1)),
        (jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 2)), (2, 2)),  # strided
    ],
)
def test_what_the_direct_form_does_not_cover_is_xla_bit_for_bit(x, k, strides, direct_convs):
    for fn in (convs.direct_conv_general_dilated, convs.auto_conv_general_dilated):
        got = fn(x, k, strides, "SAME", dimension_numbers=NHWC)
        want = lax.conv_general_dilated(x, k, strides, "SAME", dimension_numbers=NHWC)
        np.testing.assert_array_equal(got, want)


def test_an_unknown_conv_is_refused():
    c = tiny_config()
    c.model.conv = "fast"
    with pytest.raises(ValueError, match="allowed"):
        convs.conv_fn("fast")
    with pytest.raises(errors.ConfigError, match="model.conv"):
        validate.validate(c)


def test_auto_follows_the_cpu_setting(monkeypatch):
    x, k = _pair((1, 8, 8, 1), (5, 5, 1, 5))
    want = {
        "direct": convs.direct_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC),
        "xla": lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC),
    }
    assert not np.array_equal(want["direct"], want["xla"])  # the sums run in another order
    for setting in ("direct", "xla"):
        monkeypatch.setattr(convs, "AUTO_ON_CPU", setting)
        got = convs.auto_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
        np.testing.assert_array_equal(got, want[setting])


def test_an_unknown_auto_setting_is_refused(monkeypatch):
    monkeypatch.setattr(convs, "AUTO_ON_CPU", "fast")
    x, k = _pair((1, 8, 8, 1), (5, 5, 1, 5))
    with pytest.raises(ValueError, match="JAXSHRINK_AUTO_CONV"):
        convs.auto_conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
    with pytest.raises(errors.ConfigError, match="JAXSHRINK_AUTO_CONV"):
        validate.validate(tiny_config())


def test_the_direct_convs_experiment_writes_its_measurements(tmp_path):
    path = os.path.join(ROOT, "experiments", "direct_convs.py")
    spec = importlib.util.spec_from_file_location("direct_convs_experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "direct.json"
    report = module.main(["--quick", "--repeats=2", f"--out={out}"])
    assert json.loads(out.read_text())["layers"] == report["layers"]
    (row,) = report["layers"].values()
    for piece in ("forward", "input_grad", "kernel_grad"):
        assert row[f"xla_{piece}_ms"] > 0 and row[f"direct_{piece}_ms"] > 0
        assert row[f"direct_{piece}_max_abs_diff"] < 1e-4  # the same function
    (stack,) = report["stacked"]
    assert min(stack["xla_ms"], stack["direct_fenced_ms"], stack["direct_unfenced_ms"]) > 0


def _runs_loss(conv):
    def loss(x, k):
        y = conv(x, k, (1, 1), "SAME", dimension_numbers=NHWC, precision="highest")
        return jnp.sum(jnp.sin(y))

    return loss


@pytest.mark.parametrize("form", ["direct", "direct unfenced", "packed:2", "pallas"])
@pytest.mark.parametrize("cin,cout", [(1, 5), (5, 5), (5, 1)])
def test_every_form_equals_xla_under_vmap_over_runs(form, cin, cout, monkeypatch):
    # Three runs of a thesis layer at batch 3, as the batched engine forms them: values,
    # and the gradients of both batch.grad forms ('sum': grad of the runs' summed loss;
    # 'vmap': each run's grad, vmapped). 'direct unfenced' is the direct form as it is
    # traced for a GPU, without the CPU's fence.
    if form == "direct unfenced":
        monkeypatch.setattr(convs.jax, "default_backend", lambda: "gpu")
        jax.clear_caches()  # the jitted pieces were traced with the fence before
        form = "direct"
    xs, ks = _pair((3, 3, 8, 8, cin), (3, 5, 5, cin, cout), seed=cin * 10 + cout)
    fast, ref = _runs_loss(convs.conv_fn(form)), _runs_loss(lax.conv_general_dilated)
    fenced = "cond" in str(jax.make_jaxpr(jax.vmap(jax.grad(fast, (0, 1))))(xs, ks))
    assert fenced == (form == "direct" and jax.default_backend() == "cpu")
    for batched in (
        lambda f: jax.grad(lambda x, k: jnp.sum(jax.vmap(f)(x, k)), (0, 1)),
        lambda f: jax.vmap(jax.grad(f, (0, 1))),
    ):
        got, want = jax.jit(batched(fast))(xs, ks), jax.jit(batched(ref))(xs, ks)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()))
