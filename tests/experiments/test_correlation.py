"""Table 4.1 statistics on hand-computable cases, and the batched experiment end to end."""

import numpy as np
import pytest
from conftest import tiny_config

from jaxshrink.core import files
from jaxshrink.experiments import correlation, runner

# The thesis's Table 4.1: its six coefficient rows and its "n. max" rows.
THESIS_COEFFICIENTS = [
    [-0.32, 0.15, 0.06, 0.30, 0.26, 0.26, -0.21, 0.30, -0.20, 0.28],
    [-0.20, 0.08, 0.13, 0.19, 0.20, 0.16, -0.02, 0.18, -0.01, 0.16],
    [-0.27, 0.11, 0.21, 0.26, 0.28, 0.22, -0.04, 0.24, -0.02, 0.22],
    [-0.05, 0.02, 0.15, 0.06, 0.14, 0.05, 0.11, 0.04, 0.13, 0.03],
    [-0.04, -0.01, 0.09, 0.05, 0.08, 0.04, 0.09, 0.03, 0.09, 0.02],
    [-0.06, -0.01, 0.14, 0.07, 0.12, 0.06, 0.13, 0.04, 0.14, 0.02],
]
THESIS_NTH_MAX = [
    [-0.04, 0.15, 0.21, 0.30, 0.28, 0.26, 0.13, 0.30, 0.14, 0.28],
    [-0.05, 0.11, 0.15, 0.26, 0.26, 0.22, 0.11, 0.24, 0.13, 0.22],
    [-0.06, 0.08, 0.14, 0.19, 0.20, 0.16, 0.09, 0.18, 0.09, 0.16],
    [-0.20, 0.02, 0.13, 0.07, 0.14, 0.06, -0.02, 0.04, -0.01, 0.03],
    [-0.27, -0.01, 0.09, 0.06, 0.12, 0.05, -0.04, 0.04, -0.02, 0.02],
    [-0.32, -0.01, 0.06, 0.05, 0.08, 0.04, -0.21, 0.03, -0.20, 0.02],
]


def test_nth_max_reading_reproduces_the_thesis_table():
    columns = correlation.stat_columns()
    rows = [dict(zip(columns, values), row=str(i)) for i, values in enumerate(THESIS_COEFFICIENTS)]
    got = correlation.nth_max_rows(rows, columns)
    assert [[r[c] for c in columns] for r in got] == THESIS_NTH_MAX
    assert [r["row"] for r in got] == [f"{n}. max" for n in range(1, 7)]


def _rows(n=12):
    x = np.arange(n, dtype=float)
    rows = []
    for i in range(n):
        row = {col: 0.0 for col in correlation.stat_columns()}
        row["cos:max"] = x[i]  # linear in loss: Pearson 1
        row["cos:min"] = x[i] ** 3  # monotone, not linear: Spearman/Kendall 1, Pearson < 1
        row["cos:mean"] = -x[i]  # perfectly decreasing
        row["|cos|:std"] = float(i % 2)  # unrelated pattern
        row["loss"], row["best"] = 2 * x[i] + 1, 5.0 if i % 2 else 1.0
        row["drop"] = -3 * x[i]
        rows.append(row)
    return rows


def test_correlations_on_known_relations():
    table = {t["row"]: t for t in correlation.table_4_1(_rows())}
    assert table["loss(prs)"]["cos:max"] == pytest.approx(1.0)
    assert table["loss(spr)"]["cos:min"] == pytest.approx(1.0)
    assert table["loss(knd)"]["cos:min"] == pytest.approx(1.0)
    assert table["loss(prs)"]["cos:min"] < 0.99
    assert table["loss(spr)"]["cos:mean"] == pytest.approx(-1.0)
    assert table["best(prs)"]["|cos|:std"] == pytest.approx(1.0)  # best = 1 + 4 * (i % 2)
    assert table["drop(prs)"]["cos:max"] == pytest.approx(-1.0)
    assert np.isnan(table["loss(prs)"]["|cos|:max"])  # a constant column has no correlation
    # "n. max" ranks the six loss and best rows, as the thesis's table: not drop's -1.
    assert table["1. max"]["cos:max"] == max(
        table[f"{t}({c})"]["cos:max"] for t in ("loss", "best") for c in ("prs", "knd", "spr")
    )
    assert list(table)[-6:] == [f"{n}. max" for n in range(1, 7)] and len(table) == 15
    assert np.isfinite(table["6. max"]["cos:max"])
    markdown = correlation.format_markdown(list(table.values()))
    assert markdown.splitlines()[0].count(" | ") == 10  # |cos| is escaped: 11 cells


def _repetitions():
    """4 repetitions of two masks, l/0 and l/1, whose selections are known.

    cos:max is r for l/0 and 10 + r for l/1: its strategy selects l/1 every time.
    cos:min is -r for l/0 and -5 for l/1: it selects l/0. Every other column is 0
    for both: a tie, so l/0 (the first) is selected, and the column is constant.
    """
    rows = []
    for r in range(4):
        for c in (0, 1):
            row = {col: 0.0 for col in correlation.stat_columns()}
            row |= {"repetition": r, "candidate": f"l/{c}", "layer": "l"}
            row["cos:max"] = float(10 * c + r)
            row["cos:min"] = float(-r if c == 0 else -5)
            if c == 0:
                row["loss"], row["best"], row["drop"] = 100.0 + r, 1.0, 0.5
            else:
                row["loss"], row["best"], row["drop"] = float(r), 1 - r / 10, float(r * r)
            rows.append(row)
    return rows


def test_both_readings_on_known_correlations():
    rows = _repetitions()
    chosen = correlation.select_per_repetition(rows)
    assert [r["candidate"] for r in chosen["cos:max"]] == ["l/1"] * 4
    assert [r["candidate"] for r in chosen["cos:min"]] == ["l/0"] * 4
    assert [r["candidate"] for r in chosen["|cos|:mean"]] == ["l/0"] * 4  # ties: the first
    per_rep = {t["row"]: t for t in correlation.table_4_1_per_repetition(rows)}
    # cos:max over the 4 repetitions: x = 10..13 against l/1's loss 0..3, best
    # 1, 0.9, 0.8, 0.7 and drop 0, 1, 4, 9 (Pearson of r and r^2: 15 / sqrt(5 * 49)).
    for coef in ("prs", "knd", "spr"):
        assert per_rep[f"loss({coef})"]["cos:max"] == pytest.approx(1.0)
        assert per_rep[f"best({coef})"]["cos:max"] == pytest.approx(-1.0)
        # cos:min: x = 0, -1, -2, -3 against l/0's loss 100..103.
        assert per_rep[f"loss({coef})"]["cos:min"] == pytest.approx(-1.0)
        assert np.isnan(per_rep[f"best({coef})"]["cos:min"])  # l/0's best is constant
    assert per_rep["drop(prs)"]["cos:max"] == pytest.approx(15 / np.sqrt(245))
    assert per_rep["drop(spr)"]["cos:max"] == pytest.approx(1.0)
    assert np.isnan(per_rep["loss(prs)"]["|cos|:mean"])
    # Pooled, cos:max has 8 points: x = 0..3 (loss 100..103) and 10..13 (loss 0..3).
    # Kendall: 6 + 6 concordant pairs within the masks, 16 discordant across: -4/28.
    # Spearman: rank differences -4 (x4) and +4 (x4): 1 - 6 * 128 / (8 * 63) = -11/21.
    pooled = {t["row"]: t for t in correlation.table_4_1(rows)}
    assert pooled["loss(knd)"]["cos:max"] == pytest.approx(-1 / 7)
    assert pooled["loss(spr)"]["cos:max"] == pytest.approx(-11 / 21)
    assert pooled["loss(prs)"]["cos:max"] < 0 < per_rep["loss(prs)"]["cos:max"]
    selected = correlation.selected_rows(rows)
    assert len(selected) == 4 * len(correlation.stat_columns())
    assert selected[0] == {
        "column": "cos:min", "repetition": 0, "candidate": "l/0", "value": 0.0,
        "loss": 100.0, "best": 1.0, "drop": 0.5,
    }  # fmt: skip
    report = correlation.format_report(
        {"per_repetition": per_rep.values(), "pooled": pooled.values()},
        {"per_repetition": 4, "pooled": 8},
    )
    assert "`cos:<aggregation>` aggregate the signed" in report
    assert "`|cos|:<aggregation>` aggregate their absolute values" in report
    assert "### Table 4.1, per_repetition: one scalar per repetition" in report
    assert "(8 points per column)" in report


@pytest.mark.e2e
def test_experiment_end_to_end(tmp_path):
    c = tiny_config("canny")
    c.correlation = correlation.default_config("canny").correlation
    c.correlation.repetitions = 3
    c.correlation.second_steps = 20
    c.correlation.eval_every = 10
    results = runner.run(c, str(tmp_path))
    rows = files.read_csv(tmp_path / "correlation.csv")
    assert len(rows) == 3 * 10 and results["pooled_pairs"] == 30
    assert {r["candidate"] for r in rows} == {f"conv_{i}/{u}" for i in (0, 1) for u in range(5)}
    for r in rows:
        assert np.isfinite(r["drop"]) and np.isfinite(r["loss"]) and np.isfinite(r["best"])
        assert -1.0 <= r["cos:max"] <= 1.0 and 0.0 <= r["|cos|:min"] <= 1.0
        assert r["|cos|:max"] >= abs(r["cos:max"]) - 1e-6
    table = files.read_csv(tmp_path / "table_4_1.csv")
    assert [t["row"] for t in table][:3] == ["loss(prs)", "loss(knd)", "loss(spr)"]
    assert [t["sample"] for t in table] == ["per_repetition"] * 15 + ["pooled"] * 15
    assert results["samples"]["per_repetition"]["points"] == 3
    assert len(files.read_csv(tmp_path / "table_4_1_selected.csv")) == 3 * 10
    assert (tmp_path / "figure_4_1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cos:max" in (tmp_path / "table_4_1.md").read_text()
