"""Mask correlations: the thesis's Table 4.1 and Figure 4.1 (thesis 001, 4.1-4.2).

    python -m jaxshrink.main --config=configs/correlation.py           # the thesis
    python -m jaxshrink.main --config=configs/correlation.py:quick     # ~1 min, CPU
    python -m jaxshrink.main --config=configs/correlation.py:medium    # ~9 min, CPU

Default: Canny on 256x256 crops; 100 repetitions of 10000 training steps, then each
of the 10 hidden masks disabled in turn (and once none) and trained 10000 more steps:
1100 variants trained as one batch. `quick`: 4 repetitions on 32x32 crops with 400 +
200 steps. `medium`: 12 repetitions, 1000 + 400 steps (9 minutes on 2 CPU cores).
The workdir gets `correlation.csv`, `table_4_1.csv` and `table_4_1.md` (Table 4.1 on
both samples: one scalar per repetition, the thesis's, and every (repetition, mask)
pair pooled), `table_4_1_selected.csv`, `figure_4_1.png` and `results.json`; see
`jaxshrink/experiments/correlation.py` for how each number is defined.
"""

from jaxshrink.experiments import correlation


def get_config(arg: str | None = None):
    return correlation.get_preset("canny", arg)
