"""Plain Flax modules, unmodified, shrink by their channel groups (`Model.wrap`)."""

import functools
import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from conftest import load_config
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxshrink import data
from jaxshrink.config import schema as config_lib
from jaxshrink.core import errors, models, shrink, spec
from jaxshrink.core.models import Model, zoo
from jaxshrink.deploy import checks as deploy_checks
from jaxshrink.deploy import export
from jaxshrink.deploy import onnx as onnx_export
from jaxshrink.experiments import runner


class ResidualDigits(nn.Module):
    """A stem conv, a block of two convs added to the stem's output, global average
    pooling and two dense layers: no masks, no widths."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), name="stem")(x))
        h = nn.relu(nn.Conv(6, (3, 3), name="conv_a")(x))
        h = nn.Conv(6, (3, 3), name="conv_b")(h)
        x = nn.relu(x + h)
        x = x.mean(axis=(1, 2))
        x = nn.relu(nn.Dense(12, name="hidden")(x))
        return nn.Dense(10, name="logits")(x)


def _texts(leaves):
    return [f"{leaf.collection}/{'/'.join(leaf.path)}:{leaf.axis}" for leaf in leaves]


@pytest.fixture(scope="module")
def residual():
    return Model.wrap(ResidualDigits(), (28, 28, 1))


def test_the_residual_model_is_three_groups(residual):
    stem, conv_a, hidden = residual.spec.layers
    assert residual.spec.names == ["stem", "conv_a", "hidden"]  # the logits are kept
    assert [layer.units for layer in residual.spec.layers] == [6, 6, 12]
    # The add ties the stem's channels to conv_b's: one group, read by conv_a and the
    # dense layer after the pooling.
    assert _texts(stem.owns) == [
        "params/stem/kernel:3",
        "params/stem/bias:0",
        "params/conv_b/kernel:3",
        "params/conv_b/bias:0",
    ]
    assert _texts(stem.feeds) == ["params/conv_a/kernel:2", "params/hidden/kernel:0"]
    assert _texts(conv_a.owns) == ["params/conv_a/kernel:3", "params/conv_a/bias:0"]
    assert _texts(conv_a.feeds) == ["params/conv_b/kernel:2"]
    assert _texts(hidden.owns) == ["params/hidden/kernel:1", "params/hidden/bias:0"]
    assert _texts(hidden.feeds) == ["params/logits/kernel:0"]
    for layer in residual.spec.layers:
        for leaf in (*layer.owns, *layer.feeds):
            assert leaf.owner == tuple(range(layer.units))
    assert [layer.preactivation_path() for layer in residual.spec.layers] == [
        ("stem",),
        ("conv_a",),
        ("hidden",),
    ]


def test_flops_read_each_kernel_between_its_groups(residual):
    masks = spec.full(residual.spec)
    masks["stem"] = masks["stem"].at[0].set(False)
    # positions * (2 * window * inputs * outputs + outputs), 784 pixels per conv:
    stem = 784 * (2 * 9 * 1 * 5 + 5)
    conv_a = 784 * (2 * 9 * 5 * 6 + 6)  # reads the stem's 5 live channels
    conv_b = 784 * (2 * 9 * 6 * 5 + 5)  # writes the stem's group
    dense = (2 * 5 * 12 + 12) + (2 * 12 * 10 + 10)
    assert spec.count_flops(residual.spec, masks) == stem + conv_a + conv_b + dense == 930206
    assert spec.count_flops(residual.spec) == 784 * (2 * 9 * 6 + 6 + 2 * (2 * 9 * 36 + 6)) + (
        2 * 6 * 12 + 12 + 2 * 12 * 10 + 10
    )


def _random_params(model, seed=0):
    params, state = model.init_variables(jax.random.PRNGKey(seed))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    noisy = [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, noisy), state


def test_a_disabled_channel_is_zero_at_every_consumer(residual):
    params, _ = _random_params(residual)  # nonzero biases too
    masks = spec.full(residual.spec)
    masks["stem"] = masks["stem"].at[2].set(False)
    masks["conv_a"] = masks["conv_a"].at[4].set(False)
    inputs = {}

    def record(next_fun, args, kwargs, context):
        inputs[context.module.name] = args[0]
        return next_fun(*args, **kwargs)

    x = jax.random.normal(jax.random.PRNGKey(3), (2, 28, 28, 1))
    with nn.intercept_methods(record):
        residual.apply(params, masks, x)
    assert np.all(np.asarray(inputs["conv_a"])[..., 2] == 0)  # the stem's channel
    assert np.all(np.asarray(inputs["hidden"])[..., 2] == 0)  # after the add and pooling
    assert np.all(np.asarray(inputs["conv_b"])[..., 4] == 0)  # conv_a's channel
    assert np.any(np.asarray(inputs["hidden"])[..., 3] != 0)  # a live one is not


def _masks(model, draw_bits, draw_empty=lambda: False):
    masks = {}
    for layer in model.spec.layers:
        bits = np.asarray(draw_bits(layer.units), bool)
        bits[0] = True  # every group keeps a channel, but a branch may go whole
        if layer.bypass and draw_empty():
            bits[:] = False
        masks[layer.name] = jnp.asarray(bits)
    return masks


@pytest.fixture(scope="module")
def small_models():
    return {
        "residual": Model.wrap(ResidualDigits(), (12, 12, 1)),
        "resnet8": Model.wrap(zoo.CifarResNet(depth=8, widths=(4, 6, 8)), (8, 8, 3)),
        "unet": Model.wrap(zoo.UNet(widths=(4, 6)), (8, 8, 1)),
        "mobilenet": Model.wrap(
            zoo.MobileNetLike(stem_width=4, blocks=((1, 4, 1), (2, 6, 2), (2, 6, 1))),
            (8, 8, 1),
        ),
    }


@functools.cache
def _jitted_apply(model):
    return jax.jit(lambda p, s, m, v: model.apply(p, m, v, state=s))


@settings(max_examples=5, deadline=None)
@given(name=st.sampled_from(["residual", "resnet8", "unet", "mobilenet"]), data=st.data())
def test_the_smaller_program_equals_the_masked_model(small_models, name, data):
    model = small_models[name]
    params, state = _random_params(model, seed=len(name))
    masks = _masks(
        model,
        lambda n: data.draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        lambda: data.draw(st.booleans()),
    )
    x = jax.random.normal(jax.random.PRNGKey(5), (2, *model.spec.input_shape))
    want = _jitted_apply(model)(params, state, masks, x)
    fn, small = model.small_program({"params": params, **state}, masks)
    np.testing.assert_allclose(jax.jit(fn)(small, x), want, rtol=1e-4, atol=1e-5)
    widths = model.spec.widths(masks)
    for layer in model.spec.layers:  # the first producer kernel lost what was disabled
        kernel = small["params"]
        for key in layer.kernel.path:
            kernel = kernel[key]
        assert kernel.shape[layer.kernel.axis] == widths[layer.name]


class OverlappingPool(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        x = nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
        return nn.Dense(3, name="out")(x.mean(axis=(1, 2)))


def test_a_pooling_that_does_not_tile_keeps_onnx_off_before_training():
    model = Model.wrap(OverlappingPool(), (6, 6, 1))
    c = _digits_config()
    c.deploy.enabled, c.deploy.input_shape = True, ()
    with pytest.raises(errors.ConfigError, match=r"deploy.onnx: got True.*reduce_window_max"):
        deploy_checks.check(c, model)
    c.deploy.onnx = False
    deploy_checks.check(c, model)


def test_the_branches_are_the_groups_off_the_spine(residual, small_models):
    def branches(model):
        return [layer.name for layer in model.spec.bypassable]

    assert branches(residual) == ["conv_a"]  # the stem's stream and the dense layer stay
    # A residual block's inner channels; the streams (stem, and each stage's
    # projection joined to its blocks' second convs) are the spine.
    assert branches(small_models["resnet8"]) == [
        "stage1_block1/conv1",
        "stage2_block1/conv1",
        "stage3_block1/conv1",
    ]
    # The deeper level: the concatenated skip still reaches the decoder without it.
    assert branches(small_models["unet"]) == ["bottleneck/conv1", "bottleneck/conv2", "up0"]
    # Only the block that adds its input: the strided one has no shortcut.
    assert branches(small_models["mobilenet"]) == ["block3/expand"]


def test_a_removed_branch_leaves_the_shortcut(residual):
    """With conv_a's channels all gone, the block is its shortcut plus conv_b's bias
    (conv_b reads nothing): the masked network, and the smaller program without any
    empty operation, compute exactly that."""
    params, state = _random_params(residual)
    masks = {**spec.full(residual.spec), "conv_a": jnp.zeros((6,), bool)}
    x = jax.random.normal(jax.random.PRNGKey(7), (3, 28, 28, 1))
    p = jax.tree.map(np.asarray, params)

    def conv(name, v):
        return nn.Conv(6, (3, 3)).apply({"params": p[name]}, v)

    h = jax.nn.relu(conv("stem", x))
    h = jax.nn.relu(h + p["conv_b"]["bias"]).mean(axis=(1, 2))
    h = jax.nn.relu(h @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    want = h @ p["logits"]["kernel"] + p["logits"]["bias"]
    np.testing.assert_allclose(residual.apply(params, masks, x, state=state), want, atol=1e-5)
    fn, small = residual.small_program({"params": params, **state}, masks)
    np.testing.assert_allclose(jax.jit(fn)(small, x), want, atol=1e-5)
    program = jax.make_jaxpr(fn)(small, x).jaxpr
    assert not [e for e in program.eqns if any(0 in v.aval.shape for v in e.outvars)]
    assert spec.depth(residual.spec, masks) == 2
    assert small["params"]["conv_a"]["kernel"].shape == (3, 3, 6, 0)
    # The stem; conv_b's bias alone (it reads nothing); the dense layers.
    flops = 784 * (2 * 9 * 6 + 6) + 784 * 6 + (2 * 6 * 12 + 12) + (2 * 12 * 10 + 10)
    assert spec.count_flops(residual.spec, masks) == flops


def test_taylor_derivatives_reach_a_wrapped_model(residual):
    params, _ = _random_params(residual)
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 28, 28, 1))
    ones = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), spec.full(residual.spec))
    grads = jax.grad(lambda m: jnp.sum(residual.apply(params, m, x) ** 2))(ones)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads))
    # With bool masks the same call is the masked network, without scaling.
    np.testing.assert_allclose(
        residual.apply(params, ones, x), residual.apply(params, spec.full(residual.spec), x)
    )


class CumsumChannels(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        x = jnp.cumsum(x, axis=-1)  # mixes channels in a way no rule describes
        x = nn.relu(nn.Conv(5, (3, 3), name="second")(x))
        return nn.Dense(3, name="out")(x.mean(axis=(1, 2)))


def test_an_unknown_primitive_keeps_its_channels_and_says_so():
    log = io.StringIO()
    model = Model.wrap(CumsumChannels(), (6, 6, 1), log=log)
    assert model.spec.names == ["second"]  # conv's channels are kept
    assert "jaxshrink: note: 'cumsum' on the channel axis" in log.getvalue()
    assert "those channels are kept" in log.getvalue()


def test_a_model_with_nothing_to_remove_is_refused():
    with pytest.raises(ValueError, match="no channel group can be removed"):
        Model.wrap(nn.Dense(3), (4,))


def test_a_wrapped_model_has_no_builder(residual):
    with pytest.raises(TypeError, match="rewritten at the kept widths"):
        residual.at_widths(residual.spec.widths())


def _digits_config():
    c = config_lib.common_config("classification", "mnist")
    c.data.train_size, c.data.eval_size = 300, 100
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 60, 30, 30
    c.train.batch_size = 16
    c.minimize.round_steps, c.minimize.max_rounds, c.minimize.threshold = 5, 3, 0.05
    return c


@pytest.mark.e2e
def test_the_residual_model_shrinks_end_to_end(tmp_path):
    model = Model.wrap(ResidualDigits(), (28, 28, 1))
    c = _digits_config()
    c.minimize.depth = "cost"  # the first round tries the branch, then units
    d = c.deploy
    d.enabled, d.bits, d.batch_sizes, d.repeats, d.budget_s = True, (8, 4), (1, 3), 3, 0.5
    results = runner.run(c, str(tmp_path), model=model)
    assert results["status"] == "ok"
    first = results["rounds"][0]
    assert (first["kind"], first["candidate"], first["accepted"]) == ("layer", "conv_a", True)
    assert results["layers"] == ["stem", "conv_a", "hidden"]
    assert results["removed_units"] >= 1
    assert sum(results["widths"]["after"]) == 24 - results["removed_units"]
    assert results["export"]["max_abs_diff"] <= 1e-5
    small = export.load(str(tmp_path / "export"))
    widths = dict(zip(results["layers"], results["widths"]["after"]))
    assert widths["conv_a"] == 0  # the block is its shortcut
    assert small["stem"]["kernel"].shape == (3, 3, 1, widths["stem"])
    assert small["conv_b"]["kernel"].shape == (3, 3, widths["conv_a"], widths["stem"])
    assert small["hidden"]["kernel"].shape == (widths["stem"], widths["hidden"])
    for name in ("confusion_matrix.png", "timeline.png", "kept.png"):
        assert (tmp_path / name).stat().st_size > 0
    # The deploy stage: the smaller program as ONNX (any batch), its quantized form;
    # no factorized form (a plain module has no low-rank builder).
    forms = {row["form"]: row for row in results["deploy"]["forms"]}
    assert list(forms) == ["full", "minimized", "int8", "quantized"]
    assert forms["minimized"]["flops"] == results["flops"]["after"]
    assert forms["minimized"]["params"] == results["params"]["after"]
    assert forms["minimized"]["score"] == pytest.approx(results["final"]["eval"]["score"])
    for name in ("full", "minimized", "quantized"):
        assert forms[name]["onnx"]["max_abs_diff"] <= 1e-5
        assert forms[name]["onnx"]["input_shape"] == ["B", 28, 28, 1]
        assert forms[name]["onnxruntime_b3"]["median_s"] > 0
    assert forms["quantized"]["bytes"] < forms["minimized"]["bytes"]
    # Every kernel that holds weights is stored as integer codes (conv_a and conv_b
    # have none left; the logits' kernel is one too).
    stored = onnx.load(str(tmp_path / "deploy" / "quantized.onnx")).graph.initializer
    codes = [t for t in stored if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    assert sorted(tuple(t.dims) for t in codes) == sorted(
        [(3, 3, 1, 6), (widths["stem"], widths["hidden"]), (widths["hidden"], 10)]
    )


@pytest.mark.parametrize("config_name", ["resnet", "unet", "mobilenet"])
def test_every_plain_family_of_the_configs_exports_exactly(config_name, tmp_path):
    c = load_config(config_name, "quick")
    assert c.model.name in models.PLAIN
    shape = data.input_shape(c.data)
    model = models.get_model(c.model, shape)
    params, state = _random_params(model)
    rng = np.random.default_rng(len(config_name))
    masks = _masks(model, lambda n: rng.random(n) < 0.6, lambda: True)  # no branch left
    x = jax.random.normal(jax.random.PRNGKey(2), (2, *shape))
    fn, small = model.small_program({"params": params, **state}, masks)
    want = jax.jit(lambda p, s, m, v: model.apply(p, m, v, state=s))(params, state, masks, x)
    np.testing.assert_allclose(jax.jit(fn)(small, x), want, rtol=1e-4, atol=1e-5)
    # Its ONNX file (a symbolic batch) computes the same, through onnxruntime; the
    # U-Net pools, which the deploy stage's check refuses before any training.
    c.deploy.enabled = True
    deploy_checks.check(c, model)  # each config's deploy section fits its module
    path = str(tmp_path / "small.onnx")
    record = onnx_export.to_onnx(lambda v: fn(small, v), shape, path)
    assert record["input_shape"] == ["B", *shape]
    scale = max(1.0, float(np.max(np.abs(want))))  # random weights: large outputs
    onnx_export.check(path, lambda v: fn(small, v), np.asarray(x), atol=1e-5 * scale)
    before, after = shrink.count(model.graph, {"params": params}, model.group_keep(masks))
    assert (before, after) == (spec.count_params(params), spec.count_params(small["params"]))
    assert after < before
