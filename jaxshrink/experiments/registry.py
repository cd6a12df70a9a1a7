"""The experiments, in one registry: what selects each, checks its section and runs it.

Every experiment is a module of this package that defines `EXPERIMENT`, an
`Experiment`: the single run (no section), and the sweep, correlation, relearning and
depth experiments, each selected by its config section of the same name. `select`
picks the one a config asks for; `jaxshrink.experiments.runner.run` does the work they
share (validation, the workdir, the log's first line, `results.json`) and calls the
experiment's two phases:

* `run(config, workdir, context)`: the computation, on every process of a job (the
  compiled programs are shared by all of them); returns the experiment's outcome;
* `report(outcome, workdir, context)`: on process 0 alone, every file the experiment
  writes (CSVs, pictures, the exported network) and the results that go to
  `results.json`, with the text printed at the end (a `Report`).

A new experiment is one more module with its `EXPERIMENT`, named in `MODULES`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import ml_collections

from jaxshrink.core import errors, models
from jaxshrink.runtime import progress

# The modules that define an experiment, in the order a config's sections are named.
MODULES = ("single", "sweep", "correlation", "relearn", "depth")
RESULTS = "results.json"  # what every experiment leaves in its workdir, from `Report.results`


@dataclasses.dataclass(frozen=True)
class Context:
    """What the runner hands an experiment: the job's log, its start and its model."""

    log: progress.Logger
    start: float  # `time.perf_counter()` when the experiment started
    model: models.Model | None = None  # a researcher's own network (single run only)


@dataclasses.dataclass(frozen=True)
class Report:
    """What process 0 keeps of an experiment: `results.json`'s content and its text."""

    results: Any
    text: str = ""  # printed once `results.json` is written


def _no_check(config: ml_collections.ConfigDict) -> None:
    del config


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment (see the module docstring).

    Attributes:
      name: what it is called (its module's name).
      section: the config section that selects it; None for the single run.
      headline: `(config, workdir) -> str`, the log's first line.
      run: `(config, workdir, context) -> outcome`, on every process.
      report: `(outcome, workdir, context) -> Report`, on process 0 only.
      check: `(config) -> None`, the validation of its own section (raises
        `errors.ConfigError`), after the common `jaxshrink.config.validate.validate`.
      own_model: whether it runs a researcher's own `models.Model`.
    """

    name: str
    section: str | None
    headline: Callable[[ml_collections.ConfigDict, str], str]
    run: Callable[[ml_collections.ConfigDict, str, Context], Any]
    report: Callable[[Any, str, Context], Report]
    check: Callable[[ml_collections.ConfigDict], None] = _no_check
    own_model: bool = False


def experiments() -> dict[str, Experiment]:
    """Every registered experiment by name, in `MODULES` order."""
    out = {}
    for name in MODULES:
        experiment = importlib.import_module(f"jaxshrink.experiments.{name}").EXPERIMENT
        out[experiment.name] = experiment
    return out


def select(config: ml_collections.ConfigDict) -> Experiment:
    """The experiment whose section `config` has; the single run if it has none.

    Raises:
      errors.ConfigError: `config` has the sections of two or more experiments.
    """
    registered = experiments().values()
    chosen = [e for e in registered if e.section is not None and e.section in config]
    if len(chosen) > 1:
        sections = [repr(e.section) for e in chosen]
        names = ", ".join(sections[:-1]) + " and " + sections[-1]
        raise errors.ConfigError(
            f"config has sections {names}; allowed: at most one experiment section"
        )
    if chosen:
        return chosen[0]
    return next(e for e in registered if e.section is None)
