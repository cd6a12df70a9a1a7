"""The 'summation' dataset: two numbers in, their sum out (y = i1 + i2, seed 003 section 2.7.1).

A toy regression whose smallest exact network is known: one hidden node with both input
weights and the output weight 1 and every bias 0 computes ReLU(i1 + i2) = i1 + i2. That
identity holds only where i1 + i2 >= 0, so the inputs are drawn from [low, high] = [0, 1] by
default; a range with negative sums is allowed but has no such one-node optimum under ReLU.

Examples are generated on the fly from the seed (a numpy Generator), nothing is read or cached.
Train and eval come from independent random streams, [seed, 0] and [seed, 1], so changing one
split's size leaves the other as it was; with continuous inputs the two share no example
(almost surely). Inputs are float32 (N, 2) drawn uniformly from [low, high]; targets are float32
(N, 1), the float32 sum of the two inputs, so ``targets[:, 0] == inputs[:, 0] + inputs[:, 1]``
holds exactly.

Fields of ``data_cfg`` (an ``ml_collections.ConfigDict``; `default_config` has them all):
  dataset: 'summation'.
  source: 'generated', the only one.
  seed: seeds both random streams.
  train_size: number of train examples (the thesis used 1,000,000; the default 100000 keeps
    host memory and start-up small).
  eval_size: number of eval examples.
  low, high: the range of each input, low < high.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from jaxshrink.core import errors
from jaxshrink.data.split import Dataset, Split, make_info

NAME = "summation"
SOURCES = ("generated",)


def default_config(name: str = NAME) -> ml_collections.ConfigDict:
    """Returns the summation data config with every field at its default; see the docstring."""
    if name != NAME:
        raise errors.ConfigError(f"data.dataset: got {name!r}; allowed here: {NAME!r}")
    return ml_collections.ConfigDict(
        {
            "dataset": NAME,
            "source": "generated",
            "seed": 0,
            "train_size": 100_000,
            "eval_size": 1000,
            "low": 0.0,
            "high": 1.0,
        }
    )


def input_shape(data_cfg) -> tuple[int, ...]:
    """One example's shape: the two summands."""
    del data_cfg
    return (2,)


def load(data_cfg) -> Dataset:
    """Generates the train and eval examples of `data_cfg`.

    Raises:
      errors.ConfigError: on a bad field of `data_cfg`, naming it.
    """
    if data_cfg.source not in SOURCES:
        raise errors.ConfigError(f"data.source: got {data_cfg.source!r}; allowed: {SOURCES}")
    low, high = _check_range(data_cfg.low, data_cfg.high)
    train = _generate(data_cfg, "train", stream=0, low=low, high=high)
    eval_split = _generate(data_cfg, "eval", stream=1, low=low, high=high)
    description = (
        f"Summation y = i1 + i2: {len(train)} train / {len(eval_split)} eval pairs drawn "
        f"uniformly from [{low:g}, {high:g}]^2, generated with seed {data_cfg.seed}"
    )
    info = make_info(data_cfg, train, eval_split, description, low=low, high=high)
    return Dataset(train, eval_split, info)


def _generate(data_cfg, split: str, stream: int, low: float, high: float) -> Split:
    size = data_cfg[f"{split}_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise errors.ConfigError(f"data.{split}_size: got {size!r}; allowed: an integer >= 1")
    rng = np.random.default_rng([data_cfg.seed, stream])
    inputs = rng.uniform(low, high, size=(size, 2)).astype(np.float32)
    # Summed in float32, the dtype the network sees, so the target is exact for those inputs.
    targets = (inputs[:, 0] + inputs[:, 1])[:, None]
    return Split(inputs, targets, tuple(f"summation/{split}[{i}]" for i in range(size)))


def _check_range(low, high) -> tuple[float, float]:
    for field, value in (("low", low), ("high", high)):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise errors.ConfigError(f"data.{field}: got {value!r}; allowed: a finite number")
    if not low < high:
        raise errors.ConfigError(f"data.low, data.high: got {low!r}, {high!r}; allowed: low < high")
    return float(low), float(high)
