"""The thesis's strategy comparison (section 4.3, Figure 4.2) as one batched job.

The experiment of a config with a `sweep` section (`EXPERIMENT`, run by
`jaxshrink.experiments.runner`): it trains the sweep's networks (all at once), then
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
  strategies are compared on the same networks (`stats.paired_tests` pairs them by
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
per-strategy comparison (`stats.comparison`: `comparison.md`, `comparison.csv`,
`comparison_tests.csv` with Holm-corrected Wilcoxon tests, `comparison.png`;
`configs/compare.py` is the sweep made for it).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

import jax
import ml_collections
import numpy as np

from jaxshrink import stats
from jaxshrink.config import schema, validate
from jaxshrink.core import files, train
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.results import RoundEntry, SweepRow
from jaxshrink.experiments.registry import Context, Experiment, Report
from jaxshrink.runtime import stages
from jaxshrink.runtime.job import Job
from jaxshrink.search import batching, minimize, strategies
from jaxshrink.search.plan import Plan

# How a sweep's runs get their trained networks: 'thesis' = one network per (seed,
# threshold), shared by the strategies [4.3]; 'shared' = one network per seed, shared
# by every strategy and threshold (fewer trainings, and thresholds are paired too).
DESIGNS = ("thesis", "shared")


def add_section(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the thesis's Figure 4.2 sweep (4.3) to any run config, in place."""
    c.sweep = ml_collections.ConfigDict()
    c.sweep.num_seeds = 50  # runs per threshold [4.3]
    c.sweep.thresholds = (0.85, 0.9, 0.95, 0.98, 1.0)  # [2.4.2, 4.3]
    c.sweep.strategies = ("cosine", "random", "sequential")  # CosMax, Random, Seq [4.3]
    # 'thesis': each threshold trains its own num_seeds networks [4.3] (seeds seed +
    # i + t * num_seeds for threshold index t); 'shared': seeds seed + i serve every
    # threshold. See `DESIGNS`.
    c.sweep.design = "thesis"
    return c


def default_config(dataset: str = "canny") -> ml_collections.ConfigDict:
    """The thesis's Figure 4.2 experiment (4.3): `schema.base_config(dataset)` plus a `sweep`."""
    return add_section(schema.base_config(dataset))


def make_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a sweep in place to a few minutes on a 2-core CPU."""
    c.data.crop_size = 32
    c.data.train_size = 300
    c.data.eval_size = 32
    c.train.initial_steps = 600
    c.train.log_every = 200
    c.train.eval_every = 600
    c.minimize.round_steps = 40
    c.sweep.num_seeds = 3
    return c


PRESETS = {"quick": make_quick}


def get_preset(dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`default_config(dataset)` with the presets named by `arg` ('quick', or None)."""
    return schema.apply_presets(default_config(dataset), PRESETS, arg)


def comparison_strategies() -> tuple[str, ...]:
    """Every registered strategy (`strategies.STRATEGIES`), in registration order.

    Each runs under its own default rules (stopping rule and, with `minimize.group`
    'auto', group rule), so one added with `strategies.register` joins the next
    comparison without a config change; a config that sets `minimize.group` puts
    every strategy under that rule instead.
    """
    return tuple(strategies.STRATEGIES)


def add_comparison(
    c: ml_collections.ConfigDict, num_seeds: int = 10, threshold: float = 0.95
) -> ml_collections.ConfigDict:
    """Makes `c` one comparison of strategies, in place: a sweep in the shared design
    (every strategy minimizes the same `num_seeds` trained networks, so runs pair by
    seed) at one threshold, over `comparison_strategies()`.

    10 seeds by default: with n paired seeds the smallest two-sided exact Wilcoxon p
    is 2 / 2^n (0.002 for 10), so a Holm correction over up to 25 strategies
    against random can still reach 0.05; 6 seeds (0.031) could not survive even two.
    """
    if "sweep" not in c:
        add_section(c)
    c.sweep.design = "shared"
    c.sweep.num_seeds = num_seeds
    c.sweep.thresholds = (threshold,)
    c.sweep.strategies = comparison_strategies()
    return c


def check(c: ml_collections.ConfigDict) -> None:
    """The `sweep` section's fields; a sweep always minimizes (`validate.check_minimizing`)."""
    validate.check_int(c, "sweep.num_seeds")
    for name in c.sweep.strategies:
        validate.check_one_of(name, "sweep.strategies", strategies.STRATEGIES)
    for t in c.sweep.thresholds:
        validate.check_field(0.0 < t <= 1.0, "sweep.thresholds", t, "ratios in (0, 1]")
    # A repeated name would pair a seed with itself in the tests, after the compute.
    for field in ("strategies", "thresholds"):
        values = tuple(c.sweep[field])
        ok = 0 < len(values) == len(set(values))
        validate.check_field(ok, f"sweep.{field}", values, "a non-empty list without repeats")
    validate.check_one_of(c.sweep.get("design"), "sweep.design", DESIGNS)
    validate.check_minimizing(c)


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


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What every process computed: one row and one round log per run, and the times."""

    job: Job
    rows: list[dict]
    round_logs: list[list[dict]]
    trained_networks: int
    train_seconds: float
    minimize_seconds: float


def _headline(config: ml_collections.ConfigDict, workdir: str) -> str:
    runs = sweep_runs(config)
    seeds = {s for s, _, _ in runs}
    return (
        f"jaxshrink sweep ({config.task}, {config.data.dataset}): {config.sweep.num_seeds} "
        f"seeds x {len(config.sweep.strategies)} strategies x {len(config.sweep.thresholds)} "
        f"thresholds = {len(runs)} runs on {len(seeds)} trained networks "
        f"({config.sweep.design} design); workdir {workdir}"
    )


def _run(config: ml_collections.ConfigDict, workdir: str, context: Context) -> Outcome:
    """Trains every network, then minimizes every run, as batches (every process)."""
    log = context.log
    runs = sweep_runs(config)
    seeds = sorted({s for s, _, _ in runs})
    # One compiled round computes the scores of every strategy of the sweep.
    plan = Plan.single(config.minimize).replace(strategies=tuple(config.sweep.strategies))
    job = Job(config, workdir, log, plan=plan)
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
    rows, logs = [], []
    for r, key in enumerate(runs):
        rounds = stages.round_entries(history, r, job.model.spec)
        baseline = float(baselines[seeds.index(key[0])])
        run = batching.take(ms.run, r)
        rows.append(_row(job, template, key, baseline, final[r], run, rounds))
        logs.append([e.to_json() for e in rounds])
    return Outcome(job, rows, logs, len(seeds), train_seconds, minimize_seconds)


def _status(baseline: float, final: float, run: train.TrainState) -> str:
    """'ok', or why the run's scores are left out of Figure 4.2."""
    if not np.isfinite(baseline):
        return "failed: trained network not finite"
    if baseline <= 0:  # no score ratio exists; its rounds compared against 0
        return "failed: trained network scores 0"
    if not np.isfinite(final) or not stages.all_finite(run.params):
        return "failed: final network not finite"
    return "ok"


def _row(job: Job, template, key, baseline: float, final, run, rounds: list[RoundEntry]) -> dict:
    """`runs.csv`'s row of one run: `key` = (seed, strategy, threshold), `run` its end."""
    seed, strategy, threshold = key
    model_spec, kept, final = job.model.spec, run.masks, float(final)
    full = int(masks_lib.count_alive(template))
    full_flops = spec_lib.count_flops(model_spec, template)
    return SweepRow(
        status=_status(baseline, final, run),
        seed=seed,
        strategy=strategy,
        threshold=threshold,
        baseline=baseline,
        final=final,
        disabled=full - int(masks_lib.count_alive(kept)),
        flops_removed=1.0 - spec_lib.count_flops(model_spec, kept) / full_flops,
        rounds=len(rounds),
        accepted=sum(e.accepted for e in rounds),
        steps=len(rounds) * int(job.config.minimize.round_steps),
        kept=" ".join(
            "".join("#" if k else "." for k in row) for row in masks_lib.to_rows(model_spec, kept)
        ),
    ).to_json()


def _write(outcome: Outcome, workdir: str, context: Context) -> Report:
    """`runs.csv`, Figure 4.2 and the comparison of strategies, on process 0."""
    config, rows = outcome.job.config, outcome.rows
    # The rows stay deterministic (a resumed sweep writes the same ones); the
    # comparison gets each run's estimated share of the wall time beside them.
    timed = [dict(r) for r in rows]
    _share_seconds(timed, outcome.minimize_seconds)
    files.write_csv(os.path.join(workdir, "runs.csv"), rows)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        context.log(
            f"WARNING: {len(failed)} of {len(rows)} runs failed (NaN/Inf, or a trained score "
            f"of 0), seeds "
            f"{sorted({r['seed'] for r in failed})}; Figure 4.2 leaves them out"
        )
    figure = stats.figure_4_2(rows, workdir)
    notes = _comparison_notes(
        config, outcome.trained_networks, outcome.train_seconds, outcome.minimize_seconds
    )
    compared = stats.comparison(timed, workdir, notes)
    results = _results(outcome, len(failed), figure, compared, context.start)
    text = "\n".join(
        [
            "\n" + stats.format_table(figure["summary"]),
            "\n" + figure["findings"],
            "\n" + compared["markdown"],
            f"\nworkdir: {workdir} ({time.perf_counter() - context.start:.1f}s)",
        ]
    )
    return Report(results, text)


def _results(outcome: Outcome, failed: int, figure: dict, compared: dict, start: float) -> dict:
    """`results.json`'s record of the sweep."""
    job = outcome.job
    return {
        "config": job.config.to_dict(),
        "device": jax.devices()[0].device_kind,
        "reproducibility": job.reproducibility,
        "data": job.dataset.info,
        "design": job.config.sweep.design,
        "trained_networks": outcome.trained_networks,
        "devices": job.devices,
        "batch": {
            "method": job.engine.method,
            "group_size": job.engine.group_size,
            "grad": job.engine.grad,
            "steps": job.steps,
        },
        "seconds": {
            "train": outcome.train_seconds,
            "minimize": outcome.minimize_seconds,
            "total": time.perf_counter() - start,
        },
        "failed_runs": failed,
        "runs": outcome.rows,
        "round_logs": outcome.round_logs,
        "figure_4_2": {k: v for k, v in figure.items() if k != "summary"},
        "comparison": {k: v for k, v in compared.items() if k not in ("paths", "markdown")},
    }


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


EXPERIMENT = Experiment(
    name="sweep",
    section="sweep",
    headline=_headline,
    run=_run,
    report=_write,
    check=check,
)
