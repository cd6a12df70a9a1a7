"""Intervals and paired tests over a sweep's runs: Student-t means, Wilcoxon
signed-rank tests between strategies on the same networks, Holm's adjustment.

The input of every function in `jaxshrink.stats` is one row per (seed, strategy,
threshold), as a sweep writes to its ``runs.csv``, with at least these keys:

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
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

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


def by_cell(rows: Iterable[Row]) -> dict[tuple[float, str], list[Row]]:
    """Rows grouped by (threshold, strategy), in threshold then strategy order."""
    groups: dict[tuple[float, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((float(row["threshold"]), str(row["strategy"])), []).append(row)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], strategy_order(kv[0][1]))))


def by_seed(rows) -> dict[float, dict[str, dict[int, Row]]]:
    """{threshold: {strategy: {seed: row}}}, the pairing of the paired tests."""
    by_threshold: dict[float, dict[str, dict[int, Row]]] = {}
    for (threshold, strategy), group in by_cell(rows).items():
        by_seed = {int(r["seed"]): r for r in group}
        if len(by_seed) != len(group):
            raise ValueError(f"duplicate seeds for strategy {strategy!r} at {threshold}")
        by_threshold.setdefault(threshold, {})[strategy] = by_seed
    return by_threshold


def paired_test(threshold, metric, a, b, runs_a, runs_b, larger_is_better: bool) -> dict:
    """The paired Wilcoxon test of strategies `a` and `b` on `metric` (runs by seed)."""
    diffs = paired_differences(runs_a, runs_b, metric)
    median = float(np.median(diffs)) if diffs.size else math.nan
    if median == 0 or math.isnan(median):
        better = "tie"
    else:
        better = a if (median > 0) == larger_is_better else b
    statistic, p_value, note = wilcoxon(diffs)
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
    by_threshold = by_seed(rows)
    tests = []
    for threshold, runs in by_threshold.items():
        for (a, runs_a), (b, runs_b) in itertools.combinations(runs.items(), 2):
            for metric, larger_is_better in METRICS.items():
                tests.append(
                    paired_test(threshold, metric, a, b, runs_a, runs_b, larger_is_better)
                )
    return tests


def paired_differences(
    runs_a: Mapping[int, Row], runs_b: Mapping[int, Row], metric: str
) -> np.ndarray:
    """``a - b`` of `metric` over the seeds both ran, skipping non-finite values."""
    seeds = sorted(runs_a.keys() & runs_b.keys())
    diffs = np.array([float(runs_a[s][metric]) - float(runs_b[s][metric]) for s in seeds])
    return diffs[np.isfinite(diffs)]


def wilcoxon(diffs: np.ndarray) -> tuple[float, float, str]:
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

def threshold_label(threshold: float) -> str:
    """0.85 -> '85': thresholds are fractions; label them in percent as the thesis does."""
    percent = threshold * 100 if threshold <= 1 else threshold
    return f"{round(percent, 6):g}"

