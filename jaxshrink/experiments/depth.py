"""Depth and width found by the search, from above and from below (`configs/depth.py`).

`run_depth(config, workdir)` runs, for every edge target of `depth.targets`, every
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

import itertools
import os
import time

import jax
import ml_collections
import numpy as np

from jaxshrink.config import schema as config_lib
from jaxshrink.config import validate
from jaxshrink.core import files
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.runtime import distributed, progress, stages
from jaxshrink.runtime import workdir as workdir_lib
from jaxshrink.runtime.job import Job
from jaxshrink.search import batching, minimize


def target_config(config: ml_collections.ConfigDict, target: str) -> ml_collections.ConfigDict:
    """`config` for one edge target, with that target's loss (`config.EDGE_LOSSES`)."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.dataset = target
    c.train.loss = config_lib.EDGE_LOSSES[target]
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


def run_depth(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the depth experiment of `config` in `workdir` (resuming if it has checkpoints).

    Returns the results dictionary also written to `workdir/results.json`.
    """
    validate.validate(config)
    for target in config.depth.targets:
        validate.validate(target_config(config, target))
    validate.check_workdir(workdir)
    with workdir_lib.claim(workdir, config) as workdir:
        return _run_depth(config, workdir)


def _widths(model_spec, masks) -> str:
    """'5-3-0-0-2-1': units alive per layer (0: bypassed)."""
    return "-".join(str(w) for w in model_spec.widths(masks).values())


def _target(config, target: str, workdir: str, log) -> tuple[list[dict], str]:
    """The runs of one target: trains, minimizes and returns one row per run, and the
    score's label."""
    c = target_config(config, target)
    job = Job(c, os.path.join(workdir, target), log)
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
    rows = []
    for r, (seed, variant) in enumerate(todo):
        start, kept = batching.take(trained.masks, r), batching.take(ms.run.masks, r)
        rounds = stages.round_entries(history, r, model_spec)
        kinds = [e["kind"] for e in rounds if e["accepted"]]
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
    return rows, job.score_label


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


def _run_depth(config: ml_collections.ConfigDict, workdir: str) -> dict:
    log = progress.Logger()
    start = time.perf_counter()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    log(f"jaxshrink depth: targets {list(config.depth.targets)}; workdir {workdir}")
    rows, seconds = [], {}
    for target in config.depth.targets:
        t0 = time.perf_counter()
        mine, label = _target(config, target, workdir, log)
        rows += mine
        seconds[target] = time.perf_counter() - t0
    if not distributed.is_primary():  # process 0 writes the job's files
        return {"runs": rows}
    table = summary(rows)
    text = markdown(rows, table, label)
    files.write_csv(os.path.join(workdir, "depth.csv"), rows)
    files.write_text(
        os.path.join(workdir, "depth.md"), "# Depth and width found by the search\n\n" + text
    )
    results = {
        "config": config.to_dict(),
        "device": jax.devices()[0].device_kind,
        "seconds": {**seconds, "total": time.perf_counter() - start},
        "summary": table,
        "runs": rows,
    }
    files.write_json(os.path.join(workdir, "results.json"), results)
    print("\n" + text, flush=True)
    print(f"workdir: {workdir} ({time.perf_counter() - start:.1f}s)", flush=True)
    return results
