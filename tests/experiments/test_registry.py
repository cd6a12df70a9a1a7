"""The registry and the runner: a config's section selects its experiment, two sections
are one line (from the library and the command line, before anything is written), and
only process 0 writes files."""

import os
import subprocess
import sys

import pytest
from conftest import ROOT, load_config, tiny_config

import jaxshrink
from jaxshrink.core import errors, models
from jaxshrink.experiments import correlation, depth, registry, relearn, runner, sweep
from jaxshrink.runtime import distributed

TWO_SECTIONS = "config has sections 'sweep' and 'depth'; allowed: at most one experiment section"


def test_every_experiment_is_registered_once_under_its_section():
    found = registry.experiments()
    assert list(found) == list(registry.MODULES)
    sections = [e.section for e in found.values()]
    assert sections == [None, "sweep", "correlation", "relearn", "depth"]
    assert [e.name for e in found.values() if e.own_model] == ["single"]


@pytest.mark.parametrize(
    "name, arg, want",
    [
        ("sobel", "quick", "single"),
        ("mnist", "quick", "single"),
        ("sweep", "quick", "sweep"),
        ("compare", "fcn", "sweep"),
        ("correlation", "quick", "correlation"),
        ("relearn", "quick", "relearn"),
        ("depth", "quick", "depth"),
    ],
)
def test_select_picks_the_experiment_of_the_config_section(name, arg, want):
    assert registry.select(load_config(name, arg)).name == want


def test_a_section_added_to_any_run_config_selects_its_experiment():
    for module in (sweep, correlation, relearn):
        c = tiny_config("canny")
        assert registry.select(c).name == "single"
        module.add_section(c)
        section = module.EXPERIMENT.section
        assert registry.select(c).name == section
        assert c[section] == module.default_config("canny")[section]
    assert registry.select(depth.get_preset("quick")).name == "depth"


def _two_sections():
    c = sweep.get_preset("canny", "quick")
    c.depth = depth.get_preset("quick").depth
    return c


@pytest.mark.e2e
def test_two_experiment_sections_are_one_line_error(tmp_path):
    with pytest.raises(errors.ConfigError) as info:
        registry.select(_two_sections())
    assert str(info.value) == TWO_SECTIONS
    workdir = tmp_path / "w"
    with pytest.raises(errors.ConfigError, match="^config has sections 'sweep' and 'depth'"):
        runner.run(_two_sections(), str(workdir))
    assert not workdir.exists()  # refused before the workdir is claimed


@pytest.mark.e2e
def test_two_experiment_sections_on_the_command_line_exit_2_and_write_nothing(tmp_path):
    config_file = tmp_path / "two.py"
    config_file.write_text(
        "from jaxshrink.experiments import depth, sweep\n\n\n"
        "def get_config(arg=None):\n"
        "    c = sweep.get_preset('canny', 'quick')\n"
        "    c.depth = depth.get_preset('quick').depth\n"
        "    return c\n"
    )
    workdir = tmp_path / "w"
    proc = subprocess.run(
        [sys.executable, "-m", "jaxshrink.main", f"--config={config_file}", f"--workdir={workdir}"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"jaxshrink: error: {TWO_SECTIONS}"]
    assert not workdir.exists()


@pytest.mark.e2e
def test_a_model_of_your_own_runs_only_as_a_single_run(tmp_path):
    model = models.get_model(tiny_config("canny").model, (16, 16, 1))
    c = tiny_config("canny")
    sweep.add_section(c)
    with pytest.raises(errors.ConfigError, match="^model: a model of your own for the sweep"):
        runner.run(c, str(tmp_path / "w"), model=model)
    assert not (tmp_path / "w").exists()


@pytest.mark.e2e
def test_the_public_run_is_the_runner():
    assert jaxshrink.run is runner.run


@pytest.mark.e2e
def test_only_process_0_writes_files(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_primary", lambda: False)
    c = tiny_config("sobel")
    c.minimize.max_rounds = 2
    outcome = runner.run(c, str(tmp_path))
    assert runner.status(outcome) == "ok" and outcome.final is not None
    # What every process writes: its lock, the config it resumes with, and orbax's
    # checkpoints (written by all processes together); no results, pictures or export.
    assert set(os.listdir(tmp_path)) <= {".lock", "config.json", "checkpoints"}
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("results.json"))
