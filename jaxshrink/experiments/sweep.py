"""The thesis's strategy comparison (section 4.3, Figure 4.2) as one batched job.

`run_sweep(config, workdir)` trains the sweep's networks (all at once), then
minimizes every (seed, strategy, threshold) combination as one batch of runs.
`sweep.design` says which runs share a trained network:

* ``thesis`` (default): "For each threshold parameter ... 50 runs were carried out. A
  single run consisted of training a network ..., and then performing the
  minimization with three strategies" (4.3): each threshold trains its own
  `num_seeds` networks -- 250 for the thesis's 5 thresholds -- and the three
  strategies of a run minimize the same one. Run i of threshold index t has seed
  ``seed + i + t * num_seeds``, so no two runs share a network across thresholds;
* ``shared``: `num_seeds` networks (seeds ``seed + i``), each minimized by every
  strategy at every threshold: a fifth of the trainings, and thresholds are paired
  as well as strategies (differences between thresholds are free of
  network-to-network variation).

Either way:

* the runs of one network all start from it and draw the same training batches, so
  strategies are compared on the same networks (`analysis.paired_tests` pairs them by
  seed within a threshold, which both designs share);
* run (seed s, strategy k, threshold t) is exactly the single run of
  `python -m jaxshrink.main` with `seed=s`, `minimize.strategy=k`,
  `minimize.threshold=t` (same keys, same batches, same program per run); a row's
  ``seed`` is its network's seed;
* every round is one compiled call over all runs; the batched state is checkpointed
  after each, so an interrupted sweep resumes.

Outputs in `workdir`: `runs.csv` (one row per run: besides Figure 4.2's keys, the
score ratio final / baseline, the fraction of FLOPs removed, rounds, training steps
and an estimated share of the wall time), `results.json` (rows, per-run round logs,
timing and device), Figure 4.2 with its statistics (`figure_4_2.png`,
`figure_4_2_summary.csv`, `figure_4_2_tests.csv`, `figure_4_2.json`), and the
per-strategy comparison (`analysis.comparison`: `comparison.md`, `comparison.csv`,
`comparison_tests.csv` with Holm-corrected Wilcoxon tests, `comparison.png`;
`configs/compare.py` is the sweep made for it).
"""

from __future__ import annotations

import itertools
import os
import time

import jax
import ml_collections
import numpy as np

from jaxshrink.config import validate
from jaxshrink.core import files
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.runtime import distributed, progress, stages
from jaxshrink.runtime import workdir as workdir_lib
from jaxshrink.runtime.job import Job
from jaxshrink.search import batching, minimize
from jaxshrink.stats import analysis


def run_seed(config: ml_collections.ConfigDict, index: int, threshold_index: int) -> int:
    """The seed of the network run `index` of threshold `threshold_index` minimizes."""
    scfg = config.sweep
    shift = 0 if scfg.design == "shared" else threshold_index * int(scfg.num_seeds)
    return int(config.seed) + index + shift


def sweep_runs(config: ml_collections.ConfigDict) -> list[tuple[int, str, float]]:
    """(seed, strategy, threshold) of every run: run index, then strategy, then threshold.

    The seed follows `sweep.design` (`run_seed`); the trained networks are the
    distinct seeds.
    """
    scfg = config.sweep
    thresholds = [float(t) for t in scfg.thresholds]
    return [
        (run_seed(config, i, j), k, t)
        for i, k, (j, t) in itertools.product(
            range(int(scfg.num_seeds)), list(scfg.strategies), enumerate(thresholds)
        )
    ]


def _ratio(score: float, baseline: float) -> float:
    """score / baseline; NaN for a baseline of 0 (a network that never learned)."""
    return score / baseline if baseline else float("nan")


def run_sweep(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the sweep of `config` in `workdir` (resuming if it has checkpoints).

    Returns the results dictionary also written to `workdir/results.json`.
    """
    validate.validate(config)
    validate.check_workdir(workdir)
    with workdir_lib.claim(workdir, config) as workdir:
        return _run_sweep(config, workdir)


def _run_sweep(config: ml_collections.ConfigDict, workdir: str) -> dict:
    log = progress.Logger()
    start = time.perf_counter()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    runs = sweep_runs(config)
    seeds = sorted({s for s, _, _ in runs})
    log(
        f"jaxshrink sweep ({config.task}, {config.data.dataset}): {config.sweep.num_seeds} "
        f"seeds x {len(config.sweep.strategies)} strategies x {len(config.sweep.thresholds)} "
        f"thresholds = {len(runs)} runs on {len(seeds)} trained networks "
        f"({config.sweep.design} design); workdir {workdir}"
    )
    job = Job(config, workdir, log)
    log(job.describe())

    t0 = time.perf_counter()
    trained = stages.train_stage(job, seeds)
    train_seconds = time.perf_counter() - t0
    baselines = job.evaluate(trained)["score"]
    log(f"trained: eval {job.score_label} per seed {np.round(baselines, 4).tolist()}")

    seed_index = np.asarray([seeds.index(s) for s, _, _ in runs])
    start_states = batching.take(trained, seed_index)
    specs = batching.stack(
        [minimize.run_spec(config.minimize, strategy=k, threshold=t) for _, k, t in runs]
    )
    ms = stages.init_minimize(
        job.model.spec, start_states, baselines[seed_index], [s for s, _, _ in runs]
    )
    t0 = time.perf_counter()
    ms, history = stages.minimize_stage(
        job,
        ms,
        specs,
        f"minimize: {len(runs)} runs, mode {config.minimize.mode}, "
        f"{config.minimize.round_steps} steps per round",
    )
    minimize_seconds = time.perf_counter() - t0
    final = job.evaluate(ms.run)["score"]

    template = batching.take(trained.masks, 0)
    full = int(masks_lib.count_alive(template))
    full_flops = spec_lib.count_flops(job.model.spec, template)
    round_steps = int(config.minimize.round_steps)
    rows, logs = [], []
    for r, (seed, strategy, threshold) in enumerate(runs):
        kept = batching.take(ms.run.masks, r)
        baseline = float(baselines[seeds.index(seed)])
        rounds = stages.round_entries(history, r, job.model.spec)
        if not np.isfinite(baseline):
            status = "failed: trained network not finite"
        elif baseline <= 0:  # no score ratio exists; its rounds compared against 0
            status = "failed: trained network scores 0"
        elif not np.isfinite(final[r]) or not stages.all_finite(batching.take(ms.run.params, r)):
            status = "failed: final network not finite"
        else:
            status = "ok"
        rows.append(
            {
                "status": status,
                "seed": seed,
                "strategy": strategy,
                "threshold": threshold,
                "baseline": baseline,
                "final": float(final[r]),
                "relative_drop": 1.0 - _ratio(float(final[r]), baseline),
                "score_ratio": _ratio(float(final[r]), baseline),
                "disabled": full - int(masks_lib.count_alive(kept)),
                "flops_removed": 1.0 - spec_lib.count_flops(job.model.spec, kept) / full_flops,
                "rounds": len(rounds),
                "accepted": sum(e["accepted"] for e in rounds),
                "steps": len(rounds) * round_steps,
                "kept": " ".join(
                    "".join("#" if k else "." for k in row)
                    for row in masks_lib.to_rows(job.model.spec, kept)
                ),
            }
        )
        logs.append(rounds)
    if not distributed.is_primary():  # process 0 writes the job's files and report
        return {"runs": rows, "round_logs": logs}
    # The rows stay deterministic (a resumed sweep writes the same ones); the
    # comparison gets each run's estimated share of the wall time beside them.
    timed = [dict(r) for r in rows]
    _share_seconds(timed, minimize_seconds)
    files.write_csv(os.path.join(workdir, "runs.csv"), rows)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        log(
            f"WARNING: {len(failed)} of {len(rows)} runs failed (NaN/Inf, or a trained score "
            f"of 0), seeds "
            f"{sorted({r['seed'] for r in failed})}; Figure 4.2 leaves them out"
        )
    figure = analysis.figure_4_2(rows, workdir)
    compared = analysis.comparison(
        timed, workdir, _comparison_notes(config, len(seeds), train_seconds, minimize_seconds)
    )
    results = {
        "config": config.to_dict(),
        "device": jax.devices()[0].device_kind,
        "data": job.dataset.info,
        "design": config.sweep.design,
        "trained_networks": len(seeds),
        "devices": job.devices,
        "batch": {
            "method": job.engine.method,
            "group_size": job.engine.group_size,
            "grad": job.engine.grad,
            "steps": job.steps,
        },
        "seconds": {
            "train": train_seconds,
            "minimize": minimize_seconds,
            "total": time.perf_counter() - start,
        },
        "failed_runs": len(failed),
        "runs": rows,
        "round_logs": logs,
        "figure_4_2": {k: v for k, v in figure.items() if k != "summary"},
        "comparison": {k: v for k, v in compared.items() if k not in ("paths", "markdown")},
    }
    files.write_json(os.path.join(workdir, "results.json"), results)
    print("\n" + analysis.format_table(figure["summary"]), flush=True)
    print("\n" + figure["findings"], flush=True)
    print("\n" + compared["markdown"], flush=True)
    print(f"\nworkdir: {workdir} ({time.perf_counter() - start:.1f}s)", flush=True)
    return results


def _share_seconds(rows: list[dict], minimize_seconds: float) -> None:
    """Adds each run's estimated share of the minimization's wall time, in place.

    All runs go through every round call together, so no run has a wall time of its
    own. A run's share is `minimize_seconds` times its fraction of all training steps
    taken: with the CPU's loop batching a stopped run takes no steps, and the
    retraining dominates a round; the scoring and evaluation of every run each
    round are spread in the same proportion, which they are not exactly. With vmap
    groups a stopped run still computes (masked) while its group trains, so the
    estimate is coarser there.
    """
    total = sum(r["steps"] for r in rows)
    for r in rows:
        r["seconds"] = minimize_seconds * r["steps"] / total if total else 0.0


def _comparison_notes(config, networks: int, train_seconds: float, minimize_seconds: float):
    """How to read the comparison's costs, in the Markdown below its tables."""
    return [
        f"Shared initial training, not in any strategy's steps: {networks} networks x "
        f"{config.train.initial_steps} steps in {train_seconds:.1f} s. Minimization: "
        f"{minimize_seconds:.1f} s wall for all runs together; a strategy's seconds are "
        "that time split in proportion to its training steps (rounds x "
        f"{config.minimize.round_steps}), an estimate (`sweep._share_seconds`).",
        "Tests: two-sided paired Wilcoxon signed-rank by seed (exact for small n; zero "
        "differences dropped), Holm-corrected per threshold and metric, once over the "
        "tests against random and once over all pairs.",
    ]
