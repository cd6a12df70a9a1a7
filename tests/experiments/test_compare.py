"""One comparison of every strategy: Holm, the per-strategy table and tests on hand-made
runs, the answer's reading, and configs/compare.py for every model."""

import math
import os

import pytest
from conftest import load_config

from jaxshrink import stats
from jaxshrink.core import errors, files
from jaxshrink.experiments import runner, sweep
from jaxshrink.search import strategies


def _row(seed, strategy, ratio, disabled, rounds=2, steps=100, flops=0.5, threshold=0.95):
    return {
        "status": "ok",
        "seed": seed,
        "strategy": strategy,
        "threshold": threshold,
        "baseline": 1.0,
        "final": ratio,
        "score_ratio": ratio,
        "relative_drop": 1 - ratio,
        "disabled": disabled,
        "flops_removed": flops,
        "rounds": rounds,
        "steps": steps,
        "seconds": steps / 100,
    }


def _runs(n):
    """n seeds: taylor removes 1..n more units than random, cosine exactly as many;
    score ratios: taylor 0.01 * (s + 1) below random, cosine equal to random."""
    rows = []
    for s in range(n):
        rows.append(_row(s, "random", 0.99, 3))
        rows.append(_row(s, "cosine", 0.99, 3))
        rows.append(_row(s, "taylor", 0.99 - 0.01 * (s + 1), 3 + s + 1))
    return rows


def _test(tests, metric, a, b):
    (row,) = [t for t in tests if (t["metric"], t["a"], t["b"]) == (metric, a, b)]
    return row


def test_holm_by_hand():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 ->
    # monotone 0.06; back in input order.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Capped at 1, and monotone after the cap: 0.5 x 2 = 1, 0.6 x 1 -> 1.
    assert stats.holm([0.6, 0.5]) == [1.0, 1.0]
    # A NaN stays NaN and is not counted: m = 2.
    got = stats.holm([0.02, math.nan, 0.01])
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.02)
    assert stats.holm([0.04]) == [0.04] and stats.holm([]) == []
    # Ties keep their order and get the same adjusted value: 0.01 x 3, then x 2 -> 0.03.
    assert stats.holm([0.01, 0.01, 0.2]) == pytest.approx([0.03, 0.03, 0.2])


def test_strategy_table_on_hand_made_runs():
    rows = [
        _row(0, "random", 0.90, 2, rounds=10, steps=400, flops=0.2),
        _row(1, "random", 0.96, 4, rounds=10, steps=400, flops=0.4),
        _row(2, "random", 1.02, 9, rounds=10, steps=400, flops=0.9),
        _row(0, "cosine", 1.00, 1, rounds=3, steps=120, flops=0.1),
        _row(1, "cosine", 0.97, 1, rounds=2, steps=80, flops=0.1),
        _row(2, "cosine", 0.94, 4, rounds=4, steps=160, flops=0.3),
    ]
    table = stats.strategy_table(rows)
    assert [(r["strategy"], r["n"]) for r in table] == [("cosine", 3), ("random", 3)]
    cosine, random = table
    assert cosine["score_ratio_mean"] == pytest.approx(0.97)
    assert cosine["score_ratio_median"] == pytest.approx(0.97)
    assert random["disabled_mean"] == pytest.approx(5.0) and random["disabled_median"] == 4
    assert cosine["flops_removed_mean"] == pytest.approx(0.5 / 3)
    assert cosine["rounds_mean"] == pytest.approx(3.0) and cosine["steps_total"] == 360
    assert random["steps_mean"] == 400 and random["steps_total"] == 1200
    assert random["seconds_total"] == pytest.approx(12.0)
    assert "rounds_total" not in cosine  # totals only for costs that add up


def test_tests_against_random_and_all_pairs_holm_by_hand():
    tests = stats.comparison_tests(_runs(6))
    # Random is always b, and its tests come first.
    assert [(t["a"], t["b"]) for t in tests if t["metric"] == "disabled"] == [
        ("cosine", "random"),
        ("taylor", "random"),
        ("cosine", "taylor"),
    ]
    taylor = _test(tests, "disabled", "taylor", "random")
    # Six positive distinct differences: exact two-sided p = 2 / 2^6.
    assert taylor["p_value"] == pytest.approx(2 / 64) and taylor["better"] == "taylor"
    assert taylor["median_difference"] == 3.5 and taylor["n_pairs"] == 6
    cosine = _test(tests, "disabled", "cosine", "random")
    assert cosine["p_value"] == 1.0 and cosine["better"] == "tie"
    # Against random: m = 2 -> 2 / 64 x 2; all pairs: m = 3 -> 2 / 64 x 3 twice.
    assert taylor["p_holm_reference"] == pytest.approx(4 / 64)
    assert cosine["p_holm_reference"] == 1.0
    between = _test(tests, "disabled", "cosine", "taylor")
    assert math.isnan(between["p_holm_reference"]) and between["better"] == "taylor"
    assert taylor["p_holm_all"] == pytest.approx(6 / 64)
    assert between["p_holm_all"] == pytest.approx(6 / 64) and cosine["p_holm_all"] == 1.0
    # Score ratio: taylor is worse than random on every seed.
    ratio = _test(tests, "score_ratio", "taylor", "random")
    assert ratio["better"] == "random" and ratio["p_value"] == pytest.approx(2 / 64)


def test_the_answer_needs_the_corrected_p():
    # 6 seeds: 2/64 x 2 = 0.0625 after Holm, so no strategy beats random at 0.05.
    six = stats.comparison_answer(stats.comparison_tests(_runs(6)))
    assert "on disabled: none beat random" in six and "Holm 0.0625" in six
    # 7 seeds: 2/128 x 2 = 0.03125: taylor removes more units, and scores worse.
    seven = stats.comparison_answer(stats.comparison_tests(_runs(7)))
    assert "on disabled: beat random: taylor" in seven
    assert "on score_ratio: none beat random; worse than random: taylor" in seven


def test_comparison_writes_every_file(tmp_path):
    rows = _runs(6) + [dict(_row(9, "random", math.nan, 0), status="failed: x")]
    out = stats.comparison(rows, tmp_path, notes=["a note"])
    assert sorted(os.listdir(tmp_path)) == [
        "comparison.csv",
        "comparison.md",
        "comparison.png",
        "comparison_tests.csv",
    ]
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["n"] for r in out["table"]] == [6, 6, 6]  # the failed run is left out
    assert files.read_csv(tmp_path / "comparison_tests.csv")[0]["a"] == "cosine"
    text = (tmp_path / "comparison.md").read_text()
    assert "| 95% | taylor | 6 |" in text and text.rstrip().endswith("a note")
    # The Markdown tests against random only; every pair is in the CSV.
    assert "| disabled | taylor | random |" in text and "| cosine | taylor |" not in text
    assert len(out["tests"]) == 2 * 3


def test_wall_time_shares_follow_the_steps():
    rows = [{"steps": 300}, {"steps": 100}, {"steps": 0}]
    sweep._share_seconds(rows, 8.0)
    assert [r["seconds"] for r in rows] == [6.0, 2.0, 0.0]
    idle = [{"steps": 0}]
    sweep._share_seconds(idle, 8.0)
    assert idle[0]["seconds"] == 0.0


def _compare_config(arg):
    return load_config("compare", arg)


@pytest.mark.parametrize("arg", ["fcn", "mnist", "summation"])
def test_every_preset_is_one_valid_comparison(arg):
    c = _compare_config(arg)
    assert runner.check(c).name == "sweep"
    assert c.sweep.design == "shared" and len(c.sweep.thresholds) == 1
    assert tuple(c.sweep.strategies) == tuple(strategies.STRATEGIES)
    # With n seeds the smallest exact p is 2 / 2^n: Holm over the strategies against
    # random must still be able to reach 0.05.
    n, others = c.sweep.num_seeds, len(c.sweep.strategies) - 1
    assert others * 2 / 2**n <= 0.05
    if arg == "summation":  # 1000 units: many per round, in bounded rounds
        assert c.minimize.group == "adaptive" and c.minimize.max_rounds > 0


def test_bad_comparison_settings_are_clear_errors():
    with pytest.raises(errors.ConfigError, match="allowed: one of"):
        _compare_config("cifar")
    for field, value in (("strategies", ("random", "random")), ("thresholds", ())):
        c = _compare_config("fcn")
        c.sweep[field] = value
        with pytest.raises(errors.ConfigError, match=f"sweep.{field}"):
            runner.check(c)
