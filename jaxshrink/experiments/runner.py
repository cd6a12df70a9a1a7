"""One runner for every experiment: `run(config, workdir, model=None)`.

What every experiment shares is done here, once: the experiment is selected by the
config's section (`registry.select`), the config validated (the common checks, then the
experiment's own), the workdir checked and claimed (`runtime.workdir.claim`: one
writer, the same config on every resume), the log's first line written, and the
experiment run (`Experiment.run`, on every process of a job). Process 0 alone then
writes the experiment's files (`Experiment.report`) and `results.json`, and prints its
summary; the other processes of a multi-process job write nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import ml_collections

from jaxshrink.config import resolve, validate
from jaxshrink.core import errors, files, models
from jaxshrink.experiments import registry
from jaxshrink.runtime import determinism, distributed, preemption, progress
from jaxshrink.runtime import workdir as workdir_lib
from jaxshrink.search import checks as search_checks


def check(config: ml_collections.ConfigDict, model: models.Model | None = None):
    """Validates `config` for the experiment it selects; returns that `Experiment`.

    Raises:
      errors.ConfigError: a field is invalid, the config has two experiment sections,
        or `model` is given for an experiment that does not run one.
    """
    experiment = registry.select(config)
    if model is not None and not experiment.own_model:
        raise errors.ConfigError(
            f"model: a model of your own for the {experiment.name} experiment; allowed: "
            "a model of your own only for a single run (a config without an experiment "
            "section)"
        )
    validate.validate(config, model)
    experiment.check(config)
    return experiment


def run(config: ml_collections.ConfigDict, workdir: str, model: models.Model | None = None) -> Any:
    """Runs the experiment `config` selects in `workdir` and returns its results.

    Args:
      config: a config from `configs/` (see `jaxshrink.config.schema.base_config`): a
        single run, or one with an experiment's section (`sweep`, `correlation`,
        `relearn`, `depth`).
      workdir: folder for checkpoints, `results.json` and the experiment's other
        files; created if missing. Rerunning with the same workdir resumes.
      model: your own network (`models.Model.create`) instead of `config.model`'s
        (a single run only).

    Returns:
      The results that are also written to `workdir/results.json`; on the other
      processes of a multi-process job, which write nothing, the experiment's outcome.

    Raises:
      errors.ConfigError: a config field is invalid, or differs from the one the
        workdir was started with.
      errors.WorkdirBusy: another live process holds the workdir.
      preemption.Stopped: SIGTERM or SIGINT stopped the run at a safe point, its
        checkpoint written; the same call resumes it.
    """
    # Before anything starts JAX's backend (the validation builds the model): its
    # thread pool and deterministic kernels.
    search_checks.check_batch(config)
    determinism.apply(config.batch)
    experiment = check(config, model)
    # The automatic values made concrete: what the run reads and its workdir records.
    config = resolve.resolve(config, model)
    validate.check_workdir(workdir)
    # SIGTERM and SIGINT stop the run at its next safe point, with a checkpoint.
    with (
        workdir_lib.claim(workdir, config) as claimed,
        preemption.watch(config.train.grace_seconds),
    ):
        return _run(experiment, config, claimed, model)


def _run(experiment, config: ml_collections.ConfigDict, workdir: str, model) -> Any:
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    context = registry.Context(progress.Logger(), time.perf_counter(), model)
    context.log(experiment.headline(config, workdir))
    outcome = experiment.run(config, workdir, context)
    if not distributed.is_primary():  # process 0 writes the job's files and report
        return outcome
    report = experiment.report(outcome, workdir, context)
    files.write_json(os.path.join(workdir, registry.RESULTS), report.results)
    if report.text:
        print(report.text, flush=True)
    return report.results


def status(result: Any) -> str:
    """'ok', or 'failed: <why>' for a run that could not go on (its `status`)."""
    if isinstance(result, Mapping):
        return str(result.get("status", "ok"))
    return str(getattr(result, "status", "ok"))
