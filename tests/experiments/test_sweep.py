"""Batched sweeps: both designs' networks, a sweep's run equals the single run, devices,
resume, Figure 4.2."""

import importlib.util

import numpy as np
import pytest
from conftest import ROOT, load_config, tiny_config

from jaxshrink.core import errors, files
from jaxshrink.core import results as results_lib
from jaxshrink.experiments import runner, sweep


def tiny_sweep(method="loop"):
    """2 seeds x 3 strategies x 2 thresholds of the tiny Canny config (thesis design)."""
    c = tiny_config("canny")
    c.sweep = sweep.default_config("canny").sweep
    c.sweep.num_seeds = 2
    c.sweep.thresholds = (0.9, 1.0)
    c.batch.method = method
    return c


@pytest.fixture(scope="module")
def loop_sweep(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    jobs = []
    real_job = sweep.Job

    def keep(*args, **kwargs):
        jobs.append(real_job(*args, **kwargs))
        return jobs[-1]

    sweep.Job = keep  # to look at its compiled programs afterwards
    try:
        results = runner.run(tiny_sweep("loop"), str(workdir))
    finally:
        sweep.Job = real_job
    results["_job"] = jobs[0]
    return results, workdir


def _key(row):
    return (row["seed"], row["strategy"], row["threshold"])


def test_the_thesis_design_trains_one_network_per_seed_and_threshold():
    c = tiny_sweep()
    c.seed, c.sweep.num_seeds = 7, 2
    c.sweep.strategies, c.sweep.thresholds = ("cosine", "random"), (0.9, 1.0)
    # Threshold index t of run i: seed 7 + i + 2 t, shared by its two strategies.
    assert c.sweep.design == "thesis"
    thesis = sweep.sweep_runs(c)
    assert thesis == [
        (7, "cosine", 0.9), (9, "cosine", 1.0), (7, "random", 0.9), (9, "random", 1.0),
        (8, "cosine", 0.9), (10, "cosine", 1.0), (8, "random", 0.9), (10, "random", 1.0),
    ]  # fmt: skip
    c.sweep.design = "shared"  # one network per seed, at every threshold
    shared = sweep.sweep_runs(c)
    assert [s for s, _, _ in shared] == [7, 7, 7, 7, 8, 8, 8, 8]
    assert [run[1:] for run in shared] == [run[1:] for run in thesis]


@pytest.mark.e2e
def test_every_combination_runs_and_figure_4_2_is_written(loop_sweep):
    results, workdir = loop_sweep
    rows = results["runs"]
    # Thesis design: threshold 0.9 minimizes networks 0 and 1, threshold 1.0 2 and 3.
    assert sorted(_key(r) for r in rows) == sorted(
        (s + 2 * j, k, t)
        for s in (0, 1)
        for k in ("cosine", "random", "sequential")
        for j, t in enumerate((0.9, 1.0))
    )
    assert results["design"] == "thesis" and results["trained_networks"] == 4
    assert files.read_csv(workdir / "runs.csv") == rows
    for name in ("figure_4_2.png", "figure_4_2_summary.csv", "figure_4_2_tests.csv"):
        assert (workdir / name).stat().st_size > 0
    # Every run of a (seed, threshold) starts from the same trained network, and the
    # four networks are distinct.
    baselines = {}
    for r in rows:
        baselines.setdefault((r["seed"], r["threshold"]), set()).add(r["baseline"])
    assert sorted(baselines) == [(0, 0.9), (1, 0.9), (2, 1.0), (3, 1.0)]
    assert all(len(b) == 1 for b in baselines.values())
    assert len(set.union(*baselines.values())) == 4
    # The Wilcoxon tests pair the three strategies of each network: 2 pairs each.
    tests = files.read_csv(workdir / "figure_4_2_tests.csv")
    assert len(tests) == 2 * 2 * 3 and all(t["n_pairs"] == 2 for t in tests)
    # Stopping rules and thresholds hold per run.
    logs = dict(zip(map(_key, rows), results["round_logs"]))
    for (_, strategy, threshold), rounds in logs.items():
        assert all(e["ratio"] >= threshold for e in rounds if e["accepted"])
        assert all(e["ratio"] < threshold for e in rounds if not e["accepted"])
        visited = [e["candidate_index"] for e in rounds]
        if strategy == "random":
            assert len(rounds) <= 10
        if strategy == "sequential":
            assert visited == sorted(set(visited))  # in order, each at most once


@pytest.mark.e2e
@pytest.mark.parametrize("run", [(1, "random", 0.9), (2, "cosine", 1.0)])
def test_a_sweep_run_equals_the_single_run(loop_sweep, run, tmp_path):
    results, _ = loop_sweep
    seed, strategy, threshold = run
    row = next(r for r in results["runs"] if _key(r) == run)
    rounds = results["round_logs"][results["runs"].index(row)]
    c = tiny_config("canny")
    c.seed, c.minimize.strategy, c.minimize.threshold = seed, strategy, threshold
    alone = runner.run(c, str(tmp_path))
    assert [" ".join("".join("#" if k else "." for k in r) for r in alone["kept"])] == [row["kept"]]
    assert [e["candidate"] for e in alone["rounds"]] == [e["candidate"] for e in rounds]
    assert [e["accepted"] for e in alone["rounds"]] == [e["accepted"] for e in rounds]
    assert alone["trained"]["eval"]["f1"] == pytest.approx(row["baseline"], rel=1e-6)
    assert alone["final"]["eval"]["f1"] == pytest.approx(row["final"], rel=1e-6)


@pytest.mark.e2e
def test_vmap_batching_runs_the_same_sweep(loop_sweep, tmp_path):
    """vmap and loop compute each step to float rounding (tests/test_train.py), but
    rounding differences grow over hundreds of Adam steps on these barely trained
    tiny networks, so whole sweeps agree in structure, not bit for bit."""
    want, _ = loop_sweep
    got = runner.run(tiny_sweep("vmap"), str(tmp_path))
    assert got["batch"]["method"] == "vmap"
    # The suite's XLA convolutions (conftest) keep the steps on the host on one CPU.
    assert got["batch"]["steps"] == want["batch"]["steps"] == "host"
    assert [_key(r) for r in got["runs"]] == [_key(r) for r in want["runs"]]
    for a, b, la, lb in zip(want["runs"], got["runs"], want["round_logs"], got["round_logs"]):
        assert b["baseline"] == pytest.approx(a["baseline"], rel=0.05)
        assert la[0]["candidate"] == lb[0]["candidate"]  # same trained network, same pick
        assert all(e["ratio"] >= b["threshold"] for e in lb if e["accepted"])


@pytest.mark.e2e
def test_rounds_compile_once_for_the_whole_sweep(loop_sweep):
    results, _ = loop_sweep
    job = results["_job"]
    assert max(len(rounds) for rounds in results["round_logs"]) >= 5
    # Masks, references and done flags changed every round; thresholds and strategies
    # differ per run: still one compiled program for each part of a round (the
    # proposal, the retraining in chunks, the decision) and one for evaluation.
    assert job.begin_fn._cache_size() == 1
    assert job.finish_fn._cache_size() == 1
    assert job.train_fn._cache_size() == 1
    # Every group of runs is one call of one program: the 4 networks and the 12 runs
    # are evaluated by the same compiled evaluation.
    assert job.eval_fn._cache_size() == 1


@pytest.mark.e2e
def test_quick_sweep_config_and_figure_script(tmp_path):
    config = load_config("sweep", "quick")
    assert config.sweep.num_seeds == 3 and len(config.sweep.thresholds) == 5
    assert config.sweep.design == "thesis"
    # The quick config with 2 of its 3 seeds and shorter rounds, to keep the suite short,
    # in the shared design (2 networks, not 10; the thesis design runs in `loop_sweep`).
    # Two of its five thresholds, the lowest and the highest.
    config.sweep.num_seeds, config.sweep.design = 2, "shared"
    config.sweep.thresholds = (0.85, 1.0)
    config.train.initial_steps = config.train.eval_every = 300
    config.minimize.round_steps = 20
    results = runner.run(config, str(tmp_path))
    rows = results["runs"]
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
    assert any(r["disabled"] > 0 for r in rows)
    # Shared design: a seed's network serves every strategy and threshold.
    assert results["trained_networks"] == 2 and {r["seed"] for r in rows} == {0, 1}
    for seed in (0, 1):
        assert len({r["baseline"] for r in rows if r["seed"] == seed}) == 1
    # Lower thresholds never keep fewer masks disabled on average than 100%.
    mean = {t: np.mean([r["disabled"] for r in rows if r["threshold"] == t]) for t in (0.85, 1.0)}
    assert mean[0.85] >= mean[1.0]
    fig_spec = importlib.util.spec_from_file_location(
        "figure_4_2", f"{ROOT}/experiments/figure_4_2.py"
    )
    fig = importlib.util.module_from_spec(fig_spec)
    fig_spec.loader.exec_module(fig)
    out = fig.main(["--sweep", str(tmp_path), "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "figure_4_2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(out["summary"]) == 6


def test_bad_sweep_settings_are_clear_errors():
    for field, value, match in (
        ("strategies", ("cosine", "greedy"), "sweep.strategies"),
        ("thresholds", (0.9, 1.5), "sweep.thresholds"),
        ("num_seeds", 0, "sweep.num_seeds"),
        ("design", "paired", "sweep.design"),
    ):
        c = tiny_sweep()
        c.sweep[field] = value
        with pytest.raises(errors.ConfigError, match=match):
            runner.check(c)


def test_a_trained_score_of_zero_has_no_ratio():
    # A network that never learned (F1 0 on the eval split) must not end a sweep with
    # a division by zero: its ratio is NaN and its row is marked failed.
    assert results_lib._ratio(0.5, 0.25) == 2.0
    assert np.isnan(results_lib._ratio(0.5, 0.0))
