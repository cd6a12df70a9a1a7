"""Statistics of a sweep's runs: the thesis's Figure 4.2 and the comparison of strategies.

Section 4.3 of the thesis compares the minimization strategies (CosMax, Random, Seq) at
thresholds of 85-100% by bare means; here every mean has an interval and strategies are
compared with paired tests, so "Random seems to be the most efficient strategy" becomes
a claim with a p-value.

* `paired`: Student-t intervals, paired Wilcoxon signed-rank tests, Holm's adjustment;
* `figure`: Figure 4.2 (per threshold and strategy: the relative drop of the score and
  the number of units removed), its table and findings;
* `comparison`: one comparison of every strategy on the same trained networks.

The public names are importable from here (`jaxshrink.stats.figure_4_2(rows, out_dir)`).
"""

from jaxshrink.stats.comparison import (
    COMPARISON_METRICS,
    comparison,
    comparison_answer,
    comparison_markdown,
    comparison_tests,
    plot_comparison,
    strategy_table,
)
from jaxshrink.stats.figure import figure_4_2, format_table, plot_figure_4_2, summarize
from jaxshrink.stats.paired import (
    METRICS,
    STRATEGY_LABELS,
    holm,
    mean_ci,
    paired_tests,
    strategy_order,
)

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
