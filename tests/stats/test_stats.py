"""Sweep statistics and Figure 4.2: exact answers that can be checked by hand."""

import importlib.util
import json
import math
import os
import pathlib

import pytest
from conftest import ROOT

from jaxshrink import stats
from jaxshrink.core import files

# Student t, 97.5% quantile, 2 degrees of freedom. With 2 degrees of freedom the t
# quantile has the closed form t_p = (2p - 1) / sqrt(2 p (1 - p)):
# 0.95 / sqrt(0.04875) = 4.30265272974946385... (the often quoted 4.302652729911275
# is wrong in the tenth decimal).
T_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
SCRIPT = pathlib.Path(ROOT) / "experiments" / "figure_4_2.py"


def _run(seed, strategy, threshold, drop, disabled, baseline=0.5):
    return {
        "seed": seed,
        "strategy": strategy,
        "threshold": threshold,
        "baseline": baseline,
        "final": baseline * (1 - drop),
        "relative_drop": drop,
        "disabled": disabled,
    }


def _six_seeds():
    """Random beats cosine on masks (by 1..6) and loses on F1; sequential copies cosine."""
    rows = []
    for s in range(6):
        rows.append(_run(s, "cosine", 0.95, 0.0, s))
        rows.append(_run(s, "random", 0.95, 0.01 * (s + 1), 2 * s + 1))
        rows.append(_run(s, "sequential", 0.95, 0.0, s))
    return rows


def _test(tests, metric, a, b):
    (row,) = [t for t in tests if (t["metric"], t["a"], t["b"]) == (metric, a, b)]
    return row


def test_mean_ci_by_hand():
    mean, low, high = stats.mean_ci([1.0, 2.0, 3.0])
    half = T_975_2 * 1.0 / math.sqrt(3)  # sample std 1, sem 1/sqrt(3)
    assert T_975_2 == pytest.approx(4.302652729749464, rel=1e-15)
    assert mean == 2.0
    assert low == pytest.approx(2.0 - half, rel=1e-12)
    assert high == pytest.approx(2.0 + half, rel=1e-12)


def test_mean_ci_degenerate_cases():
    assert stats.mean_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    mean, low, high = stats.mean_ci([4.0])
    assert mean == 4.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in stats.mean_ci([]))


@pytest.mark.filterwarnings("error")
def test_wilcoxon_exact_p_for_six_positive_distinct_differences():
    tests = stats.paired_tests(_six_seeds())
    disabled = _test(tests, "disabled", "cosine", "random")
    # All 6 differences have one sign: only 1 of 2**6 sign patterns is as extreme on
    # each side, so the two-sided exact p is 2/64.
    assert disabled["p_value"] == 2 / 64 == 0.03125
    assert disabled["statistic"] == 0.0
    assert disabled["n_pairs"] == 6
    assert disabled["median_difference"] == -3.5 and disabled["mean_difference"] == -3.5
    assert disabled["note"] == ""


@pytest.mark.filterwarnings("error")
def test_all_equal_pairs_give_p_one_and_tie():
    tests = stats.paired_tests(_six_seeds())
    for metric in ("relative_drop", "disabled"):
        same = _test(tests, metric, "cosine", "sequential")
        assert same["p_value"] == 1.0 and math.isnan(same["statistic"])
        assert same["better"] == "tie" and same["median_difference"] == 0.0
        assert same["note"] == "all differences are zero"


def test_better_direction_for_each_metric():
    tests = stats.paired_tests(_six_seeds())
    # More masks disabled is better; a smaller drop in score is better.
    assert _test(tests, "disabled", "cosine", "random")["better"] == "random"
    assert _test(tests, "disabled", "random", "sequential")["better"] == "random"
    assert _test(tests, "relative_drop", "cosine", "random")["better"] == "cosine"
    assert _test(tests, "relative_drop", "random", "sequential")["better"] == "sequential"


def test_paired_tests_order_and_keys():
    tests = stats.paired_tests(_six_seeds())
    assert [(t["a"], t["b"], t["metric"]) for t in tests] == [
        ("cosine", "random", "relative_drop"),
        ("cosine", "random", "disabled"),
        ("cosine", "sequential", "relative_drop"),
        ("cosine", "sequential", "disabled"),
        ("random", "sequential", "relative_drop"),
        ("random", "sequential", "disabled"),
    ]
    assert list(tests[0]) == [
        "threshold", "metric", "a", "b", "n_pairs", "median_difference",
        "mean_difference", "statistic", "p_value", "better", "note",
    ]  # fmt: skip


def test_pairs_only_seeds_both_strategies_ran():
    rows = [r for r in _six_seeds() if not (r["strategy"] == "random" and r["seed"] == 5)]
    rows.append(_run(9, "cosine", 0.95, 0.0, 0))
    disabled = _test(stats.paired_tests(rows), "disabled", "cosine", "random")
    assert disabled["n_pairs"] == 5
    assert disabled["p_value"] == 2 / 32
    assert disabled["median_difference"] == -3.0


@pytest.mark.filterwarnings("error")
def test_no_common_seed_and_ties_do_not_warn():
    rows = [_run(0, "cosine", 0.9, 0.0, 1), _run(1, "random", 0.9, 0.0, 1)]
    (drop, disabled) = stats.paired_tests(rows)
    assert disabled["n_pairs"] == 0 and disabled["p_value"] == 1.0
    assert disabled["note"] == "no seed ran both strategies"
    # Ties and a zero among the differences: scipy switches to a permutation test.
    rows = [_run(s, "cosine", 0.9, 0.0, d) for s, d in enumerate([0, 1, 1, 2, -1])]
    rows += [_run(s, "random", 0.9, 0.0, 0) for s in range(5)]
    disabled = _test(stats.paired_tests(rows), "disabled", "cosine", "random")
    assert disabled["n_pairs"] == 5 and 0.0 < disabled["p_value"] <= 1.0
    assert disabled["better"] == "cosine"


def test_duplicate_runs_are_an_error():
    rows = _six_seeds() + [_run(0, "cosine", 0.95, 0.0, 0)]
    with pytest.raises(ValueError, match="duplicate"):
        stats.paired_tests(rows)


def test_summarize_groups_and_sorts():
    rows = []
    for strategy in ("zeta", "sequential", "alpha", "random", "cosine"):
        for threshold in (0.9, 0.85):
            for seed, value in enumerate([1, 2, 3]):
                rows.append(_run(seed, strategy, threshold, value / 10, value))
    summary = stats.summarize(rows)
    assert [(r["threshold"], r["strategy"]) for r in summary] == [
        (t, s) for t in (0.85, 0.9) for s in ("cosine", "random", "sequential", "alpha", "zeta")
    ]
    first = summary[0]
    assert list(first) == [
        "threshold", "strategy", "n",
        "relative_drop_mean", "relative_drop_low", "relative_drop_high",
        "disabled_mean", "disabled_low", "disabled_high",
        "final_mean", "baseline_mean",
    ]  # fmt: skip
    half = T_975_2 / math.sqrt(3)
    assert first["n"] == 3
    assert first["disabled_mean"] == 2.0
    assert first["disabled_low"] == pytest.approx(2.0 - half)
    assert first["disabled_high"] == pytest.approx(2.0 + half)
    assert first["relative_drop_mean"] == pytest.approx(0.2)
    assert first["relative_drop_high"] == pytest.approx(0.2 + half / 10)
    assert first["baseline_mean"] == 0.5
    assert first["final_mean"] == pytest.approx(0.5 * 0.8)


def test_format_table_is_fixed_width():
    table = stats.format_table(stats.summarize(_six_seeds()))
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    assert "threshold" in lines[0] and set(lines[1]) == {"-"}
    assert len({len(line) for line in lines}) == 1
    assert lines[3].split()[:3] == ["95%", "random", "6"]


def _synthetic_sweep():
    """3 seeds x 2 thresholds x 3 strategies."""
    rows = []
    for threshold in (0.85, 0.95):
        for seed in range(3):
            rows.append(_run(seed, "cosine", threshold, 0.01 * seed, 2 + seed % 2))
            rows.append(_run(seed, "random", threshold, 0.02 + 0.01 * seed, 4 + seed))
            rows.append(_run(seed, "sequential", threshold, -0.01, 3))
    return rows


def _same(a, b):
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def _check_outputs(result, out_dir):
    paths = result["paths"]
    assert set(os.listdir(out_dir)) >= {os.path.basename(p) for p in paths.values()}
    assert not [n for n in os.listdir(out_dir) if n.startswith(".tmp-")]
    with open(paths["figure"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for name in ("summary", "tests"):
        back = files.read_csv(paths[name])
        assert len(back) == len(result[name])
        for got, want in zip(back, result[name]):
            assert got.keys() == want.keys()
            assert all(_same(got[k], want[k] if want[k] != "" else None) for k in got)
    saved = json.loads(pathlib.Path(paths["json"]).read_text())
    assert saved["findings"] == result["findings"]
    assert len(saved["summary"]) == len(result["summary"])
    assert len(saved["tests"]) == len(result["tests"])


def test_figure_4_2_writes_all_files(tmp_path):
    out = tmp_path / "fig"
    result = stats.figure_4_2(_synthetic_sweep(), out)
    assert set(result["paths"]) == {"figure", "summary", "tests", "json"}
    assert sorted(os.listdir(out)) == [
        "figure_4_2.json", "figure_4_2.png", "figure_4_2_summary.csv", "figure_4_2_tests.csv",
    ]  # fmt: skip
    _check_outputs(result, out)
    assert len(result["summary"]) == 2 * 3
    assert len(result["tests"]) == 2 * 3 * 2  # thresholds x pairs x metrics
    findings = result["findings"]
    assert "At threshold 0.85, " in findings and "At threshold 0.95, " in findings
    assert "random disabled 5.0 masks on average vs cosine 2.3" in findings
    assert "sequential lost -1.00% of its F1" in findings


def test_plot_accepts_missing_cells_and_single_runs(tmp_path):
    rows = [_run(0, "cosine", 0.85, 0.1, 1), _run(0, "random", 1.0, 0.0, 2)]
    path = stats.plot_figure_4_2(stats.summarize(rows), tmp_path / "f.pdf", title="t")
    assert path == str(tmp_path / "f.pdf")
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"


def _load_script():
    spec = importlib.util.spec_from_file_location("figure_4_2_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_main(tmp_path, capsys):
    files.write_csv(tmp_path / "runs.csv", _synthetic_sweep())
    script = _load_script()
    result = script.main(["--sweep", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "threshold" in printed and "wrote " + result["paths"]["figure"] in printed
    assert result["paths"]["json"] == os.path.join(str(tmp_path), "figure_4_2.json")
    _check_outputs(result, tmp_path)
    out = tmp_path / "elsewhere"
    result = script.main(["--sweep", str(tmp_path), "--out", str(out)])
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in result["paths"].values())


def test_findings_do_not_crown_a_tie(tmp_path):
    rows = [_run(s, st, 0.9, 0.2, s) for s in range(3) for st in ("cosine", "random")]
    findings = stats.figure_4_2(rows, tmp_path)["findings"]
    assert "(Wilcoxon p=1, n=3)" in findings
    assert "no strategy alone disabled the most masks at any threshold" in findings
