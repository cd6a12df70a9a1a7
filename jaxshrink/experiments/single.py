"""The whole job of one run (`jaxshrink.run`, no experiment section in the config).

Called by `python -m jaxshrink.main` and importable from a notebook through
`jaxshrink.run(config, workdir)`. Stages:

1. data: load (or build and cache) the train and eval splits;
2. train: `config.train.initial_steps` Adam steps with progress lines, evaluating and
   checkpointing every `config.train.eval_every` steps;
3. minimize (if `config.minimize.enabled`): rounds of select / disable / retrain /
   accept-or-roll-back (`minimize`), checkpointed after every round;
4. report (`report`): the compact exported network, `results.json`, pictures and a
   summary.

Nothing here knows the network or the task: `Job` builds them from the registries
(`models`, `tasks`, `data`), and every stage reads `job.model.spec` and the task's
score.

Every stage resumes from its newest checkpoint, so rerunning the same command on the
same workdir continues where an interrupted run stopped.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxshrink import data
from jaxshrink.core import files, train
from jaxshrink.core.results import Evaluated, ExportReport, RoundEntry, RunResult
from jaxshrink.deploy import export
from jaxshrink.deploy import stage as deploy
from jaxshrink.experiments.registry import RESULTS, Context, Experiment, Report
from jaxshrink.report import run_pictures
from jaxshrink.report import summary as report
from jaxshrink.runtime.job import Job
from jaxshrink.runtime.stages import (
    all_finite,
    init_minimize,
    minimize_stage,
    round_entries,
    train_stage,
)
from jaxshrink.search import batching, minimize

NOT_FINITE = (
    "the trained network is not finite (NaN/Inf in its weights or eval score); "
    "lower optim.learning_rate or check the data"
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What every process computed: the trained and the final run, with their scores.

    A run that cannot go on (`reason`) has no final run.
    """

    job: Job
    trained: train.TrainState
    trained_scores: dict[str, float]
    final: train.TrainState | None = None
    final_scores: dict[str, float] | None = None
    rounds: list[RoundEntry] = dataclasses.field(default_factory=list)
    reason: str | None = None
    # With a validation split: the test set's scores of the trained and final run.
    trained_test: dict[str, float] | None = None
    final_test: dict[str, float] | None = None

    @property
    def status(self) -> str:
        return "ok" if self.reason is None else f"failed: {self.reason}"


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _failed(config, workdir: str, log, reason: str, trained: Evaluated) -> dict:
    """Records a run that cannot go on: `results.json` says why; no score is reported."""
    device = jax.devices()[0].device_kind
    results = RunResult(f"failed: {reason}", config.to_dict(), workdir, device, trained)
    log(f"FAILED: {reason}")
    return results.to_json()


def _headline(config: ml_collections.ConfigDict, workdir: str) -> str:
    return f"jaxshrink {config.task} ({config.data.dataset}): workdir {workdir}"


def _run(config: ml_collections.ConfigDict, workdir: str, context: Context) -> Outcome:
    """Trains and (if `config.minimize.enabled`) minimizes one run, on every process."""
    log = context.log
    job = Job(config, workdir, log, context.model)
    log(job.describe())
    seeds = [int(config.seed)]
    # The network after a few steps, for the pictures: kept while it trains.
    early = run_pictures.early_step(config, job.model.spec)
    trained_batch = train_stage(job, seeds, keep_step=early)
    trained = batching.take(trained_batch, 0)
    trained_scores = _floats(batching.take(job.evaluate(trained_batch), 0))
    if not all_finite(trained.params) or not np.isfinite(trained_scores["score"]):
        return Outcome(job, trained, trained_scores, reason=NOT_FINITE)
    if config.minimize.enabled:
        final_batch, rounds = _minimize(job, trained_batch, trained_scores["score"], seeds)
    else:
        final_batch, rounds = trained_batch, []
    final = batching.take(final_batch, 0)
    final_scores = _floats(batching.take(job.evaluate(final_batch), 0))
    tests = [_test_scores(job, batch) for batch in (trained_batch, final_batch)]
    return Outcome(job, trained, trained_scores, final, final_scores, rounds, None, *tests)


def _test_scores(job: Job, batch) -> dict[str, float] | None:
    """The test set's scores of a batch of one (None without a validation split)."""
    if job.test_data is None:
        return None
    return _floats(batching.take(job.evaluate(batch, "test"), 0))


def _minimize(job: Job, trained_batch, baseline: float, seeds) -> tuple:
    """The minimization rounds of the run; returns (final batch of one, round records)."""
    mcfg, label = job.config.minimize, job.score_label
    spec = batching.stack([minimize.run_spec(mcfg)])
    ms = init_minimize(job.model.spec, trained_batch, [baseline], seeds)
    describe = (
        f"minimize: strategy {mcfg.strategy}, mode {mcfg.mode}, threshold "
        f"{mcfg.threshold}, {mcfg.round_steps} steps per round, baseline {label} "
        f"{baseline:.4g}"
    )
    ms, history = minimize_stage(job, ms, spec, describe)
    return ms.run, round_entries(history, 0, job.model.spec)


def _export(job: Job, final: train.TrainState, workdir: str) -> ExportReport:
    """The physically smaller network in `workdir/export`; returns its record."""
    return export.export(
        os.path.join(workdir, "export"),
        job.model,
        final.params,
        final.masks,
        job.trainer.eval_transform(
            jnp.asarray(data.decode(job.dataset.eval.inputs[: int(job.config.train.batch_size)]))
        ),
        state=final.model_state,
    )


def _write(outcome: Outcome, workdir: str, context: Context) -> Report:
    """Pictures, the exported network and (if on) the deploy stage, on process 0."""
    job, trained, label = outcome.job, outcome.trained, outcome.job.score_label
    trained_scores = outcome.trained_scores
    if outcome.reason is not None:
        record = Evaluated(int(trained.step), trained_scores)
        return Report(_failed(job.config, workdir, context.log, outcome.reason, record))
    job.picture(
        "samples_trained.png",
        trained,
        f"trained {int(trained.step)} steps: eval {label} {trained_scores['score']:.4g}",
    )
    final, final_scores, rounds = outcome.final, outcome.final_scores, outcome.rounds
    job.picture(
        "samples_minimized.png", final, f"minimized: eval {label} {final_scores['score']:.4g}"
    )
    exported = _export(job, final, workdir)
    pictures = run_pictures.draw_run(job, trained, final, rounds, trained_scores["score"])
    results = report.results(
        job,
        trained,
        final,
        trained_scores,
        final_scores,
        rounds,
        exported,
        pictures,
        tests=(outcome.trained_test, outcome.final_test),
    )
    config = job.config
    if config.deploy.enabled:
        files.write_json(os.path.join(workdir, RESULTS), results.to_json())  # if deploy fails
        record = deploy.run(job, trained, final, os.path.join(workdir, "deploy"), context.log)
        results = dataclasses.replace(results, deploy=record)
    return Report(results.to_json(), report.summary(results, job.task))


EXPERIMENT = Experiment(
    name="single",
    section=None,
    headline=_headline,
    run=_run,
    report=_write,
    own_model=True,
)
