"""One comparison of every strategy on the same trained networks, paired tests against random.

    python -m jaxshrink.main --config=configs/compare.py:fcn         # edge FCN (Canny)
    python -m jaxshrink.main --config=configs/compare.py:mnist       # MNIST classifier
    python -m jaxshrink.main --config=configs/compare.py:summation   # 2-1000-1 network
    python -m jaxshrink.main --config=configs/compare.py:fcn --config.sweep.strategies=cosine,random

A sweep (`jaxshrink.experiments.sweep`) in the shared design: `sweep.num_seeds` = 10 networks are
trained once, and every strategy of `sweep.strategies` minimizes each of them at one
threshold (0.95), so runs pair by seed. The default strategy list is every strategy in
`strategies.STRATEGIES` (`sweep.comparison_strategies`), each with its own stopping
and group rules unless the preset sets `minimize.group`; a newly registered strategy
joins without a change here. Besides the sweep's `runs.csv`, `results.json` and Figure
4.2, the workdir gets `comparison.md` / `.csv` (per strategy: score ratio, units and
FLOPs removed, rounds, training steps, estimated seconds), `comparison_tests.csv`
(paired Wilcoxon tests, Holm-corrected against random and over all pairs) and
`comparison.png`.

Each preset is the model's CPU-sized ("quick") config; with nine strategies (90 runs)
or all of them (190) a comparison took 26-38 minutes on 2 shared CPU cores
(`experiments/results/compare_*_cpu.json`; the tables are in docs/results/compare.md):

* `fcn`: the edge FCN at `configs/sweep.py:quick`'s size (32x32 Canny crops, 600
  initial steps, 40-step rounds), the thesis's stopping rules;
* `mnist`: `configs/mnist.py:quick` (conv 4, conv 8, dense 128; 600 steps; at most
  10 rounds of 50 steps);
* `summation`: `configs/summation.py:quick` with many units per round
  (`minimize.group='adaptive'`: starts at `group_size`, doubles after an accepted
  round, halves after a rollback) and at most 20 rounds, so 1000 hidden units can
  shrink in bounded rounds.
"""

import os

import ml_collections

from jaxshrink.config import loader
from jaxshrink.core import errors
from jaxshrink.experiments import sweep

HERE = os.path.dirname(os.path.abspath(__file__))


def _model_config(name: str, arg: str) -> ml_collections.ConfigDict:
    """`configs/<name>.py:<arg>`, a sibling config file (`jaxshrink.config.loader`)."""
    return loader.load(f"{HERE}/{name}.py:{arg}")


def fcn() -> ml_collections.ConfigDict:
    return sweep.get_preset("canny", "quick")


def mnist() -> ml_collections.ConfigDict:
    return _model_config("mnist", "quick")


def summation() -> ml_collections.ConfigDict:
    c = _model_config("summation", "quick")
    c.minimize.group = "adaptive"
    c.minimize.group_size = 4
    c.minimize.max_rounds = 20
    return c


MODELS = {"fcn": fcn, "mnist": mnist, "summation": summation}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in MODELS:
        raise errors.ConfigError(
            f"config argument: got {arg!r}; allowed: one of {sorted(MODELS)} "
            "(e.g. configs/compare.py:fcn)"
        )
    return sweep.add_comparison(MODELS[arg]())
