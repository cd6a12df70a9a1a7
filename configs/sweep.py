"""The thesis's strategy comparison, Figure 4.2 (thesis 001, section 4.3).

    python -m jaxshrink.main --config=configs/sweep.py          # the thesis's sizes
    python -m jaxshrink.main --config=configs/sweep.py:quick    # a CPU-sized sweep

Default: Canny targets (the thesis's final framework) on 256x256 crops; 50 seeds,
each trained 10000 steps, then minimized with CosMax, Random and Seq at thresholds
85, 90, 95, 98 and 100% in 2000-step rounds: 750 runs, batched as one program and
sharded over all local devices. That is at most 15.5 million seed-steps (750 runs x
10 rounds x 2000 steps + 50 x 10000 initial): a GPU job (a 2-core CPU, at about 5 seed-steps/s
at 256x256, would need over a month).

`quick`: 3 seeds on 32x32 crops, 600 initial steps, 40 steps per round (45 runs);
a few minutes on a 2-core CPU. The workdir gets `runs.csv`, `results.json` and
Figure 4.2 (`figure_4_2.png` with its summary and Wilcoxon tests as CSV/JSON).
`python experiments/figure_4_2.py --sweep=<workdir>` redraws the figure.
"""

from jaxshrink import config as config_lib


def get_config(arg: str | None = None):
    return config_lib.get_sweep_preset("canny", arg)
