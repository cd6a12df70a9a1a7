"""The machinery that exists for the edge FCN works for the other theses' networks too:
the quick configs from the command line, sweeps, kill-and-resume, NaN isolation, the
workdir and size checks."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, load_config, tiny_mnist

from jaxshrink.config import validate
from jaxshrink.core import errors
from jaxshrink.experiments import runner, sweep


def _cli(config_arg, workdir, *overrides, timeout=300):
    cmd = [
        sys.executable,
        "-m",
        "jaxshrink.main",
        f"--config={os.path.join(ROOT, 'configs', config_arg)}",
        f"--workdir={workdir}",
        *overrides,
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def tiny_summation():
    c = load_config("summation", "quick")
    c.model.hidden = (32,)
    c.data.train_size, c.data.eval_size = 2000, 200
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 300, 100, 100
    c.minimize.round_steps = 20
    c.minimize.threshold = 0.5
    c.minimize.max_rounds = 4
    c.minimize.group = "adaptive"  # groups of units resume too (MinState.group)
    c.output.num_examples = 50
    return c


@pytest.mark.e2e
def test_summation_quick_config_from_the_command_line(tmp_path):
    proc = _cli("summation.py:quick", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== jaxshrink regression (summation) ==" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["removed_units"] >= 1
    assert results["data"]["dataset"] == "summation"
    assert results["data"]["train_examples"] == 20000
    assert results["final"]["eval"]["mse"] < 1e-3  # Adam converges (003's Momentum did not)
    assert (tmp_path / "unit_weights.png").stat().st_size > 0


@pytest.mark.e2e
def test_a_sweep_of_the_mnist_classifier(tmp_path):
    c = tiny_mnist()
    sweep.add_section(c)
    c.sweep.num_seeds = 2
    c.sweep.strategies = ("cosine", "random")
    c.sweep.thresholds = (0.5,)
    results = runner.run(c, str(tmp_path))
    rows = results["runs"]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert {(r["seed"], r["strategy"]) for r in rows} == {
        (s, k) for s in (0, 1) for k in ("cosine", "random")
    }
    # Runs of a seed start from the same trained network.
    for seed in (0, 1):
        assert len({r["baseline"] for r in rows if r["seed"] == seed}) == 1
    assert all(r["disabled"] == r["accepted"] for r in rows)


@pytest.mark.parametrize(
    "config_arg, field, value, message",
    [
        ("mnist.py:quick", "model.layers", ("conv:8:5", "avgpool:2", "dense:10"), "model.layers"),
        ("mnist.py:quick", "model.layers", ("conv:8:29:valid", "dense:10"), "model: "),
        ("sobel.py:quick", "data.crop_size", 6, "data.crop_size"),
        ("summation.py:quick", "train.loss", "cross_entropy", "train.loss"),
        ("summation.py:quick", "data.dataset", "cifar", "data.dataset"),
    ],
)
def test_bad_sizes_and_names_are_one_line_config_errors(config_arg, field, value, message):
    name, arg = config_arg.split(".py:")
    c = load_config(name, arg)
    section, key = field.split(".")
    c[section][key] = value
    with pytest.raises(errors.ConfigError) as info:
        validate.validate(c)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.e2e
def test_bad_input_from_the_command_line_exits_2_and_writes_nothing(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for workdir, override, field in (
        (tmp_path / "w", "--config.model.layers=('conv:8:29:valid','dense:10')", "model: "),
        (afile, "--config.seed=0", "workdir: "),
    ):
        proc = _cli("mnist.py:quick", workdir, override, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"jaxshrink: error: {field}"), lines
    assert not (tmp_path / "w").exists()  # nothing written
    assert afile.read_text() == "not a folder"


def test_a_workdir_below_a_file_cannot_be_created(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(errors.ConfigError, match="^workdir: cannot create"):
        validate.check_workdir(str(afile / "below"))
    validate.check_workdir(str(tmp_path / "new" / "deeper"))  # creatable: fine
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # the check leaves nothing behind


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_workdir_on_a_pseudo_filesystem_is_one_line_and_exit_2():
    # /proc lets root pass every permission check yet holds no files.
    proc = _cli("mnist.py:quick", "/proc/jaxshrink-workdir")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("jaxshrink: error: workdir: cannot create /proc/jaxshrink-workdir")
    assert not os.path.exists("/proc/jaxshrink-workdir")


@pytest.mark.e2e
def test_missing_cifar_from_the_command_line_exits_2_with_one_line(tmp_path):
    proc = _cli(
        "cifar10.py:t003,quick", tmp_path / "w", f"--config.data.tfds_data_dir={tmp_path / 'no'}"
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "tfds build cifar10" in proc.stderr and "cifar-10-batches-py" in proc.stderr
