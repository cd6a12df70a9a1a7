"""Statistics and the thesis's Figure 4.2 from a sweep of minimization runs.

Section 4.3 of the thesis compares the minimization strategies (CosMax, Random and
Seq) at thresholds of 85, 90, 95, 98 and 100%: for every threshold, 50 networks were
trained and each was then minimized by all three strategies. Figure 4.2 shows, per
threshold and strategy, (a) the relative drop of the evaluation F1 score and (b) the
number of masks disabled. The thesis reports bare means; here every mean has a 95%
Student-t interval, and strategies are compared with paired Wilcoxon signed-rank
tests, so "Random seems to be the most efficient strategy" becomes a claim with a
p-value.

The input is one row per (seed, strategy, threshold), as a sweep writes to its
``runs.csv``, with at least these keys:

* ``seed`` (int): which trained network the run started from;
* ``strategy`` (str): ``cosine``, ``random``, ``sequential`` or any other name;
* ``threshold`` (float): the acceptance ratio, e.g. 0.95;
* ``baseline`` and ``final`` (float): evaluation F1 before and after minimization;
* ``relative_drop`` (float): ``1 - final / baseline`` (a fraction; negative is a gain);
* ``disabled`` (int): how many masks the minimization disabled.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from jaxshrink.core import files

__all__ = [
    "COMPARISON_METRICS",
    "METRICS",
    "STRATEGY_LABELS",
    "comparison",
    "comparison_answer",
    "comparison_markdown",
    "comparison_tests",
    "figure_4_2",
    "format_table",
    "holm",
    "mean_ci",
    "paired_tests",
    "plot_comparison",
    "plot_figure_4_2",
    "strategy_order",
    "strategy_table",
    "summarize",
]

Row = Mapping[str, Any]

# The metrics compared between strategies, and whether a larger value is better.
METRICS: dict[str, bool] = {"relative_drop": False, "disabled": True}
# The thesis's names for the strategies; their order is the order of the bars.
STRATEGY_LABELS: dict[str, str] = {"cosine": "CosMax", "random": "Random", "sequential": "Seq"}


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The mean of `values` and its two-sided Student-t confidence interval.

    Args:
      values: the sample.
      confidence: the coverage of the interval.

    Returns:
      ``(mean, low, high)``. With one value the interval is undefined: ``(v, nan,
      nan)``; with no values everything is ``nan``; when all values are equal the
      interval collapses to ``(mean, mean, mean)``.

    Example:
      >>> mean, low, high = mean_ci([1.0, 2.0, 3.0])
      >>> mean, round(low, 4), round(high, 4)
      (2.0, -0.4841, 4.4841)
    """
    x = np.asarray(list(values), dtype=np.float64)
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan
    if np.all(x == x[0]):
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * stats.sem(x)
    return mean, float(mean - half), float(mean + half)


def strategy_order(name: str) -> tuple[int, str]:
    """Sort key: the thesis's strategies in their order, then any others by name."""
    known = list(STRATEGY_LABELS)
    return (known.index(name), "") if name in known else (len(known), name)


def _groups(rows: Iterable[Row]) -> dict[tuple[float, str], list[Row]]:
    """Rows grouped by (threshold, strategy), in threshold then strategy order."""
    groups: dict[tuple[float, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((float(row["threshold"]), str(row["strategy"])), []).append(row)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], strategy_order(kv[0][1]))))


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
    for (threshold, strategy), group in _groups(rows).items():
        out: dict[str, Any] = {"threshold": threshold, "strategy": strategy, "n": len(group)}
        for metric in METRICS:
            mean, low, high = mean_ci([float(r[metric]) for r in group], confidence)
            out |= {f"{metric}_mean": mean, f"{metric}_low": low, f"{metric}_high": high}
        out["final_mean"] = float(np.mean([float(r["final"]) for r in group]))
        out["baseline_mean"] = float(np.mean([float(r["baseline"]) for r in group]))
        summary.append(out)
    return summary


def _by_seed(rows) -> dict[float, dict[str, dict[int, Row]]]:
    """{threshold: {strategy: {seed: row}}}, the pairing of the paired tests."""
    by_threshold: dict[float, dict[str, dict[int, Row]]] = {}
    for (threshold, strategy), group in _groups(rows).items():
        by_seed = {int(r["seed"]): r for r in group}
        if len(by_seed) != len(group):
            raise ValueError(f"duplicate seeds for strategy {strategy!r} at {threshold}")
        by_threshold.setdefault(threshold, {})[strategy] = by_seed
    return by_threshold


def _paired_test(threshold, metric, a, b, runs_a, runs_b, larger_is_better: bool) -> dict:
    """The paired Wilcoxon test of strategies `a` and `b` on `metric` (runs by seed)."""
    diffs = _paired_differences(runs_a, runs_b, metric)
    median = float(np.median(diffs)) if diffs.size else math.nan
    if median == 0 or math.isnan(median):
        better = "tie"
    else:
        better = a if (median > 0) == larger_is_better else b
    statistic, p_value, note = _wilcoxon(diffs)
    return {
        "threshold": threshold,
        "metric": metric,
        "a": a,
        "b": b,
        "n_pairs": int(diffs.size),
        "median_difference": median,
        "mean_difference": float(np.mean(diffs)) if diffs.size else math.nan,
        "statistic": statistic,
        "p_value": p_value,
        "better": better,
        "note": note,
    }


def paired_tests(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Wilcoxon signed-rank tests between every two strategies, per threshold and metric.

    Runs are paired by seed: in the thesis's design (section 4.3) every strategy of a
    seed minimizes the same trained network, so the difference between two
    strategies on one seed is free of the network-to-network variation, and a
    paired test on those differences is much more sensitive than comparing the two
    groups as if independent. Pairs are formed within a threshold only, so this
    holds for both sweep designs (`sweep.design`): in the thesis's, each threshold
    minimizes networks of its own (seeds differ between thresholds); in the shared
    one, a seed's network serves every threshold. Thresholds are never tested
    against each other here. Only seeds that both strategies ran (with finite
    values) are used. The test is two-sided; pairs with a zero difference are
    dropped by the test (Wilcoxon's convention), and with ties or zeros among 13 or
    fewer pairs scipy computes the p-value by exhaustive permutation, which is exact.

    Args:
      rows: per-run rows (see the module docstring); at most one per (seed,
        strategy, threshold).

    Returns:
      One row per threshold, metric and unordered pair ``(a, b)`` of strategies (in
      strategy order) with keys ``threshold``, ``metric``, ``a``, ``b``,
      ``n_pairs``, ``median_difference`` and ``mean_difference`` (of ``a - b``),
      ``statistic``, ``p_value``, ``better`` (``a``, ``b`` or ``"tie"``, by the
      median difference: a smaller drop or more disabled masks is better) and
      ``note`` (empty unless the test could not run or scipy warned).

    Raises:
      ValueError: if a (seed, strategy, threshold) appears twice.
    """
    by_threshold = _by_seed(rows)
    tests = []
    for threshold, runs in by_threshold.items():
        for (a, runs_a), (b, runs_b) in itertools.combinations(runs.items(), 2):
            for metric, larger_is_better in METRICS.items():
                tests.append(
                    _paired_test(threshold, metric, a, b, runs_a, runs_b, larger_is_better)
                )
    return tests


def _paired_differences(
    runs_a: Mapping[int, Row], runs_b: Mapping[int, Row], metric: str
) -> np.ndarray:
    """``a - b`` of `metric` over the seeds both ran, skipping non-finite values."""
    seeds = sorted(runs_a.keys() & runs_b.keys())
    diffs = np.array([float(runs_a[s][metric]) - float(runs_b[s][metric]) for s in seeds])
    return diffs[np.isfinite(diffs)]


def _wilcoxon(diffs: np.ndarray) -> tuple[float, float, str]:
    """Two-sided Wilcoxon signed-rank test on paired differences, never warning.

    Returns:
      ``(statistic, p_value, note)``; ``(nan, 1.0, why)`` when there is nothing to
      test, and any scipy warning in `note`.
    """
    if diffs.size == 0:
        return math.nan, 1.0, "no seed ran both strategies"
    if np.all(diffs == 0):
        return math.nan, 1.0, "all differences are zero"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stats.wilcoxon(diffs, alternative="two-sided")
    note = "; ".join(dict.fromkeys(str(w.message) for w in caught))
    return float(result.statistic), float(result.pvalue), note


def _threshold_label(threshold: float) -> str:
    """0.85 -> '85': thresholds are fractions; label them in percent as the thesis does."""
    percent = threshold * 100 if threshold <= 1 else threshold
    return f"{round(percent, 6):g}"


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
    ax_disabled.set_xticks(range(len(thresholds)), [_threshold_label(t) for t in thresholds])
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
            f"{_threshold_label(float(r['threshold'])) + '%':>9}  {r['strategy']:<10}  "
            f"{r['n']:>3}  {drop:<26}  {disabled:<21}  "
            f"{r['final_mean']:>8.4f}  {r['baseline_mean']:>8.4f}"
        )
    return "\n".join(lines)


def _with_interval(row: Row, metric: str, scale: float, digits: int) -> str:
    mean, low, high = (scale * float(row[f"{metric}_{k}"]) for k in ("mean", "low", "high"))
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# ------------------------------------------------------------ one comparison (issue 13)

# What the per-strategy comparison reports, per run (keys of a sweep's rows), with its
# label and whether a larger value is better (None: a cost, neither better nor worse).
COMPARISON_METRICS: dict[str, tuple[str, bool | None]] = {
    "score_ratio": ("score ratio (final / baseline)", True),
    "disabled": ("units removed", True),
    "flops_removed": ("FLOPs removed (fraction)", True),
    "rounds": ("rounds", None),
    "steps": ("training steps", None),
    "seconds": ("seconds (estimated share)", None),
}
# The metrics tested between strategies: the two the question is about.
COMPARISON_TESTED = ("score_ratio", "disabled")
# The strategy every other one is tested against first.
REFERENCE_STRATEGY = "random"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order.

    Controls the family-wise error rate at any alpha for any dependence between the
    tests, and is uniformly more powerful than Bonferroni: the i-th smallest of m
    p-values is multiplied by m - i (i from 0), made monotone and capped at 1; a test
    is significant at alpha when its adjusted p is <= alpha. NaNs stay NaN and do not
    count towards m.

    Example:
      >>> holm([0.01, 0.04, 0.03])
      [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = valid.size
    running = 0.0
    for i, j in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - i) * float(p[j])))
        out[j] = running
    return [float(round(v, 15)) if np.isfinite(v) else math.nan for v in out]


def strategy_table(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One row per (threshold, strategy): n and the mean and median over seeds of
    every `COMPARISON_METRICS` key the rows have, plus ``<metric>_total`` for steps
    and seconds (what the strategy cost the whole sweep).

    Medians are given beside means because these distributions are skewed (a run
    that removes nothing next to runs that remove many); the tests are on medians of
    paired differences anyway.
    """
    table = []
    for (threshold, strategy), group in _groups(rows).items():
        out: dict[str, Any] = {"threshold": threshold, "strategy": strategy, "n": len(group)}
        for metric in COMPARISON_METRICS:
            if metric not in group[0]:
                continue
            x = np.array([float(r[metric]) for r in group])
            x = x[np.isfinite(x)]
            out[f"{metric}_mean"] = float(x.mean()) if x.size else math.nan
            out[f"{metric}_median"] = float(np.median(x)) if x.size else math.nan
            if metric in ("steps", "seconds"):
                out[f"{metric}_total"] = float(x.sum())
        table.append(out)
    return table


def comparison_tests(
    rows: Iterable[Row],
    metrics: Sequence[str] = COMPARISON_TESTED,
    reference: str = REFERENCE_STRATEGY,
) -> list[dict[str, Any]]:
    """Paired Wilcoxon tests between every two strategies, Holm-corrected two ways.

    Pairs are by seed within a threshold, as in `paired_tests` (every strategy of a
    seed minimizes the same trained network). Each row tests ``a - b``; a pair with
    `reference` has it as ``b``, so its differences read "strategy minus random".

    Two families, each per (threshold, metric), each Holm-corrected (`holm`):

    * ``p_holm_reference``: the k - 1 tests of a strategy against `reference` -- the
      question "does an informed strategy beat random"; NaN for other pairs;
    * ``p_holm_all``: all k (k - 1) / 2 pairs, for the ranking among strategies
      (with many strategies and few seeds it can rarely reach 0.05: with n seeds the
      smallest two-sided exact p is 2 / 2^n, times the family size).

    Returns:
      Rows with ``threshold``, ``metric``, ``a``, ``b``, ``n_pairs``,
      ``median_difference``, ``mean_difference``, ``statistic``, ``p_value``,
      ``p_holm_reference``, ``p_holm_all``, ``better`` (``a``, ``b`` or ``"tie"`` by
      the median difference; larger is better for every tested metric here) and
      ``note``.

    Raises:
      ValueError: if a (seed, strategy, threshold) appears twice.
    """
    by_threshold = _by_seed(rows)
    tests = []
    for threshold, runs in by_threshold.items():
        pairs = []
        for a, b in itertools.combinations(runs, 2):
            pairs.append((b, a) if a == reference else (a, b))
        # The tests against the reference first, then the other pairs.
        pairs.sort(key=lambda ab: ab[1] != reference)
        for metric in metrics:
            larger_is_better = COMPARISON_METRICS.get(metric, ("", True))[1] is not False
            family = []
            for a, b in pairs:
                test = _paired_test(threshold, metric, a, b, runs[a], runs[b], larger_is_better)
                family.append({**test, "p_holm_reference": math.nan, "p_holm_all": math.nan})
            against = [t for t in family if t["b"] == reference]
            for t, p in zip(against, holm([t["p_value"] for t in against])):
                t["p_holm_reference"] = p
            for t, p in zip(family, holm([t["p_value"] for t in family])):
                t["p_holm_all"] = p
            tests += family
    return tests


def plot_comparison(
    rows: Sequence[Row], path: str | os.PathLike[str], title: str | None = None
) -> str:
    """Per strategy: score ratio against units removed, one point per seed (a), and
    box plots over seeds of the score ratio (b) and the FLOPs removed (c)."""
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    strategies = sorted({str(r["strategy"]) for r in rows}, key=strategy_order)
    fig = Figure(figsize=(max(10, 1.1 * len(strategies) + 6), 4.5), layout="constrained")
    ax_scatter, ax_ratio, ax_flops = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1]})
    rng = np.random.default_rng(0)  # horizontal jitter only: units are integers
    markers = "os^vD<>ph*"
    for i, strategy in enumerate(strategies):
        mine = [r for r in rows if r["strategy"] == strategy]
        x = np.array([float(r["disabled"]) for r in mine])
        y = np.array([float(r["score_ratio"]) for r in mine])
        ax_scatter.scatter(
            x + rng.uniform(-0.2, 0.2, x.size),
            y,
            s=18,
            alpha=0.7,
            marker=markers[i % len(markers)],
            label=STRATEGY_LABELS.get(strategy, strategy),
        )
    thresholds = sorted({float(r["threshold"]) for r in rows})
    for t in thresholds:
        ax_scatter.axhline(t, color="gray", linewidth=0.8, linestyle="--")
    ax_scatter.set_xlabel("units removed (jittered)")
    ax_scatter.set_ylabel("score ratio (final / baseline)")
    ax_scatter.set_title("(a) one point per seed")
    ax_scatter.legend(fontsize="small")
    labels = [STRATEGY_LABELS.get(s, s) for s in strategies]
    for ax, metric, name in (
        (ax_ratio, "score_ratio", "(b) score ratio"),
        (ax_flops, "flops_removed", "(c) FLOPs removed (fraction)"),
    ):
        data = [[float(r[metric]) for r in rows if r["strategy"] == s] for s in strategies]
        ax.boxplot(data, tick_labels=labels)
        ax.set_title(name)
        ax.tick_params(axis="x", labelrotation=45)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150)
    return os.fspath(path)


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _pair(row: Row, metric: str, second: str, digits: int = 3) -> str:
    """'mean (second)' of `metric` in a `strategy_table` row."""
    mean, other = (row.get(f"{metric}_{k}", math.nan) for k in ("mean", second))
    return f"{_fmt(mean, digits)} ({_fmt(other, digits)})"


def comparison_markdown(
    table: Sequence[Row], tests: Sequence[Row], notes: Sequence[str] = ()
) -> str:
    """The comparison as Markdown: the per-strategy table, the tests against random
    (all pairs are in ``comparison_tests.csv``: k (k - 1) / 2 rows per metric would
    bury the question), `notes` below."""
    lines = [
        "| threshold | strategy | n | score ratio mean (median) | units removed mean "
        "(median) | FLOPs removed mean (median) | rounds mean | steps mean (total) | "
        "seconds mean (total, est.) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {_threshold_label(float(r['threshold']))}% | {r['strategy']} | {r['n']} | "
            f"{_pair(r, 'score_ratio', 'median', 4)} | {_pair(r, 'disabled', 'median')} | "
            f"{_pair(r, 'flops_removed', 'median')} | {_fmt(r.get('rounds_mean', math.nan))} | "
            f"{_pair(r, 'steps', 'total', 4)} | {_pair(r, 'seconds', 'total')} |"
        )
    lines += [
        "",
        "| threshold | metric | a | b | n | median a-b | mean a-b | p | p Holm (vs "
        f"{REFERENCE_STRATEGY}) | p Holm (all pairs) | better |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tests:
        if t["b"] != REFERENCE_STRATEGY:
            continue
        lines.append(
            f"| {_threshold_label(float(t['threshold']))}% | {t['metric']} | {t['a']} | {t['b']} | "
            f"{t['n_pairs']} | {_fmt(t['median_difference'])} | {_fmt(t['mean_difference'])} | "
            f"{_fmt(t['p_value'])} | {_fmt(t['p_holm_reference'])} | {_fmt(t['p_holm_all'])} | "
            f"{t['better']} |"
        )
    if notes:
        lines += [""] + list(notes)
    return "\n".join(lines) + "\n"


def comparison_answer(
    tests: Sequence[Row], alpha: float = 0.05, reference: str = REFERENCE_STRATEGY
) -> str:
    """Does an informed strategy beat `reference`? One sentence per threshold, read
    from the Holm-corrected tests against it (a win needs adjusted p <= `alpha`)."""
    out = []
    for threshold in sorted({float(t["threshold"]) for t in tests}):
        mine = [t for t in tests if t["threshold"] == threshold and t["b"] == reference]
        if not mine:
            continue
        parts = []
        for metric in dict.fromkeys(t["metric"] for t in mine):
            wins = [t for t in mine if t["metric"] == metric and t["p_holm_reference"] <= alpha]
            beat = [t for t in wins if t["better"] == t["a"]]
            lost = [t for t in wins if t["better"] == reference]
            best = min((t for t in mine if t["metric"] == metric), key=lambda t: t["p_value"])

            def names(ts):
                return ", ".join(
                    f"{t['a']} (median diff {_fmt(t['median_difference'])}, "
                    f"p={_fmt(t['p_value'])}, Holm p={_fmt(t['p_holm_reference'])})"
                    for t in ts
                )

            text = f"on {metric}: "
            text += f"beat {reference}: {names(beat)}" if beat else f"none beat {reference}"
            if lost:
                text += f"; worse than {reference}: {names(lost)}"
            if not wins:
                text += (
                    f" (smallest p {_fmt(best['p_value'])} for {best['a']}, Holm "
                    f"{_fmt(best['p_holm_reference'])}, n={best['n_pairs']})"
                )
            parts.append(text)
        out.append(
            f"At threshold {_threshold_label(threshold)}%, paired Wilcoxon against "
            f"{reference}, Holm-corrected over {len(mine) // max(1, len(parts))} strategies "
            f"per metric at alpha {alpha:g}: " + "; ".join(parts) + "."
        )
    return " ".join(out) if out else f"No strategy was compared with {reference}."


def comparison(
    rows: Sequence[Row], out_dir: str | os.PathLike[str], notes: Sequence[str] = ()
) -> dict[str, Any]:
    """The per-strategy comparison of a sweep: table, tests, answer and figure.

    Writes into `out_dir`: ``comparison.csv`` (`strategy_table`),
    ``comparison_tests.csv`` (`comparison_tests`), ``comparison.md`` (both tables,
    the answer and `notes`) and ``comparison.png`` (`plot_comparison`). Failed runs
    (``status`` not ``ok``) are left out.

    Returns:
      A dict with ``paths``, ``table``, ``tests``, ``answer`` and ``markdown``.
    """
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    table = strategy_table(rows)
    tests = comparison_tests(rows)
    answer = comparison_answer(tests)
    markdown = comparison_markdown(table, tests, [answer, *notes])
    paths = {
        name: os.path.join(os.fspath(out_dir), f"comparison{suffix}")
        for name, suffix in (
            ("table", ".csv"),
            ("tests", "_tests.csv"),
            ("markdown", ".md"),
            ("figure", ".png"),
        )
    }
    files.write_csv(paths["table"], table)
    files.write_csv(paths["tests"], tests)
    files.write_text(paths["markdown"], markdown)
    if rows:
        plot_comparison(rows, paths["figure"], title="Strategies on the same networks")
    return {"paths": paths, "table": table, "tests": tests, "answer": answer, "markdown": markdown}
