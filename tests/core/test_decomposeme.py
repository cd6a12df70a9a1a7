"""Convolutions trained separable from the start (DecomposeMe, thesis 003 2.5.1): the
K x 1 and 1 x K pairs train, shrink by their channel groups and export smaller."""

import jax
import numpy as np
import pytest
from conftest import load_config

from jaxshrink.core import models
from jaxshrink.experiments import runner


def test_every_convolution_is_a_k_by_1_then_a_1_by_k_pair_whose_inner_channels_shrink():
    c = load_config("mnist", "t003,quick,decomposeme")
    model = models.get_model(c.model, (28, 28, 1))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    shapes = {name: tuple(leaf["kernel"].shape) for name, leaf in params.items()}
    # 003's (32, 64, 128) at quick's eighth, through (4, 64, 128) / 8 inner channels.
    assert shapes["conv0_v"] == (5, 1, 1, 1) and shapes["conv0"] == (1, 5, 1, 4)
    assert shapes["conv1_v"] == (5, 1, 4, 8) and shapes["conv1"] == (1, 5, 8, 8)
    assert shapes["conv2_v"] == (7, 1, 8, 16) and shapes["conv2"] == (1, 7, 16, 16)
    assert shapes["head"] == (16, 10)
    # The inner channels are groups of their own: the search may remove them too.
    assert [layer.name for layer in model.spec.candidates] == [
        "conv0_v", "conv0", "conv1_v", "conv1", "conv2_v", "conv2"
    ]  # fmt: skip


@pytest.mark.e2e
def test_the_separable_network_trains_shrinks_and_exports(tmp_path):
    c = load_config("mnist", "t003,quick,decomposeme")
    c.data.train_size, c.data.eval_size = 300, 100
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 300, 150, 150
    c.minimize.round_steps, c.minimize.max_rounds, c.minimize.threshold = 5, 3, 0.5
    c.output.num_examples = 2
    results = runner.run(c, str(tmp_path))
    assert results["status"] == "ok" and results["removed_units"] >= 1
    assert results["final"]["eval"]["score"] > 0.3  # better than chance after 300 steps
    assert results["export"]["max_abs_diff"] < 1e-4  # the smaller program is the network
    with np.load(tmp_path / "export" / "params.npz") as arrays:
        kernels = {k: arrays[k].shape for k in arrays.files if k.endswith("kernel")}
    widths = dict(zip(results["layers"], results["widths"]["after"]))
    assert kernels["conv1_v/kernel"] == (5, 1, widths["conv0"], widths["conv1_v"])
    assert kernels["conv1/kernel"] == (1, 5, widths["conv1_v"], widths["conv1"])
