"""One comparison of every strategy on the same trained networks: a per-strategy
table, tests against a reference strategy with Holm's adjustment, a figure and the
markdown answer.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from jaxshrink.core import files
from jaxshrink.stats.paired import (
    STRATEGY_LABELS,
    Row,
    by_cell,
    by_seed,
    holm,
    paired_test,
    strategy_order,
    threshold_label,
)

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


def strategy_table(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One row per (threshold, strategy): n and the mean and median over seeds of
    every `COMPARISON_METRICS` key the rows have, plus ``<metric>_total`` for steps
    and seconds (what the strategy cost the whole sweep).

    Medians are given beside means because these distributions are skewed (a run
    that removes nothing next to runs that remove many); the tests are on medians of
    paired differences anyway.
    """
    table = []
    for (threshold, strategy), group in by_cell(rows).items():
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
    by_threshold = by_seed(rows)
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
                test = paired_test(threshold, metric, a, b, runs[a], runs[b], larger_is_better)
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
            f"| {threshold_label(float(r['threshold']))}% | {r['strategy']} | {r['n']} | "
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
            f"| {threshold_label(float(t['threshold']))}% | {t['metric']} | {t['a']} | {t['b']} | "
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
            f"At threshold {threshold_label(threshold)}%, paired Wilcoxon against "
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
