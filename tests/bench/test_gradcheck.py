"""Gradient checks (thesis 004, 3.3) of every model family as the quick configs build it.

Run with ``pytest -s`` to see the relative errors per model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mnist as mnist_config
from configs import sobel as sobel_config
from configs import summation as summation_config
from jaxshrink import data
from jaxshrink.bench import gradcheck as gc
from jaxshrink.core import models, optim, tasks

TOL = 1e-6


def _cases():
    """(name, config, input shape, dropout on)."""
    sobel = sobel_config.get_config("quick")
    canny = sobel_config.get_config("quick")
    canny.train.loss = "f1"  # the soft F1 loss of the Canny runs: |O - T| has kinks
    mnist = mnist_config.get_config("quick")
    t003 = mnist_config.get_config("t003,quick")
    summation = summation_config.get_config("quick")
    return [
        ("fcn (sobel quick, mse)", sobel, (16, 16, 1), False),
        ("fcn (sobel quick, f1 loss)", canny, (16, 16, 1), False),
        ("cnn (mnist quick, dropout)", mnist, data.input_shape(mnist.data), True),
        ("cnn (mnist t003,quick)", t003, data.input_shape(t003.data), False),
        ("mlp (summation quick)", summation, data.input_shape(summation.data), False),
    ]


CASES = _cases()


def _setup(config, input_shape, dropout, seed=0, batch=2):
    model = models.get_model(config.model, input_shape)
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    gen = np.random.default_rng(seed)
    params = _init(model, float(config.model.init_std), gen)
    masks, frozen = {}, {}
    for layer in model.spec.layers:
        keep = np.ones(layer.units, bool)
        freeze = np.zeros(layer.units, bool)
        if layer.candidate:
            order = gen.permutation(layer.units)
            # A quarter of the units, but only a few where each owns a large slice:
            # every entry a disabled unit owns is probed.
            fan_in = layer.in_features * layer.window
            off = max(1, layer.units // 4 if fan_in < 100 else 1)
            keep[order[:off]] = False  # some units disabled in every candidate layer
            freeze[order[: off + 1]] = True  # disabled ones and one live unit frozen
        masks[layer.name], frozen[layer.name] = jnp.asarray(keep), jnp.asarray(freeze)
    x = jax.random.normal(keys[1], (batch, *input_shape))
    out = jax.eval_shape(lambda p: model.apply(p, masks, x), params)
    if config.task == "classification":
        y = jax.random.randint(keys[2], (batch,), 0, out.shape[-1])
    elif config.task == "edges":
        y = jax.random.uniform(keys[2], out.shape)
    else:
        y = jax.random.normal(keys[2], out.shape)
    loss = tasks.get_task(config.task, config.train.loss or None).loss
    optimizer = optim.make_optimizer(config.optim, model.spec, params)
    drop = keys[3] if dropout else None
    return model, loss, params, masks, frozen, optimizer, x, y, drop


def _init(model, init_std, gen):
    """Parameters at the scale of the model's initializers, drawn with numpy.

    `model.init` would compile the forward pass of each network (seconds on a
    2-core CPU) only to draw these: kernels from the config's truncated normal
    (``init_std`` > 0, biases too) or LeCun normal (Flax's default), with biases
    N(0, 0.1) instead of Flax's zeros, so that trained-like biases are checked.
    """
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))

    def draw(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        if init_std > 0:
            std = init_std
        else:
            std = 1.0 / np.sqrt(fan_in) if len(leaf.shape) > 1 else 0.1
        return np.clip(gen.standard_normal(leaf.shape), -2, 2).astype(np.float32) * std

    return jax.tree.map(draw, shapes)


@pytest.mark.parametrize("name,config,input_shape,dropout", CASES, ids=[c[0] for c in CASES])
def test_model_gradients(name, config, input_shape, dropout):
    x64 = jax.config.jax_enable_x64
    model, loss, params, masks, frozen, optimizer, x, y, drop = _setup(config, input_shape, dropout)
    r = gc.check_gradients(
        model, loss, params, masks, x, y, frozen=frozen, optimizer=optimizer, dropout_rng=drop
    )
    print(
        f"\n{name}: max {r.max_relative_error:.2e}, mean {r.mean_relative_error:.2e}, "
        f"sum {r.sum_relative_error:.2e}, q90 {r.quantile_relative_error:.2e}, "
        f"max incl. kinks {r.max_relative_error_all:.2e}, directions "
        f"{r.max_directional_error:.2e} ({r.directions_checked}), "
        f"{r.coordinates_checked} coordinates ({r.kink_coordinates} kinked, "
        f"{r.reduced_step_coordinates} at a smaller step; at Δ only: "
        f"{r.max_relative_error_fixed_step:.2e}), "
        f"{r.masked_coordinates} masked; worst {r.worst}"
    )
    assert r.coordinates_checked == 64
    assert r.kink_coordinates <= 8
    assert r.max_relative_error < TOL
    assert r.max_directional_error is not None and r.max_directional_error < TOL
    assert r.masked_coordinates > 0
    assert r.masked_grad_max_abs == 0.0
    assert r.fed_grad_max_abs == 0.0
    # Bitwise 0: L(θ ± Δ e_i) run through the same compiled loop body (a vmapped
    # version rounded the two sides differently, giving about 1e-14).
    assert r.masked_fd_max_abs == 0.0
    assert r.frozen_update_max_abs == 0.0
    assert r.live_update_max_abs > 0.0
    assert r.passed(TOL)
    assert jax.config.jax_enable_x64 == x64  # x64 stayed inside the check
    assert x64 or jnp.ones(2).dtype == jnp.float32


@jax.custom_vjp
def _wrong_identity(x):
    return x


_wrong_identity.defvjp(lambda x: (x, None), lambda _, g: (g * 1.01,))


def test_wrong_gradient_fails():
    name, config, input_shape, dropout = CASES[-1]
    model, loss, params, masks, _, _, x, y, _ = _setup(config, input_shape, dropout)

    def wrong(out, targets):  # backprop scaled by 1.01, the forward pass unchanged
        return loss(_wrong_identity(out), targets)

    r = gc.check_gradients(model, wrong, params, masks, x, y, num_coordinates=16)
    print(f"\nwrong gradient ({name}): max {r.max_relative_error:.2e}")
    assert not r.passed()
    assert r.max_relative_error > 1e-3  # 0.01 / 2.01 where the gradient is not zero
    assert r.masked_grad_max_abs == 0.0  # the masks still hold


def test_frozen_leak_fails():
    """An optimizer that ignores `frozen` is caught."""
    _, config, input_shape, dropout = CASES[-1]
    model, loss, params, masks, _, _, x, y, _ = _setup(config, input_shape, dropout)
    frozen = masks  # every live unit frozen
    r = gc.check_gradients(
        model, loss, params, masks, x, y, frozen=frozen, optimizer=_ignores_frozen(0.1)
    )
    assert r.frozen_update_max_abs > 0.0
    assert not r.passed()


def _ignores_frozen(lr):
    sgd = optax.sgd(lr)
    return optax.GradientTransformationExtraArgs(
        sgd.init, lambda u, s, p=None, **_: sgd.update(u, s, p)
    )


def test_relative_error_rule():
    err = gc.relative_error([1.0, 1e-13, 0.0, 1.0, 2e-12], [1.0, -1e-13, 0.0, -1.0, 0.0])
    np.testing.assert_array_equal(err, [0.0, 0.0, 0.0, np.inf, 1.0])


def test_kink_detector():
    """A probe whose interval crosses a ReLU or max-pool kink changes a decision."""

    def f(v):
        h = jax.nn.relu(v[:2])
        pooled = jax.lax.reduce_window(v[2:], -jnp.inf, jax.lax.max, (2,), (2,), "VALID")
        return jnp.sum(h) + jnp.sum(pooled)

    g = jax.jit(gc.with_decisions(f))
    v = jnp.array([1e-7, 1.0, 0.5, 0.5 + 1e-7])
    base = g(v)[1]
    for i, h, changes in [(0, -1e-6, True), (0, -1e-8, False), (1, 1e-4, False), (2, 1e-6, True)]:
        decisions = g(v.at[i].add(h))[1]
        changed = any(bool(jnp.any(a != b)) for a, b in zip(decisions, base))
        assert changed == changes, (i, h)
    assert float(g(v)[0]) == pytest.approx(float(f(v)))
