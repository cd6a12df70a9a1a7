"""Statistics and the thesis's Figure 4.2 from a sweep of minimization runs.

Section 4.3 of the thesis compares the minimization strategies (CosMax, Random and
Seq) at thresholds of 85, 90, 95, 98 and 100%: for every threshold, 50 networks were
trained and each was then minimized by all three strategies. Figure 4.2 shows, per
threshold and strategy, (a) the relative drop of the evaluation F1 score and (b) the
number of masks disabled. The thesis reports bare means; here every mean has a 95%
Student-t interval, and strategies are compared with paired Wilcoxon signed-rank
tests, so "Random seems to be the most efficient strategy" becomes a claim with a
p-value.

The rows are those of `jaxshrink.stats.paired`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from jaxshrink.core import files
from jaxshrink.stats.paired import (
    METRICS,
    STRATEGY_LABELS,
    Row,
    by_cell,
    mean_ci,
    paired_tests,
    strategy_order,
    threshold_label,
)


def summarize(rows: Iterable[Row], confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row of means and confidence intervals per (threshold, strategy).

    Args:
      rows: per-run rows (see the module docstring).
      confidence: the coverage of the intervals.

    Returns:
      Rows sorted by threshold, then strategy (cosine, random, sequential, then
      others by name), with keys ``threshold``, ``strategy``, ``n``,
      ``<metric>_mean``, ``<metric>_low`` and ``<metric>_high`` for each metric in
      `METRICS`, ``final_mean`` and ``baseline_mean``.
    """
    summary = []
    for (threshold, strategy), group in by_cell(rows).items():
        out: dict[str, Any] = {"threshold": threshold, "strategy": strategy, "n": len(group)}
        for metric in METRICS:
            mean, low, high = mean_ci([float(r[metric]) for r in group], confidence)
            out |= {f"{metric}_mean": mean, f"{metric}_low": low, f"{metric}_high": high}
        out["final_mean"] = float(np.mean([float(r["final"]) for r in group]))
        out["baseline_mean"] = float(np.mean([float(r["baseline"]) for r in group]))
        summary.append(out)
    return summary



def plot_figure_4_2(
    summary: Sequence[Row], path: str | os.PathLike[str], title: str | None = None
) -> str:
    """Draws Figure 4.2: mean relative score drop and disabled masks, with 95% intervals.

    Args:
      summary: rows from `summarize`.
      path: the image to write; its suffix picks the format (``.png``, ``.pdf``...).
      title: an optional title above both panels.

    Returns:
      `path`, as a string.
    """
    thresholds = sorted({float(r["threshold"]) for r in summary})
    strategies = sorted({str(r["strategy"]) for r in summary}, key=strategy_order)
    cells = {(float(r["threshold"]), str(r["strategy"])): r for r in summary}
    width = 0.8 / max(len(strategies), 1)

    # matplotlib.figure.Figure needs no pyplot and no global backend: safe in a library.
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax_drop, ax_disabled = fig.subplots(2, 1, sharex=True)
    panels = (
        (ax_drop, "relative_drop", 100.0, "(a) Relative score drop (%)"),
        (ax_disabled, "disabled", 1.0, "(b) Number of disabled masks"),
    )
    for ax, metric, scale, name in panels:
        for i, strategy in enumerate(strategies):
            present = [
                (j, cells[t, strategy]) for j, t in enumerate(thresholds) if (t, strategy) in cells
            ]
            x = np.array([j for j, _ in present]) + (i - (len(strategies) - 1) / 2) * width
            mean, low, high = (
                np.array([scale * float(r[f"{metric}_{k}"]) for _, r in present])
                for k in ("mean", "low", "high")
            )
            ax.bar(x, mean, width, label=STRATEGY_LABELS.get(strategy, strategy))
            ok = np.isfinite(low) & np.isfinite(high)
            if ok.any():
                ax.errorbar(
                    x[ok],
                    mean[ok],
                    yerr=[mean[ok] - low[ok], high[ok] - mean[ok]],
                    fmt="none",
                    ecolor="black",
                    capsize=3,
                    linewidth=1,
                )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(name)
        ax.set_ylabel(name.split(" ", 1)[1])
        ax.grid(axis="y", alpha=0.3)
    ax_drop.legend(title="strategy")
    ax_disabled.set_xticks(range(len(thresholds)), [threshold_label(t) for t in thresholds])
    ax_disabled.set_xlabel("Threshold (%)")
    if title:
        fig.suptitle(title)
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150)
    return os.fspath(path)


def _findings(summary: Sequence[Row], tests: Sequence[Row]) -> str:
    """One plain-text paragraph reading the numbers: who wins each metric, and how surely."""
    by_threshold: dict[float, list[Row]] = {}
    for row in summary:
        by_threshold.setdefault(float(row["threshold"]), []).append(row)
    test_of = {(t["threshold"], t["metric"], frozenset((t["a"], t["b"]))): t for t in tests}
    wins = {metric: dict.fromkeys([str(r["strategy"]) for r in summary], 0) for metric in METRICS}
    sentences = []
    for threshold, rows in by_threshold.items():
        if len(rows) < 2:
            continue
        clauses = []
        for metric, larger_is_better in METRICS.items():
            best = (max if larger_is_better else min)(rows, key=lambda r: r[f"{metric}_mean"])
            if all(r[f"{metric}_mean"] != best[f"{metric}_mean"] for r in rows if r is not best):
                wins[metric][best["strategy"]] += 1  # only outright wins count
            others = []
            for row in rows:
                if row is not best:
                    pair = frozenset((best["strategy"], row["strategy"]))
                    test = test_of[threshold, metric, pair]
                    others.append(
                        f"{row['strategy']} {_metric_text(metric, row[f'{metric}_mean'])} "
                        f"({'Wilcoxon ' if not others else ''}p={test['p_value']:.3g}, "
                        f"n={test['n_pairs']})"
                    )
            value = _metric_text(metric, best[f"{metric}_mean"])
            verb = "disabled" if metric == "disabled" else "lost"
            unit = " masks" if metric == "disabled" else " of its F1"
            clauses.append(
                f"{best['strategy']} {verb} {value}{unit} on average vs " + ", ".join(others)
            )
        sentences.append(f"At threshold {threshold:g}, " + "; ".join(clauses) + ".")
    if not sentences:
        return "Fewer than two strategies at every threshold: nothing to compare."
    overall = []
    for metric in METRICS:
        leader, count = max(wins[metric].items(), key=lambda kv: kv[1])
        what = "disabled the most masks" if metric == "disabled" else "lost the least F1"
        if count:
            overall.append(f"{leader} {what} at {count} of {len(sentences)} thresholds")
        else:
            overall.append(f"no strategy alone {what} at any threshold")
    return " ".join(sentences) + " Overall, " + " and ".join(overall) + "."


def _metric_text(metric: str, value: float) -> str:
    return f"{value:.1f}" if metric == "disabled" else f"{100 * value:.2f}%"


def figure_4_2(rows: Sequence[Row], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarizes a sweep, tests the strategies against each other and draws Figure 4.2.

    Writes into `out_dir`: ``figure_4_2.png``, ``figure_4_2_summary.csv`` (from
    `summarize`), ``figure_4_2_tests.csv`` (from `paired_tests`) and
    ``figure_4_2.json`` (both tables and a ``findings`` paragraph).

    Args:
      rows: per-run rows (see the module docstring).
      out_dir: the folder to write to (created if missing).

    Returns:
      A dict with ``paths`` (``figure``, ``summary``, ``tests``, ``json``),
      ``summary``, ``tests`` and ``findings``.
    """
    rows = [r for r in rows if r.get("status", "ok") == "ok"]  # failed (NaN) runs are left out
    summary = summarize(rows)
    tests = paired_tests(rows)
    findings = _findings(summary, tests)
    paths = {
        name: os.path.join(os.fspath(out_dir), f"figure_4_2{suffix}")
        for name, suffix in (
            ("figure", ".png"),
            ("summary", "_summary.csv"),
            ("tests", "_tests.csv"),
            ("json", ".json"),
        )
    }
    plot_figure_4_2(summary, paths["figure"], title="Minimization strategies (thesis Fig. 4.2)")
    files.write_csv(paths["summary"], summary)
    files.write_csv(paths["tests"], tests)
    files.write_json(paths["json"], {"summary": summary, "tests": tests, "findings": findings})
    return {"paths": paths, "summary": summary, "tests": tests, "findings": findings}


def format_table(summary: Sequence[Row]) -> str:
    """The summary as a fixed-width text table, with 95% intervals in brackets."""
    header = (
        f"{'threshold':>9}  {'strategy':<10}  {'n':>3}  {'relative drop % [95% CI]':<26}  "
        f"{'disabled [95% CI]':<21}  {'final F1':>8}  {'baseline':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in summary:
        drop = _with_interval(r, "relative_drop", 100.0, 2)
        disabled = _with_interval(r, "disabled", 1.0, 1)
        lines.append(
            f"{threshold_label(float(r['threshold'])) + '%':>9}  {r['strategy']:<10}  "
            f"{r['n']:>3}  {drop:<26}  {disabled:<21}  "
            f"{r['final_mean']:>8.4f}  {r['baseline_mean']:>8.4f}"
        )
    return "\n".join(lines)


def _with_interval(row: Row, metric: str, scale: float, digits: int) -> str:
    mean, low, high = (scale * float(row[f"{metric}_{k}"]) for k in ("mean", "low", "high"))
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
