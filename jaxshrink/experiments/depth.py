"""Depth and width found by the search, from above and from below (`configs/depth.py`).

The experiment of a config with a `depth` section (`EXPERIMENT`, run by
`jaxshrink.experiments.runner`) runs, for every edge target of `depth.targets`, every
(seed, variant) pair as one batch of runs in one deep envelope (`model.bypass=True`):

* ``thesis``: the thesis's fixed 3-layer network inside the envelope
  (`depth.thesis_widths`: the other hidden layers bypassed from the start), minimized
  in width only, as the thesis did;
* ``depth``: the whole envelope, minimized in depth (`depth.rule`, see `minimize`)
  and then in width;
* ``grow``: started with `depth.grow_widths` units alive, grown one unit per round
  while a unit raises the score by `minimize.grow_margin`, then minimized as
  ``depth``.

Each run trains its own network from its seed (the variants start from different
masks); the three variants of a seed draw the same training batches. Run (seed s,
variant v) is the single run of `python -m jaxshrink.main` with the same model,
`seed=s`, `train.start_widths`, `minimize.depth` and `minimize.grow` of the variant.

Outputs in `workdir`: a folder per target (its checkpoints: an interrupted experiment
resumes), `depth.csv` (one row per run), `depth.md` (the summary per target and
variant, and the final layers and widths per seed) and `results.json`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

import jax
import ml_collections
import numpy as np

from jaxshrink.config import schema, validate
from jaxshrink.core import files
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.experiments.registry import Context, Experiment, Report
from jaxshrink.runtime import determinism, stages
from jaxshrink.runtime.job import Job
from jaxshrink.search import batching, minimize, strategies
from jaxshrink.search.plan import Plan

# The edge targets, and the variants every seed runs in one deep envelope: 'thesis'
# (the thesis's fixed 3-layer network inside it, widths only), 'depth' (the whole
# envelope minimized in depth and width) and 'grow' (started small, grown, then
# minimized in depth and width).
TARGETS = ("sobel", "canny")
VARIANTS = ("thesis", "depth", "grow")


def default_config() -> ml_collections.ConfigDict:
    """Depth and width found by the search: a 6-layer envelope of 5 filters."""
    c = schema.base_config("sobel")
    c.model.num_layers = 6  # twice the thesis's depth [2.3]
    c.model.bypass = True
    # Flax's LeCun normal, not the thesis's truncated normal of std 0.05 [2.3], which
    # was chosen for 3 layers: through 6 it left a third of the quick networks (the
    # 3-layer ones among them) at an eval F1 of 0 or at a constant output after 2000
    # steps; with LeCun normal every one trained (experiments/results/depth/).
    c.model.init_std = 0.0
    c.depth = ml_collections.ConfigDict()
    c.depth.targets = TARGETS  # each trains with its own loss (schema.EDGE_LOSSES)
    c.depth.variants = VARIANTS
    c.depth.num_seeds = 10  # seeds seed, seed+1, ...: every variant runs every seed
    c.depth.rule = "cost"  # how a round picks the layer to bypass (`strategies.LAYER_RULES`)
    # 'thesis': conv_0, one 5-filter hidden layer, the output: the thesis's 3 layers.
    c.depth.thesis_widths = (5, 5, 0, 0, 0, 1)
    # 'grow': every layer computing, 2 of its 5 filters alive.
    c.depth.grow_widths = (2, 2, 2, 2, 2, 1)
    return c


def make_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks the depth experiment in place to minutes on a 2-core CPU."""
    c.data.crop_size = 32
    c.data.train_size = 300
    c.data.eval_size = 32
    # 600 steps (the quick sweep's) left a third of the networks, the 3-layer ones
    # too, at an eval F1 of 0 or at a constant output; the deep envelope trains slower.
    c.train.initial_steps = 2000
    c.train.log_every = 500
    c.train.eval_every = 1000
    c.minimize.round_steps = 200
    c.depth.num_seeds = 3
    return c


PRESETS = {"quick": make_quick}


def get_preset(arg: str | None = None) -> ml_collections.ConfigDict:
    """`default_config()` with the presets named by `arg` ('quick', or None)."""
    return schema.apply_presets(default_config(), PRESETS, arg)


def check(c: ml_collections.ConfigDict) -> None:
    """The `depth` section's fields, its widths against the envelope, and every target's
    config (`target_config`)."""
    d = c.depth
    validate.check_int(c, "depth.num_seeds")
    validate.check_one_of(d.rule, "depth.rule", strategies.LAYER_RULES[1:])
    for field, allowed in (("targets", TARGETS), ("variants", VARIANTS)):
        values = tuple(d[field])
        ok = 0 < len(values) == len(set(values)) and set(values) <= set(allowed)
        allowed_text = f"a non-empty list from {allowed} without repeats"
        validate.check_field(ok, f"depth.{field}", values, allowed_text)
    for field in ("thesis_widths", "grow_widths"):
        widths = tuple(d[field])
        validate.check_field(len(widths) > 0, f"depth.{field}", widths, "widths per layer")
    model_spec = validate.model_of(c).spec
    for field in ("thesis_widths", "grow_widths"):
        validate.check_widths(f"depth.{field}", tuple(d[field]), model_spec)
    validate.check_layer_rule("depth.rule", d.rule, model_spec)
    for target in d.targets:
        validate.validate(target_config(c, target))


def target_config(config: ml_collections.ConfigDict, target: str) -> ml_collections.ConfigDict:
    """`config` for one edge target, with that target's loss (`schema.EDGE_LOSSES`)."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.dataset = target
    c.train.loss = schema.EDGE_LOSSES[target]
    return c


def runs(config: ml_collections.ConfigDict) -> list[tuple[int, str]]:
    """(seed, variant) of every run of one target: seed, then variant."""
    seeds = [int(config.seed) + i for i in range(int(config.depth.num_seeds))]
    return list(itertools.product(seeds, list(config.depth.variants)))


def start_widths(config: ml_collections.ConfigDict, variant: str) -> tuple[int, ...]:
    """The widths a variant starts from (() = the whole envelope)."""
    return {
        "thesis": tuple(config.depth.thesis_widths),
        "depth": (),
        "grow": tuple(config.depth.grow_widths),
    }[variant]


def run_spec(config: ml_collections.ConfigDict, variant: str) -> minimize.RunSpec:
    """The minimization rules of a variant."""
    rule = "off" if variant == "thesis" else config.depth.rule
    return minimize.run_spec(config.minimize, depth=rule, grow=variant == "grow")


def _widths(model_spec, masks) -> str:
    """'5-3-0-0-2-1': units alive per layer (0: bypassed)."""
    return "-".join(str(w) for w in model_spec.widths(masks).values())


def _target(config, target: str, workdir: str, log) -> tuple[list[dict], str]:
    """The runs of one target: trains, minimizes and returns one row per run, and the
    score's label."""
    c = target_config(config, target)
    # One compiled round serves every variant: the layer rule, and growth if one grows.
    plan = Plan.single(c.minimize)
    plan = plan.replace(
        layer_rules=(*plan.layer_rules, c.depth.rule),
        grows=plan.grows or "grow" in tuple(c.depth.variants),
    )
    job = Job(c, os.path.join(workdir, target), log, plan=plan)
    model_spec = job.model.spec
    todo = runs(c)
    log(
        f"depth: {target}, {len(todo)} runs ({c.depth.num_seeds} seeds x variants "
        f"{list(c.depth.variants)}), envelope {_widths(model_spec, None)}"
    )
    starts = [masks_lib.start_masks(model_spec, start_widths(c, v)) for _, v in todo]
    seeds = [s for s, _ in todo]
    trained = stages.train_stage(job, seeds, masks=batching.stack(starts))
    baselines = job.evaluate(trained)["score"]
    specs = batching.stack([run_spec(c, v) for _, v in todo])
    ms = stages.init_minimize(model_spec, trained, baselines, seeds)
    ms, history = stages.minimize_stage(
        job, ms, specs, f"minimize: {len(todo)} runs, {c.minimize.round_steps} steps per round"
    )
    final = job.evaluate(ms.run)["score"]
    rows = _rows(target, todo, model_spec, (trained, ms.run), (baselines, final), history)
    return rows, job.score_label


def _rows(target: str, todo, model_spec, states, scores, history) -> list[dict]:
    """`depth.csv`'s rows of one target's runs `todo`: `states` = (trained, final) batches,
    `scores` their eval scores."""
    (trained, ends), (baselines, final) = states, scores
    rows = []
    for r, (seed, variant) in enumerate(todo):
        start, kept = batching.take(trained.masks, r), batching.take(ends.masks, r)
        rounds = stages.round_entries(history, r, model_spec)
        kinds = [e.kind for e in rounds if e.accepted]
        baseline = float(baselines[r])
        rows.append(
            {
                "target": target,
                "variant": variant,
                "seed": seed,
                "start_layers": spec_lib.depth(model_spec, start),
                "start_widths": _widths(model_spec, start),
                "layers": spec_lib.depth(model_spec, kept),
                "widths": _widths(model_spec, kept),
                "hidden_units": int(masks_lib.count_alive(kept)) - model_spec.layers[-1].units,
                "trained": baseline,
                "final": float(final[r]),
                "score_ratio": float(final[r]) / baseline if baseline > 0 else float("nan"),
                "flops": spec_lib.count_flops(model_spec, kept),
                "rounds": len(rounds),
                "grown": kinds.count("grow"),
                "bypassed": kinds.count("layer"),
                "removed_units": kinds.count("unit"),
            }
        )
    by_seed = {(r["seed"], r["variant"]): r for r in rows}
    for r in rows:  # the final score against the thesis's network of the same seed
        thesis = by_seed.get((r["seed"], "thesis"))
        ok = thesis is not None and thesis["final"] > 0
        r["vs_thesis"] = r["final"] / thesis["final"] if ok else float("nan")
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per (target, variant): medians over seeds of the final layers, units and scores."""
    out = []
    keys = sorted(
        {(r["target"], r["variant"]) for r in rows},
        key=lambda k: rows.index(next(r for r in rows if (r["target"], r["variant"]) == k)),
    )
    for target, variant in keys:
        mine = [r for r in rows if r["target"] == target and r["variant"] == variant]

        def median(field, mine=mine):
            values = [r[field] for r in mine if np.isfinite(r[field])]
            return float(np.median(values)) if values else float("nan")

        out.append(
            {
                "target": target,
                "variant": variant,
                "runs": len(mine),
                "layers": median("layers"),
                "hidden_units": median("hidden_units"),
                "final": median("final"),
                "score_ratio": median("score_ratio"),
                "vs_thesis": median("vs_thesis"),
                "flops": median("flops"),
                "rounds": median("rounds"),
            }
        )
    return out


def markdown(rows: list[dict], table: list[dict], score: str) -> str:
    """The summary and the per-seed table as Markdown."""
    lines = [
        "## Medians over seeds",
        "",
        f"| target | variant | runs | layers | hidden units | final {score} | final / trained "
        "| final / thesis variant | FLOPs per example | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in table:
        lines.append(
            f"| {s['target']} | {s['variant']} | {s['runs']} | {s['layers']:g} | "
            f"{s['hidden_units']:g} | {s['final']:.4f} | {s['score_ratio']:.3f} | "
            f"{s['vs_thesis']:.3f} | {s['flops']:.0f} | {s['rounds']:g} |"
        )
    lines += [
        "",
        "## Per seed (widths per layer, 0 = bypassed)",
        "",
        f"| target | variant | seed | start | final widths | layers | trained {score} "
        f"| final {score} | ratio | grown | bypassed | units removed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['variant']} | {r['seed']} | {r['start_widths']} | "
            f"{r['widths']} | {r['layers']} | {r['trained']:.4f} | {r['final']:.4f} | "
            f"{r['score_ratio']:.3f} | {r['grown']} | {r['bypassed']} | {r['removed_units']} |"
        )
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What every process computed: one row per run of every target, and the times."""

    config: ml_collections.ConfigDict
    rows: list[dict]
    seconds: dict[str, float]  # per target
    score_label: str


def _headline(config: ml_collections.ConfigDict, workdir: str) -> str:
    return f"jaxshrink depth: targets {list(config.depth.targets)}; workdir {workdir}"


def _run(config: ml_collections.ConfigDict, workdir: str, context: Context) -> Outcome:
    """Every target's runs, one target after the other (every process)."""
    rows, seconds = [], {}
    for target in config.depth.targets:
        t0 = time.perf_counter()
        mine, label = _target(config, target, workdir, context.log)
        rows += mine
        seconds[target] = time.perf_counter() - t0
    return Outcome(config, rows, seconds, label)


def _write(outcome: Outcome, workdir: str, context: Context) -> Report:
    """`depth.csv` and `depth.md`, on process 0."""
    rows = outcome.rows
    table = summary(rows)
    text = markdown(rows, table, outcome.score_label)
    files.write_csv(os.path.join(workdir, "depth.csv"), rows)
    files.write_text(
        os.path.join(workdir, "depth.md"), "# Depth and width found by the search\n\n" + text
    )
    results = {
        "config": outcome.config.to_dict(),
        "device": jax.devices()[0].device_kind,
        "reproducibility": determinism.record(outcome.config.batch),
        "seconds": {**outcome.seconds, "total": time.perf_counter() - context.start},
        "summary": table,
        "runs": rows,
    }
    out = f"\n{text}\nworkdir: {workdir} ({time.perf_counter() - context.start:.1f}s)"
    return Report(results, out)


EXPERIMENT = Experiment(
    name="depth",
    section="depth",
    headline=_headline,
    run=_run,
    report=_write,
    check=check,
)
