"""Deployment: ONNX files equal the JAX networks, the deploy stage end to end, its rules."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from conftest import load_config, tiny_config

from jaxshrink.config import validate
from jaxshrink.core import errors, models, train
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.results import DeployForm, Latency
from jaxshrink.deploy import export, quantize
from jaxshrink.deploy import onnx as onnx_export
from jaxshrink.deploy import stage as deploy
from jaxshrink.experiments import runner
from jaxshrink.report import summary as report

# (config, preset, one example's shape): every registered network family and layer kind
# (conv, strided conv, convT, batch norm, max pooling with 'SAME', dropout, dense).
NETWORKS = [
    ("sobel", None, (12, 12, 1)),
    ("mnist", "quick", (28, 28, 1)),
    ("cifar10", "quick", (32, 32, 3)),
    ("autoencoder", "quick", (28, 28, 1)),
    ("summation", None, (2,)),
]


def _random_network(model, seed):
    """Random params and batch-norm statistics, and masks with one unit off per layer
    that has more than one (so the compact network is not the full one)."""
    rng = np.random.default_rng(seed)
    params, state = model.init_variables(jax.random.PRNGKey(seed))
    state = jax.tree.map(lambda v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape), v.dtype), state)
    masks = {}
    for layer in model.spec.layers:
        keep = np.ones(layer.units, bool)
        if layer.candidate and layer.units > 1:
            keep[rng.integers(layer.units)] = False
        masks[layer.name] = jnp.asarray(keep)
    return params, state, masks


@pytest.mark.parametrize("name,preset,shape", NETWORKS, ids=[n[0] for n in NETWORKS])
def test_onnx_equals_the_compact_jax_network(name, preset, shape, tmp_path):
    c = load_config(name, preset)
    model = models.get_model(c.model, shape)
    params, state, masks = _random_network(model, 3)
    widths = model.spec.widths(masks)
    small = model.at_widths(widths)
    small_params = export.compact(model.spec, params, masks)
    small_state = export.compact_state(model.spec, state, masks)
    ones = spec_lib.full(small.spec)

    def fn(x):
        return small.apply(small_params, ones, x, state=small_state)

    x = np.random.default_rng(0).uniform(size=(3, *shape)).astype(np.float32)
    path = str(tmp_path / "net.onnx")
    info = onnx_export.to_onnx(fn, shape, path)
    assert info["input_shape"] == ["B", *shape] and info["opset"] == onnx_export.OPSET
    assert onnx_export.check(path, fn, x) <= 1e-5
    # and the compact network is the masked full one
    want = model.apply(params, masks, x, state=state)
    np.testing.assert_allclose(fn(x), want, rtol=1e-4, atol=1e-5)


def test_an_image_network_exported_from_crops_runs_on_larger_images(tmp_path):
    model = models.get_model(load_config("sobel").model, (12, 12, 1))
    params = model.init(jax.random.PRNGKey(0))
    ones = spec_lib.full(model.spec)

    def fn(x):
        return model.apply(params, ones, x)

    path = str(tmp_path / "fcn.onnx")
    info = onnx_export.to_onnx(fn, (12, 12, 1), path, spatial=True)
    assert info["input_shape"] == ["B", "H", "W", 1]
    x = np.random.default_rng(1).uniform(size=(2, 20, 24, 1)).astype(np.float32)
    assert onnx_export.check(path, fn, x) <= 1e-5


def test_a_wrong_onnx_output_fails_the_check(tmp_path):
    path = str(tmp_path / "double.onnx")
    onnx_export.to_onnx(lambda x: 2.0 * x, (3,), path)
    with pytest.raises(AssertionError, match="differs"):
        onnx_export.check(path, lambda x: 2.0 * x + 1e-4, np.ones((2, 3), np.float32))


def test_a_missing_extra_is_one_clear_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    c = tiny_config()
    c.deploy.enabled = True
    with pytest.raises(errors.ConfigError, match=r'onnxruntime.*pip install -e "\.\[deploy\]"'):
        validate.validate(c)
    c.deploy.onnx = False  # XLA latency only: nothing to install
    validate.validate(c)


@pytest.mark.parametrize(
    "field,value",
    [
        ("bits", (8, 1)),
        ("bits", ()),
        ("quant_bits", 9),
        ("threshold", 1.5),
        ("batch_sizes", (0,)),
        ("input_shape", (32, 32, 3)),
        ("repeats", 0),
    ],
)
def test_deploy_fields_are_validated(field, value):
    c = tiny_config()
    c.deploy.enabled = True
    c.deploy[field] = value
    model = models.get_model(c.model, (16, 16, 1))
    with pytest.raises(errors.ConfigError, match=f"deploy.{field}"):
        validate.validate(c, model)


def test_only_a_convolutional_network_is_timed_on_other_image_sizes():
    c = load_config("mnist", "quick")  # dense layers: its inputs are 28x28x1 only
    c.deploy.enabled, c.deploy.onnx = True, False
    c.deploy.input_shape = (56, 56, 1)
    with pytest.raises(
        errors.ConfigError, match=r"deploy.input_shape.*allowed: \(\) or \(28, 28, 1\)$"
    ):
        validate.validate(c)
    c.deploy.input_shape = (28, 28, 1)
    validate.validate(c)
    fcn = tiny_config()
    fcn.deploy.enabled, fcn.deploy.onnx = True, False
    fcn.deploy.input_shape = (256, 256, 1)
    validate.validate(fcn)


def test_notes_say_where_flops_fell_and_latency_did_not():
    def row(form, flops, ort):
        return DeployForm(form, {}, 0, flops, 0, latencies=(Latency("onnxruntime", 1, ort, 3),))

    rows = [row("full", 100, 1.0), row("minimized", 50, 0.5), row("factorized", 30, 0.95)]
    assert deploy._notes(rows) == [
        "factorized: FLOPs 30% of the full network's, but onnxruntime_b1 latency 95% of its"
    ]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """One tiny Canny run (its F1 is above 0 after 40 steps) with the deploy stage on."""
    c = tiny_config("canny")
    c.minimize.max_rounds = 2
    d = c.deploy
    d.enabled = True
    d.threshold = 0.9
    d.bits = (8, 4, 2)
    d.batch_sizes = (1, 4)
    d.input_shape = (32, 32, 1)
    d.repeats, d.budget_s = 3, 1.0
    d.finetune_steps = 5
    workdir = tmp_path_factory.mktemp("deploy")
    return c, workdir, runner.run(c, str(workdir))


@pytest.mark.e2e
def test_deploy_stage_writes_every_form(deployed):
    c, workdir, results = deployed
    record = json.loads((workdir / "deploy" / "deploy.json").read_text())
    assert record["forms"] == json.loads(json.dumps(results["deploy"]["forms"]))
    assert all(row["score"] > 0 for row in record["forms"])
    forms = {r["form"]: r for r in record["forms"]}
    assert list(forms)[:4] == ["full", "minimized", "int8", "quantized"]
    for name, row in forms.items():
        assert (workdir / "deploy" / f"{name}.onnx").stat().st_size == row["onnx"]["bytes"]
        engines = ("onnxruntime",) if name == "int8" else ("onnxruntime", "xla")
        for key in (f"{e}_b{b}" for e in engines for b in (1, 4)):
            assert row[key]["median_s"] > 0 and row[key]["repeats"] >= 3
        if name == "int8":  # onnxruntime's own quantization: checked by its score only
            assert "xla_b1" not in row and row["onnx"]["calibration"] == 6
            continue
        assert row["onnx"]["max_abs_diff"] <= 1e-5
        assert row["onnx"]["input_shape"] == ["B", "H", "W", 1]
    assert forms["full"]["score"] == pytest.approx(results["trained"]["eval"]["score"], rel=1e-5)
    assert forms["minimized"]["score"] == pytest.approx(results["final"]["eval"]["score"], rel=1e-5)
    assert forms["minimized"]["flops"] == results["flops"]["after"]
    assert forms["full"]["bytes"] == 4 * results["params"]["before"]
    assert record["latency_input_shape"] == [32, 32, 1]
    text = (workdir / "deploy" / "deploy.md").read_text()
    assert "| quantized |" in text and "| bits |" in text


@pytest.mark.e2e
def test_the_bit_width_is_the_one_the_threshold_rule_keeps(deployed):
    c, _, results = deployed
    record = results["deploy"]
    minimized = next(r for r in record["forms"] if r["form"] == "minimized")
    last, chosen = minimized["score"], None
    for row in record["bits"]:  # 8, 4, 2: each compared with the last kept score
        ok = row["score"] >= c.deploy.threshold * last
        assert row["searched"] and row["accepted"] == ok
        if not ok:
            break
        last, chosen = row["score"], row["bits"]
    quantized = [r for r in record["forms"] if r["form"] == "quantized"]
    assert [r["bits"] for r in quantized] == ([chosen] if chosen else [])


@pytest.mark.e2e
def test_the_quantized_onnx_file_stores_integer_kernels(deployed):
    _, workdir, results = deployed
    forms = {r["form"]: r for r in results["deploy"]["forms"]}
    model = onnx.load(str(workdir / "deploy" / "quantized.onnx"))
    ints = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    kernels = sorted(int(np.prod(i.dims)) for i in ints if len(i.dims) == 4)
    widths = forms["minimized"]["widths"]  # [w0, w1, 1] for 1 -> w0 -> w1 -> 1, 5x5
    assert kernels == sorted([25 * widths[0], 25 * widths[0] * widths[1], 25 * widths[1]])
    assert forms["quantized"]["bytes"] < forms["minimized"]["bytes"]


@pytest.mark.e2e
def test_the_factorized_form_has_the_ranks_of_the_search(deployed):
    _, _, results = deployed
    record = results["deploy"]
    chosen = {t["layer"]: t["rank"] for t in record["ranks"] if t.get("chosen")}
    factorized = [r for r in record["forms"] if r["form"] == "factorized"]
    if not chosen:
        assert not factorized
        return
    (row,) = factorized
    assert row["ranks"] == chosen and row["finetune_steps"] == 5
    assert "deploy (latency in ms" in report.summary(results)


def test_the_forms_of_a_network_with_a_bypassed_layer_compute_the_masked_one():
    # conv_2 has no live unit: the compact network leaves it out (identity), so the
    # layers after it must keep their own widths in every form.
    model = models.sequential_model(
        ["conv:3:3"] * 5 + ["conv:1:3"], (8, 8, 1), init_std=0.3, bypass=True
    )
    params = model.init(jax.random.PRNGKey(0))
    masks = spec_lib.full(model.spec)
    masks["conv_2"] = jnp.zeros_like(masks["conv_2"])
    masks["conv_1"] = masks["conv_1"].at[0].set(False)
    final = train.TrainState(params, {}, None, masks, masks, jnp.int32(0), jnp.zeros(2, jnp.uint32))
    x = jax.random.uniform(jax.random.PRNGKey(5), (2, 8, 8, 1))
    want = model.apply(params, masks, x)
    minimized, small = deploy.minimized_form(model, final)
    assert minimized.info["widths"] == [3, 2, 0, 3, 3, 1]
    # The compact network sums over fewer channels than the masked one (whose extra
    # terms are exact zeros), and a convolution may take another form at other
    # widths: equal to float rounding.
    np.testing.assert_allclose(minimized.exported()(x), want, rtol=1e-6, atol=1e-6)
    # At full rank the factorized pair is the layer itself, to float rounding: conv_3
    # reads conv_1's 2 kept channels (conv_2 is bypassed), so its 3x3 kernel is
    # (3, 3, 2, 3), of rank at most min(3 x 2, 3 x 3) = 6.
    factorized = deploy.factorized_form(model, minimized, small, {"conv_3": 6}, (8, 8, 1))
    np.testing.assert_allclose(factorized.exported()(x), want, rtol=1e-4, atol=1e-5)
    quantized = deploy.quantized_form(minimized, small, quantize.Scheme(bits=8))
    np.testing.assert_allclose(quantized.exported()(x), want, atol=0.02)
