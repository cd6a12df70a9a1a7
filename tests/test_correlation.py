"""Table 4.1 statistics on hand-computable cases, and the batched experiment end to end."""

import numpy as np
import pytest
from conftest import tiny_config

from jaxshrink import config as config_lib
from jaxshrink import correlation, files

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
    assert np.isnan(table["loss(prs)"]["|cos|:max"])  # a constant column has no correlation
    assert table["1. max"]["cos:max"] == max(
        table[f"{t}({c})"]["cos:max"] for t in ("loss", "best") for c in ("prs", "knd", "spr")
    )
    markdown = correlation.format_markdown(list(table.values()))
    assert markdown.splitlines()[0].count(" | ") == 10  # |cos| is escaped: 11 cells


def test_experiment_end_to_end(tmp_path):
    c = tiny_config("canny")
    c.correlation = config_lib.correlation_config("canny").correlation
    c.correlation.repetitions = 3
    c.correlation.second_steps = 20
    c.correlation.eval_every = 10
    results = correlation.run_correlation(c, str(tmp_path))
    rows = files.read_csv(tmp_path / "correlation.csv")
    assert len(rows) == 3 * 10 and results["pooled_pairs"] == 30
    assert {r["candidate"] for r in rows} == {f"conv_{i}/{u}" for i in (0, 1) for u in range(5)}
    for r in rows:
        assert np.isfinite(r["drop"]) and np.isfinite(r["loss"]) and np.isfinite(r["best"])
        assert -1.0 <= r["cos:max"] <= 1.0 and 0.0 <= r["|cos|:min"] <= 1.0
        assert r["|cos|:max"] >= abs(r["cos:max"]) - 1e-6
    table = files.read_csv(tmp_path / "table_4_1.csv")
    assert [t["row"] for t in table][:3] == ["loss(prs)", "loss(knd)", "loss(spr)"]
    assert len(table) == 12
    assert (tmp_path / "figure_4_1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cos:max" in (tmp_path / "table_4_1.md").read_text()
