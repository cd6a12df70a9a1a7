"""Scores beyond the thesis's three (activation, magnitude, Taylor, per-run cosine) on tiny nets.

Every net here is a `models.sequential_model` with hand-set weights, so each expected
score is hand arithmetic (or, for Taylor, a direct computation without the masks).
Candidates are the units of every layer but the output layer, in network order.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxshrink.config import schema as config_lib
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import models
from jaxshrink.core import spec as spec_lib
from jaxshrink.search import strategies

KEY = jax.random.PRNGKey(0)


def _mse(model):
    return lambda p, s, m, x, y: jnp.mean((model.apply(p, m, x, state=s) - y) ** 2)


def _net(model, params, x, y=None, masks=None, state=None):
    masks = spec_lib.full(model.spec) if masks is None else masks
    y = jnp.zeros((x.shape[0], 1)) if y is None else y
    return strategies.Net(model, _mse(model), params, state or {}, masks, KEY, x, y)


def _cfg(**minimize):
    cfg = config_lib.base_config("sobel").minimize
    cfg.update(minimize)
    return cfg


def _score(name, net, **minimize):
    """The scores of strategy `name`, jit-compiled (as a round runs them)."""
    score, cfg = strategies.STRATEGIES[name].score, _cfg(**minimize)

    @jax.jit
    def run(params, state, masks, x, y):
        return score(net._replace(params=params, state=state, masks=masks, x=x, y=y), cfg)

    return np.asarray(run(net.params, net.state, net.masks, net.x, net.y))


def _dense(kernel, bias):
    return {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}


# dense_0 (2 -> 3, ReLU), dense_1 (3 -> 1). Over X:
#   unit 0 = x0      : 1, 0, 1, 2  -> active 3 of 4, APoZ 1/4
#   unit 1 = -x0-x1-1: always < 0  -> active 0 of 4, APoZ 1
#   unit 2 = x1      : 0, 1, 1, 0  -> active 2 of 4, APoZ 1/2
MLP = models.sequential_model(["dense:3", "dense:1"], (2,))
MLP_PARAMS = {
    "dense_0": _dense([[1, -1, 0], [0, -1, 1]], [0, -1, 0]),
    "dense_1": _dense([[1], [1], [1]], [0]),
}
X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])


def test_a_unit_that_never_activates_has_apoz_1_and_is_chosen_first():
    net = _net(MLP, MLP_PARAMS, X)
    scores = _score("apoz", net)
    np.testing.assert_allclose(scores, [0.25, 1.0, 0.5])
    eligible = masks_lib.eligible(MLP.spec, net.masks)
    assert int(strategies.select(jnp.asarray(scores), eligible)[0]) == 1
    # 003's count: score -count; the default threshold rule (score >= -0) is count <= 0.
    counts = _score("activation_count", net)
    np.testing.assert_array_equal(counts, [-3, 0, -2])
    rule = strategies.STRATEGIES["activation_count"]
    assert (rule.group, rule.group_threshold, rule.max_failures) == ("threshold", 0.0, 1)
    assert (counts >= rule.group_threshold).tolist() == [False, True, False]
    assert (counts >= -2.0).tolist() == [False, True, True]  # count <= 2
    # A dead unit outputs nothing: it counts no activation.
    masks = {"dense_0": jnp.array([False, True, True]), "dense_1": jnp.array([True])}
    np.testing.assert_allclose(_score("apoz", _net(MLP, MLP_PARAMS, X, masks=masks)), [1, 1, 0.5])


def test_activation_reads_the_batch_norm_output():
    # conv_0 (1x1, 2 units) copies the pixel to both units; its batch norm (running
    # mean 0, var 1 - eps, so it divides by 1) keeps unit 0 and negates unit 1.
    model = models.sequential_model(["conv:2:1:bn", "conv:1:1"], (2, 2, 1))
    params = {
        "conv_0": {"kernel": jnp.ones((1, 1, 1, 2)), "bias": jnp.zeros((2,))},
        "conv_0_bn": {"scale": jnp.array([1.0, -1.0]), "bias": jnp.zeros((2,))},
        "conv_1": {"kernel": jnp.ones((1, 1, 2, 1)), "bias": jnp.zeros((1,))},
    }
    eps = 1e-3  # sequential.BN_EPSILON
    state = {"batch_stats": {"conv_0_bn": {"mean": jnp.zeros(2), "var": jnp.full(2, 1 - eps)}}}
    x = jnp.array([1.0, -1.0, 2.0, 3.0]).reshape(1, 2, 2, 1)  # unit 0 fires 3 of 4, unit 1 1
    net = _net(model, params, x, y=jnp.zeros((1, 2, 2, 1)), state=state)
    np.testing.assert_allclose(_score("apoz", net), [0.25, 0.75], rtol=1e-5)
    np.testing.assert_array_equal(_score("activation_count", net), [-3, -1])


def test_magnitude_picks_the_smallest_norm_unit():
    # Rows [kernel column | bias]: a = [3, 0 | 0], b = [2, 2 | 0], c = [4, 0 | 0].
    #   L1: 3, 4, 4 -> a goes first;  L2: 3, sqrt(8) = 2.83, 4 -> b goes first.
    params = {
        "dense_0": _dense([[3, 2, 4], [0, 2, 0]], [0, 0, 0]),
        "dense_1": MLP_PARAMS["dense_1"],
    }
    net = _net(MLP, params, X)
    allowed = masks_lib.eligible(MLP.spec, net.masks)
    l1, l2 = _score("l1_norm", net), _score("l2_norm", net)
    np.testing.assert_allclose(l1, [-3, -4, -4])
    np.testing.assert_allclose(l2, [-3, -math.sqrt(8), -4], rtol=1e-6)
    assert int(strategies.select(jnp.asarray(l1), allowed)[0]) == 0
    assert int(strategies.select(jnp.asarray(l2), allowed)[0]) == 1
    # The batch norm's scale and bias are part of what a unit owns.
    model = models.sequential_model(["dense:2:bn", "dense:1"], (2,))
    p = {
        "dense_0": _dense([[1, 0], [0, 1]], [0, 0]),
        "dense_0_bn": {"scale": jnp.array([1.0, -5.0]), "bias": jnp.array([0.5, 0.0])},
        "dense_1": _dense([[1], [1]], [0]),
    }
    s = {"batch_stats": {"dense_0_bn": {"mean": jnp.zeros(2), "var": jnp.ones(2)}}}
    np.testing.assert_allclose(_score("l1_norm", _net(model, p, X, state=s)), [-2.5, -6])


def test_taylor_equals_a_direct_computation():
    # conv_0 (1x1, 1 -> 3, ReLU) and conv_1 (1x1, 3 -> 1) on 2x2 images, per-example
    # MSE. Molchanov's term per unit: the mean over examples of
    # |mean over the 4 pixels of z * dloss/dz|, z = the unit's ReLU output.
    model = models.sequential_model(["conv:3:1", "conv:1:1"], (2, 2, 1))
    w0, b0 = jnp.array([1.0, -0.5, 2.0]), jnp.array([0.1, 0.2, -0.3])
    w1, b1 = jnp.array([0.7, -1.2, 0.4]), jnp.array(0.05)
    params = {
        "conv_0": {"kernel": w0.reshape(1, 1, 1, 3), "bias": b0},
        "conv_1": {"kernel": w1.reshape(1, 1, 3, 1), "bias": b1.reshape(1)},
    }
    x = jax.random.normal(KEY, (3, 2, 2, 1))
    y = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 2, 1))

    def loss_of_z(z, y1):  # z: (2, 2, 3) of one example
        return jnp.mean((z @ w1 + b1 - y1[..., 0]) ** 2)

    @jax.jit
    def direct(x, y):
        z = jax.nn.relu(x * w0 + b0)  # (3, 2, 2, 3)
        g = jax.vmap(jax.grad(loss_of_z))(z, y)
        return jnp.mean(jnp.abs(jnp.mean(z * g, axis=(1, 2))), axis=0)

    want = direct(x, y)
    got = _score("taylor", _net(model, params, x, y=y))
    np.testing.assert_allclose(got, -want, rtol=1e-5)
    assert np.all(want > 0)
    # A dead unit scores 0: removing it changes nothing.
    masks = {"conv_0": jnp.array([True, False, True]), "conv_1": jnp.array([True])}
    assert _score("taylor", _net(model, params, x, y=y, masks=masks))[1] == 0.0


def _ramp_layer(thresholds):
    """dense_0 of 1 -> len(thresholds) units: unit u = x - thresholds[u] (ReLU)."""
    n = len(thresholds)
    model = models.sequential_model([f"dense:{n}", "dense:1"], (1,))
    params = {
        "dense_0": _dense([[1.0] * n], [-t for t in thresholds]),
        "dense_1": _dense([[1.0]] * n, [0]),
    }
    return model, params


def test_the_outlier_rule_picks_exactly_the_units_below_mean_minus_2_std():
    # x = 1..10; unit u fires where x > t_u. Frequencies f = 1 (x6), 0.1, 0.7:
    #   mean = 6.8 / 8 = 0.85, var = 6.5 / 8 - 0.85^2 = 0.09, std = 0.3, mean - 2 std = 0.25.
    # Only f = 0.1 lies below; f = 0.7 is low but no outlier.
    model, params = _ramp_layer([0, 0, 0, 0, 0, 0, 9, 3])
    x = jnp.arange(1.0, 11.0)[:, None]
    net = _net(model, params, x)
    f = np.array([1, 1, 1, 1, 1, 1, 0.1, 0.7])
    scores = _score("outliers", net)
    np.testing.assert_allclose(scores, 0.25 - f, atol=1e-5)
    rule = strategies.STRATEGIES["outliers"]
    assert (rule.group, rule.group_threshold, rule.max_failures) == ("threshold", 0.0, 1)
    assert np.flatnonzero(scores >= rule.group_threshold).tolist() == [6]
    # Dead units leave the layer's statistics: without units 0 and 1 the live f are
    # 1 (x4), 0.1, 0.7 (mean 0.8, std 0.33, mean - 2 std = 0.137): numpy over the live.
    masks = {"dense_0": jnp.array([0, 0, 1, 1, 1, 1, 1, 1], bool), "dense_1": jnp.array([True])}
    scores = _score("outliers", _net(model, params, x, masks=masks))
    live = f[2:]
    np.testing.assert_allclose(scores[2:], live.mean() - 2 * live.std() - live, atol=1e-5)
    assert np.flatnonzero((scores >= 0) & np.asarray(masks["dense_0"])).tolist() == [6]
    # The tie f = 0, 1, 1, 1, 1 (mean - 2 std = 0 exactly) counts as an outlier.
    model, params = _ramp_layer([10, 0, 0, 0, 0])
    scores = _score("outliers", _net(model, params, x))
    assert np.flatnonzero(scores >= 0).tolist() == [0]


def test_per_run_cosine_aggregations_equal_the_config_driven_cosine():
    model = models.sequential_model(["dense:5", "dense:1"], (3,))
    masks = spec_lib.full(model.spec)
    masks["dense_0"] = jnp.array([True, False, True, True, True])
    variants = [(how, a) for a in (False, True) for how in strategies.AGGREGATIONS]
    names = [f"{'|cos|' if a else 'cos'}:{how}" for how, a in variants]

    @jax.jit
    def both(params):
        net = _net(model, params, None, y=jnp.zeros(1), masks=masks)
        per_run = [strategies.STRATEGIES[name].score(net, None) for name in names]
        configured = [
            strategies.cosine_score(net, _cfg(aggregation=how, absolute=a)) for how, a in variants
        ]
        return jnp.stack(per_run), jnp.stack(configured)

    rng = np.random.default_rng(0)
    params = {
        "dense_0": _dense(rng.normal(size=(3, 5)), rng.normal(size=5)),
        "dense_1": _dense(rng.normal(size=(5, 1)), [0]),
    }
    per_run, configured = both(params)
    np.testing.assert_array_equal(per_run, configured)
    for name in names:
        rule = strategies.STRATEGIES[name]
        assert (rule.group, rule.max_rounds, rule.max_failures, rule.visit_once) == (
            "one",
            0,
            2,
            False,
        )


@pytest.mark.parametrize("name", ["apoz", "l1_norm", "l2_norm", "taylor", "cos:max", "|cos|:std"])
def test_informed_scores_propose_one_unit_and_stop_after_two_failures(name):
    rule = strategies.STRATEGIES[name]
    assert (rule.group, rule.max_rounds, rule.max_failures, rule.visit_once) == ("one", 0, 2, False)


def test_l1_option_adds_l1_times_sign_to_the_gradient_and_validates():
    import ml_collections

    from jaxshrink.config import validate
    from jaxshrink.core import errors, optim

    params = {
        "dense_0": _dense([[2.0, -3.0], [0.0, 1.0]], [-1.0, 0.0]),
        "dense_1": MLP_PARAMS["dense_1"],
    }
    cfg = ml_collections.ConfigDict(
        {
            "name": "sgd",
            "learning_rate": 1.0,
            "weight_decay": 0.0,
            "weight_decay_mode": "l2",
            "l1": 0.5,
            "frozen_layers": (),
        }
    )
    tx = optim.make_optimizer(cfg, MLP.spec, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    # SGD with learning rate 1: update = -(grad + 0.5 sign(w)), biases included.
    np.testing.assert_array_equal(updates["dense_0"]["kernel"], [[-0.5, 0.5], [0.0, -0.5]])
    np.testing.assert_array_equal(updates["dense_0"]["bias"], [0.5, 0.0])
    c = config_lib.base_config("sobel")
    c.optim.l1 = -1.0
    with pytest.raises(errors.ConfigError, match="optim.l1"):
        validate.validate(c)
    c = config_lib.base_config("sobel")
    c.minimize.distort = -1.0
    with pytest.raises(errors.ConfigError, match="minimize.distort"):
        validate.validate(c)
