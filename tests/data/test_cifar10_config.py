"""The CIFAR-10 config: Models A, B and C as in thesis 004, end to end on a fake folder."""

import json

import jax
import pytest
from conftest import load_config
from test_cifar10 import _write_folder

from jaxshrink import data
from jaxshrink.core import errors, models, spec
from jaxshrink.experiments import runner

# Parameters by hand: 5x5 kernels, 'SAME', two 2x2 poolings (32 -> 8), biases.
A = (5 * 5 * 3 * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (8 * 8 * 64 * 1024 + 1024) + (1024 * 10 + 10)
B = (
    (5 * 5 * 3 * 96 + 96)
    + (5 * 5 * 96 * 192 + 192)
    + (8 * 8 * 192 * 2048 + 2048)
    + (2048 * 2048 + 2048)
    + (2048 * 10 + 10)
)
C = B + (5 * 5 * 96 * 96 + 96) + (5 * 5 * 192 * 192 + 192)


@pytest.mark.parametrize(
    "arg, widths, params",
    [
        ("a", [32, 64, 1024, 10], A),
        ("b", [96, 192, 2048, 2048, 10], B),
        ("c", [96, 96, 192, 192, 2048, 2048, 10], C),
    ],
)
def test_models_a_b_c(arg, widths, params):
    c = load_config("cifar10", arg)
    model = models.get_model(c.model, data.input_shape(c.data))
    assert [layer.units for layer in model.spec.layers] == widths
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    assert spec.count_params(shapes) == params
    assert (A, B, C) == (4_259_274, 29_853_002, 31_005_290)


@pytest.mark.e2e
def test_missing_cifar_stops_with_one_line(tmp_path):
    c = load_config("cifar10", "quick")
    c.data.tfds_data_dir = str(tmp_path / "nothing")
    with pytest.raises(errors.DataError) as info:
        runner.run(c, str(tmp_path / "w"))
    message = str(info.value)
    assert "tfds build cifar10" in message and "cifar-10-batches-py" in message
    assert "\n" not in message


@pytest.mark.e2e
def test_quick_model_a_on_a_fake_folder(tmp_path):
    _write_folder(tmp_path / "cifar-10-batches-py")
    c = load_config("cifar10", "quick")
    c.data.source, c.data.folder = "folder", str(tmp_path / "cifar-10-batches-py")
    c.data.train_size, c.data.eval_size = 0, 0
    c.train.batch_size, c.train.initial_steps, c.train.eval_every = 4, 20, 10
    c.minimize.round_steps, c.minimize.max_rounds, c.minimize.threshold = 2, 2, 0.01
    c.output.num_examples = 3
    results = runner.run(c, str(tmp_path / "w"))
    assert results["status"] == "ok" and results["removed_units"] >= 1
    assert results["widths"]["before"] == [4, 8, 128, 10]
    saved = json.loads((tmp_path / "w" / "results.json").read_text())
    assert saved["data"]["dataset"] == "cifar10" and saved["data"]["source"] == "folder"


@pytest.mark.e2e
def test_thesis_003_network_and_its_distortions_on_a_fake_folder(tmp_path):
    c = load_config("cifar10", "t003")
    model = models.get_model(c.model, (24, 24, 3))  # the 24x24 crops
    assert [layer.units for layer in model.spec.layers] == [64, 64, 384, 192, 10]
    assert model.spec.layer("dense_0").in_features == 6 * 6 * 64  # two 3/2 'SAME' pools
    assert [leaf.path[-1] for leaf in model.spec.layer("dense_1").owns] == [
        "kernel", "bias", "scale", "bias", "mean", "var"
    ]  # fmt: skip
    assert c.augment.crop == 24 and c.augment.standardize and c.data.normalize == "unit"

    _write_folder(tmp_path / "cifar-10-batches-py")
    c = load_config("cifar10", "t003,quick")
    c.data.source, c.data.folder = "folder", str(tmp_path / "cifar-10-batches-py")
    c.data.train_size, c.data.eval_size = 0, 0
    c.train.batch_size, c.train.initial_steps, c.train.eval_every = 4, 12, 6
    c.minimize.round_steps, c.minimize.max_rounds, c.minimize.threshold = 2, 2, 0.01
    c.output.num_examples = 3
    results = runner.run(c, str(tmp_path / "w"))
    assert results["status"] == "ok" and results["removed_units"] >= 1
    assert results["widths"]["before"] == [8, 8, 48, 24, 10]
    assert (tmp_path / "w" / "export" / "state.npz").stat().st_size > 0
