"""The MNIST autoencoder (thesis 003 2.7.2): batch norm and transposed convolutions
through the whole pipeline, from the command line (its resume: `test_resume.py`)."""

import json

import numpy as np
import pytest
from conftest import load_config
from test_every_model import _cli

pytestmark = pytest.mark.e2e  # every test here runs a whole experiment


def tiny_autoencoder():
    """The quick autoencoder (batch norm, transposed convolutions) on a few digits."""
    c = load_config("autoencoder", "quick")
    c.data.train_size, c.data.eval_size = 300, 60
    c.train.batch_size = 8
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 40, 20, 20
    c.minimize.round_steps, c.minimize.max_rounds, c.minimize.threshold = 5, 4, 0.5
    c.minimize.strategy = "random"
    c.output.num_examples = 2
    return c


def test_autoencoder_quick_config_from_the_command_line(tmp_path):
    proc = _cli(
        "autoencoder.py:quick",
        tmp_path,
        "--config.data.train_size=600",
        "--config.data.eval_size=100",
        "--config.train.initial_steps=150",
        "--config.train.eval_every=150",
        "--config.minimize.round_steps=20",
        "--config.minimize.max_rounds=3",
        "--config.minimize.threshold=0.5",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== jaxshrink reconstruction (mnist) ==" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["widths"]["before"] == [8, 16, 8, 1]
    assert results["removed_units"] >= 1
    assert results["final"]["eval"]["mse"] < 0.1
    for name in ("samples_trained.png", "samples_minimized.png"):
        assert (tmp_path / name).stat().st_size > 0
    kept = results["widths"]["after"]
    with np.load(tmp_path / "export" / "state.npz") as state:
        assert state["batch_stats/conv_0_bn/mean"].shape == (kept[0],)
        assert state["batch_stats/convT_0_bn/var"].shape == (kept[2],)
