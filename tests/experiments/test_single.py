"""End to end: the quick configs through `run`, resuming, and the command line."""

import json
import os
import re
import subprocess
import sys

import jax
import pytest
from conftest import ROOT, load_config

from jaxshrink.core import errors
from jaxshrink.deploy import export
from jaxshrink.experiments import runner
from jaxshrink.runtime import compile_cache, progress


def _load_config(name: str):
    """Loads `configs/<name>.py:quick` as `--config` would."""
    return load_config(name, "quick")


def test_canny_quick_config_is_the_canny_task_at_quick_sizes():
    # The quick Canny sizes run end to end in tests/test_sweep.py (quick sweep) and in
    # the thesis notebook; here only what distinguishes the config file.
    config = _load_config("canny")
    assert config.data.dataset == "canny" and config.train.loss == "f1"
    sobel = _load_config("sobel")
    assert (config.data.crop_size, config.train.initial_steps) == (
        sobel.data.crop_size,
        sobel.train.initial_steps,
    )


@pytest.mark.e2e
def test_quick_config_shrinks_and_keeps_the_score(tmp_path, direct_convs):
    task = "sobel"  # the README's main command, with the CPU's direct convolutions
    config = _load_config(task)
    # Its first two rounds (the README's run keeps round 1): the whole command costs
    # two minutes of the suite, its first 2500 steps one.
    config.minimize.max_rounds = 2
    results = runner.run(config, str(tmp_path))
    threshold = config.minimize.threshold
    assert results["removed_units"] >= 1
    assert results["reference_ratio"] >= threshold
    accepted = [r for r in results["rounds"] if r["accepted"]]
    assert accepted and all(r["ratio"] >= threshold for r in accepted)
    assert results["final"]["eval"]["f1"] == pytest.approx(accepted[-1]["score"], rel=1e-5)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["kept"] == results["kept"]
    for name in ("samples_trained.png", "samples_minimized.png", "export/params.npz"):
        assert (tmp_path / name).stat().st_size > 0
    small = export.load(str(tmp_path / "export"))
    widths = [int(small[name]["bias"].shape[0]) for name in results["layers"]]
    assert widths == [sum(row) for row in results["kept"]] == results["widths"]["after"]


def test_eta_reads_the_time_left_at_the_pace_so_far():
    assert progress.eta(100, 50, 10.0) == "20s"  # 100 steps at 5 steps/s
    assert progress.eta(545, 1, 1.0) == "9m 05s"
    assert progress.eta(7620, 2, 2.0) == "2h 07m"
    assert progress.eta(0, 10, 3.0) == "0s"


@pytest.mark.e2e
def test_command_line_runs_and_defaults_the_workdir(tmp_path):
    cache = tmp_path / "cache"  # its own, to see what this run keeps there
    env = dict(os.environ, PYTHONPATH=ROOT, JAXSHRINK_CACHE=str(cache))
    cmd = [
        sys.executable,
        "-m",
        "jaxshrink.main",
        f"--config={os.path.join(ROOT, 'configs', 'canny.py')}:quick",
        "--config.data.crop_size=16",
        "--config.data.train_size=12",
        "--config.data.eval_size=4",
        "--config.train.initial_steps=20",
        "--config.train.log_every=5",
        "--config.minimize.round_steps=2",
        "--config.minimize.max_rounds=1",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "== jaxshrink edges (canny) ==" in proc.stdout
    # Progress: the time left from the second chunk (the first compiles) to the last.
    lines = [line for line in proc.stdout.splitlines() if "train: step" in line]
    assert [("eta " in line) for line in lines] == [False, True, True, False]
    assert re.search(r"eta \d+s$", lines[1]), lines[1]
    assert (tmp_path / "runs" / "canny-quick" / "results.json").exists()
    # Its compiled programs were kept for the next run, beside the data cache.
    assert os.listdir(cache / "xla")


def test_the_command_line_keeps_compiled_programs_where_it_is_told(tmp_path, monkeypatch, capsys):
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("JAXSHRINK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    try:
        monkeypatch.setenv("JAXSHRINK_COMPILE_CACHE", "0")
        assert compile_cache.use() is None
        assert jax.config.jax_compilation_cache_dir == before
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "own"))
        monkeypatch.setenv("JAXSHRINK_COMPILE_CACHE", "1")
        assert compile_cache.use() == str(tmp_path / "own")  # JAX's own wins
        assert jax.config.jax_compilation_cache_dir == before  # JAX reads it itself
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
        assert compile_cache.use() == str(tmp_path / "cache" / "xla")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache" / "xla")
        assert (tmp_path / "cache" / "xla").is_dir()
        # A folder others may write to would run their code here: not used, and said.
        jax.config.update("jax_compilation_cache_dir", before)
        capsys.readouterr()
        (tmp_path / "cache" / "xla").chmod(0o777)
        assert compile_cache.use() is None
        assert jax.config.jax_compilation_cache_dir == before
        note = capsys.readouterr().err
        assert note.startswith("jaxshrink: note: not keeping") and note.count("\n") == 1
        monkeypatch.setenv("JAXSHRINK_COMPILE_CACHE", "off")
        with pytest.raises(errors.ConfigError, match=r"^JAXSHRINK_COMPILE_CACHE .*'off'"):
            compile_cache.use()
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
