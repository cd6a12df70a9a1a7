"""The whole job of one run: `run(config, workdir)`.

Called by `python -m jaxshrink.main` and importable from a notebook. Stages:

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

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxshrink import data
from jaxshrink.config import validate
from jaxshrink.core import files, models
from jaxshrink.deploy import export
from jaxshrink.deploy import stage as deploy
from jaxshrink.report import summary as report
from jaxshrink.runtime import workdir as workdir_lib
from jaxshrink.runtime.job import Job
from jaxshrink.runtime.progress import Logger
from jaxshrink.runtime.stages import (
    all_finite,
    init_minimize,
    minimize_stage,
    round_entries,
    train_stage,
)
from jaxshrink.search import batching, minimize


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _failed(config, workdir: str, log: Logger, reason: str, trained: dict) -> dict:
    """Records a run that cannot go on: `results.json` says why; no score is reported."""
    results = {
        "status": f"failed: {reason}",
        "config": config.to_dict(),
        "workdir": workdir,
        "device": jax.devices()[0].device_kind,
        "trained": trained,
    }
    files.write_json(os.path.join(workdir, "results.json"), results)
    log(f"FAILED: {reason}")
    return results


def run(config: ml_collections.ConfigDict, workdir: str, model: models.Model | None = None) -> dict:
    """Runs the configured job in `workdir` and returns its results.

    Args:
      config: a config from `configs/` (see `jaxshrink.config.schema.base_config`).
      workdir: folder for checkpoints, `results.json`, pictures and the exported
        network; created if missing. Rerunning with the same workdir resumes.
      model: your own network (`models.Model.create`) instead of `config.model`'s.

    Returns:
      The results dictionary that is also written to `workdir/results.json`.

    Raises:
      errors.ConfigError: a config field is invalid, or differs from the one the
        workdir was started with.
      errors.WorkdirBusy: another live process holds the workdir.
    """
    validate.validate(config, model)
    validate.check_workdir(workdir)
    with workdir_lib.claim(workdir, config) as workdir:
        return _run(config, workdir, model)


def _run(config: ml_collections.ConfigDict, workdir: str, model=None) -> dict:
    log = Logger()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    log(f"jaxshrink {config.task} ({config.data.dataset}): workdir {workdir}")
    job = Job(config, workdir, log, model)
    log(job.describe())
    label = job.score_label

    seeds = [int(config.seed)]
    trained_batch = train_stage(job, seeds)
    trained = batching.take(trained_batch, 0)
    trained_scores = _floats(batching.take(job.evaluate(trained_batch), 0))
    if not all_finite(trained.params) or not np.isfinite(trained_scores["score"]):
        return _failed(
            config,
            workdir,
            log,
            "the trained network is not finite (NaN/Inf in its weights or eval score); "
            "lower optim.learning_rate or check the data",
            {"steps": int(trained.step), "eval": trained_scores},
        )
    job.picture(
        "samples_trained.png",
        trained,
        f"trained {int(trained.step)} steps: eval {label} {trained_scores['score']:.4g}",
    )

    if config.minimize.enabled:
        mcfg = config.minimize
        spec = batching.stack([minimize.run_spec(mcfg)])
        ms = init_minimize(job.model.spec, trained_batch, [trained_scores["score"]], seeds)
        describe = (
            f"minimize: strategy {mcfg.strategy}, mode {mcfg.mode}, threshold "
            f"{mcfg.threshold}, {mcfg.round_steps} steps per round, baseline {label} "
            f"{trained_scores['score']:.4g}"
        )
        ms, history = minimize_stage(job, ms, spec, describe)
        final_batch = ms.run
        rounds = round_entries(history, 0, job.model.spec)
    else:
        rounds, final_batch = [], trained_batch
    final = batching.take(final_batch, 0)
    final_scores = _floats(batching.take(job.evaluate(final_batch), 0))
    job.picture(
        "samples_minimized.png", final, f"minimized: eval {label} {final_scores['score']:.4g}"
    )
    exported = export.export(
        os.path.join(workdir, "export"),
        job.model,
        final.params,
        final.masks,
        job.trainer.eval_transform(
            jnp.asarray(data.decode(job.dataset.eval.inputs[: int(config.train.batch_size)]))
        ),
        state=final.model_state,
    )
    pictures = report.draw_run(job, trained, final, rounds, trained_scores["score"])
    results = report.results(job, trained, final, trained_scores, final_scores, rounds, exported)
    results["pictures"] = pictures
    if config.get("deploy") is not None and config.deploy.enabled:
        files.write_json(os.path.join(workdir, "results.json"), results)  # kept if deploy fails
        results["deploy"] = deploy.run(job, trained, final, os.path.join(workdir, "deploy"), log)
    files.write_json(os.path.join(workdir, "results.json"), results)
    print(report.summary(results), flush=True)
    return results
