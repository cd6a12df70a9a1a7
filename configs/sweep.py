"""The thesis's strategy comparison, Figure 4.2 (thesis 001, section 4.3).

    python -m jaxshrink.main --config=configs/sweep.py          # the thesis's sizes
    python -m jaxshrink.main --config=configs/sweep.py:quick    # a CPU-sized sweep

Default: Canny targets (the thesis's final framework) on 256x256 crops; the thesis's
design (`sweep.design='thesis'`): for each of the thresholds 85, 90, 95, 98 and 100%,
50 networks, each trained 10000 steps and then minimized with CosMax, Random and Seq
in 2000-step rounds: 250 trained networks, 750 runs, batched as one program and
sharded over all local devices. That is at most 17.5 million seed-steps (750 runs x
10 rounds x 2000 steps + 250 x 10000 initial): a GPU job. One H100 trained the 250
networks at about 2000 seed-steps/s, which projects to a few hours for the whole sweep;
a 2-core CPU, at about 15 seed-steps/s at 256x256, would need about two weeks
(`experiments/results/gpu_h100/`, `bench_auto_cpu.json`; docs/performance.md).
`--config.sweep.design=shared`
trains 50 networks and minimizes each at every threshold (15.5 million seed-steps;
thresholds paired by network too).

`quick`: 3 seeds per threshold on 32x32 crops (15 networks), 600 initial steps, 40
steps per round (45 runs); a few minutes on a 2-core CPU. The workdir gets
`runs.csv`, `results.json` and Figure 4.2 (`figure_4_2.png` with its summary and
Wilcoxon tests as CSV/JSON).
`python experiments/figure_4_2.py --sweep=<workdir>` redraws the figure.
"""

from jaxshrink.experiments import sweep


def get_config(arg: str | None = None):
    return sweep.get_preset("canny", arg)
