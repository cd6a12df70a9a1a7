"""Does a disabled unit relearn its past values? Thesis 2.4.1's observation, measured.

The thesis tried its three ways of testing "the worth of a neuron" and reports only
that "the disabled neuron relearned its past values". The experiment of a config with
a `relearn` section (`EXPERIMENT`, run by `jaxshrink.experiments.runner`) measures it:

1. trains R networks (seeds `seed`, `seed+1`, ...; all at once) for
   `train.initial_steps` steps;
2. for every repetition, every hidden unit (candidate), every mode of
   `relearn.modes` (`minimize.MODES`) and every kind of values of `relearn.fills`
   (``zero``: the thesis's "giving them zero values"; ``reinit``: re-drawn from the
   initial distribution, the same draw for every mode of a (repetition, unit)),
   disables the unit (`minimize.alter`), resets Adam and trains
   `minimize.round_steps` steps (one round). One undisturbed reference per repetition
   trains the same steps. All variants are one batch of runs;
3. records per variant what the unit owns (kernel slice and bias, and a batch norm's
   scale and bias; `spec.unit_vectors`) before disabling, at the start of the round
   and at its end, and the scores.

Per variant:

* ``cos_start`` / ``cos_end``: cosine similarity of the unit's weights before
  disabling with its weights at the start / end of the round (NaN when either is all
  zero). Relearning means ``cos_end`` near 1 from a ``cos_start`` near 0;
* ``norm_end``: the norm of the unit's weights at the end over the norm before;
* ``stayed_zero``: the unit ended the round with all-zero weights;
* ``drop``: eval score right after disabling over the score before (no retraining);
* ``ratio``: eval score after the round over the score before, what a minimization
  round compares with its threshold;
* ``ratio_reference``: eval score after the round over the reference's.

Outputs in `workdir`: `relearn.csv` (one row per variant), `relearn_table.csv` and
`relearn_table.md` (means per mode and values), `relearn.png` and `results.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from jaxshrink.config import schema, validate
from jaxshrink.core import files, optim
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.experiments.registry import Context, Experiment, Report
from jaxshrink.runtime import stages
from jaxshrink.runtime.job import Job
from jaxshrink.search import batching, minimize

VALUES = ("zero", "reinit")
COLUMNS = ("cos_start", "cos_end", "norm_end", "stayed_zero", "drop", "ratio", "ratio_reference")


def add_section(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the relearning experiment (thesis 2.4.1's three modes) to a run config."""
    c.relearn = ml_collections.ConfigDict()
    c.relearn.repetitions = 10  # trained networks (seeds seed, seed+1, ...)
    c.relearn.modes = ("disabled", "disabled_others_frozen", "disabled_frozen")  # [2.4.1]
    c.relearn.fills = ("zero", "reinit")  # [2.4: zero values, or reinitialized]
    return c


def default_config(dataset: str = "canny") -> ml_collections.ConfigDict:
    """Does a disabled unit relearn? Thesis 2.4.1's three modes measured."""
    c = schema.base_config(dataset)
    c.minimize.enabled = False
    return add_section(c)


def make_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks the relearning experiment in place to a few minutes on a 2-core CPU."""
    c.data.crop_size = 32
    c.data.train_size = 300
    c.data.eval_size = 32
    c.train.initial_steps = 600
    c.train.log_every = 100
    c.train.eval_every = 600
    c.minimize.round_steps = 200
    c.relearn.repetitions = 2
    return c


PRESETS = {"quick": make_quick}


def get_preset(dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`default_config(dataset)` with the presets named by `arg` ('quick', or None)."""
    return schema.apply_presets(default_config(dataset), PRESETS, arg)


def check(c: ml_collections.ConfigDict) -> None:
    """The `relearn` section's fields."""
    validate.check_int(c, "relearn.repetitions")
    r = c.relearn
    validate.check_field(len(r.modes) > 0, "relearn.modes", r.modes, str(minimize.MODES))
    for mode in r.modes:
        validate.check_one_of(mode, "relearn.modes", minimize.MODES)
    validate.check_field(len(r.fills) > 0, "relearn.fills", r.fills, str(VALUES))
    for how in r.fills:
        validate.check_one_of(how, "relearn.fills", VALUES)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity; NaN where either row is all zero."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(a * b, axis=-1) / (na * nb)
    return np.where((na > 0) & (nb > 0), out, np.nan)


def unit_rows(model_spec, params, index: np.ndarray) -> np.ndarray:
    """(runs, features): for run i, the weights of candidate `index[i]`, zero-padded.

    `params` has a leading run axis. Candidates of different layers own vectors of
    different lengths; padding with zeros changes no norm and no dot product.
    """
    full = spec_lib.full(model_spec)
    per_layer = {
        layer.name: np.asarray(
            jax.vmap(lambda p, n=layer.name: spec_lib.unit_vectors(model_spec, p, full, n))(params)
        )
        for layer in model_spec.candidates
    }
    width = max(v.shape[-1] for v in per_layer.values())
    offsets, start = {}, 0
    for name, units in masks_lib.candidate_layout(model_spec):
        offsets[name] = (start, units)
        start += units
    out = np.zeros((len(index), width), np.float64)
    for i, flat in enumerate(index):
        for name, (first, units) in offsets.items():
            if first <= flat < first + units:
                row = per_layer[name][i, flat - first]
                out[i, : row.size] = row
    return out


def plan(config: ml_collections.ConfigDict, num_candidates: int) -> list[dict]:
    """Every variant, in batch order: per mode and values, all (repetition, unit);
    then one reference per repetition (mode and values "none", candidate -1)."""
    rcfg = config.relearn
    reps = int(rcfg.repetitions)
    variants = [
        {"repetition": r, "candidate": u, "mode": mode, "values": how}
        for mode, how in itertools.product(rcfg.modes, rcfg.fills)
        for r in range(reps)
        for u in range(num_candidates)
    ]
    return variants + [
        {"repetition": r, "candidate": -1, "mode": "none", "values": "none"} for r in range(reps)
    ]


def start_states(job: Job, trained, seeds, variants: list[dict]):
    """The batch of altered runs (Adam reset) in `variants` order, built by one program."""
    model, model_spec, tx = job.model, job.model.spec, job.trainer.tx
    m = masks_lib.num_candidates(model_spec)
    groups = [
        (key, len(list(members)))
        for key, members in itertools.groupby(variants, lambda v: (v["mode"], v["values"]))
    ]

    @jax.jit
    def build(runs, seed, candidate):
        # The same re-drawn values for every mode of a (repetition, unit).
        keys = jax.vmap(
            lambda s, c: jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), 7), c)
        )(seed, candidate)
        fresh = jax.vmap(model.init_variables)(keys)
        onehot = jax.vmap(
            lambda c: masks_lib.unflatten(model_spec, jax.nn.one_hot(c, m, dtype=bool), False)
        )(candidate)  # all False for the references' candidate -1
        parts, first = [], 0
        for (mode, how), size in groups:
            part = slice(first, first + size)
            first += size
            run, hot, (params, state) = batching.take((runs, onehot, fresh), part)
            if mode != "none":
                if how == "zero":
                    params, state = jax.tree.map(jnp.zeros_like, params), None
                alter = functools.partial(minimize.alter, model_spec, mode=mode)
                run = jax.vmap(alter)(run, hot, values=(params, state))
            parts.append(run)
        runs = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
        return runs.replace(opt_state=jax.vmap(lambda p: optim.reset(tx, p))(runs.params))

    reps = np.asarray([v["repetition"] for v in variants])
    return build(
        batching.take(trained, reps),
        jnp.asarray([seeds[r] for r in reps], jnp.uint32),
        jnp.asarray([v["candidate"] for v in variants], jnp.int32),
    )


def summarize(rows: list[dict]) -> list[dict]:
    """Means (NaN-aware) of `COLUMNS` per (mode, values), in first-seen order."""
    table = []
    keys = list(dict.fromkeys((r["mode"], r["values"]) for r in rows))
    for mode, how in keys:
        mine = [r for r in rows if (r["mode"], r["values"]) == (mode, how)]
        entry = {"mode": mode, "values": how, "variants": len(mine)}
        for col in COLUMNS:
            values = np.asarray([float(r[col]) for r in mine])
            finite = values[np.isfinite(values)]
            entry[col] = float(finite.mean()) if finite.size else float("nan")
        table.append(entry)
    return table


def format_markdown(table: list[dict]) -> str:
    lines = [
        "| mode | values | variants | " + " | ".join(COLUMNS) + " |",
        "|---|---|---" + "|---" * len(COLUMNS) + "|",
    ]
    for e in table:
        cells = " | ".join(f"{e[c]:.3f}" for c in COLUMNS)
        lines.append(f"| {e['mode']} | {e['values']} | {e['variants']} | {cells} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> str:
    """cos_end (weights after the round against before) and the score ratio per
    (mode, values), one dot per (repetition, unit); open dots: cos_start."""
    keys = list(dict.fromkeys((r["mode"], r["values"]) for r in rows))
    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2)
    rng = np.random.default_rng(0)
    for i, key in enumerate(keys):
        mine = [r for r in rows if (r["mode"], r["values"]) == key]
        jitter = i + rng.uniform(-0.15, 0.15, len(mine))
        end = np.asarray([r["cos_end"] for r in mine], float)
        start = np.asarray([r["cos_start"] for r in mine], float)
        zero = ~np.isfinite(end)
        axes[0].scatter(jitter[~zero], end[~zero], s=10, color=f"C{i}")
        axes[0].scatter(jitter, start, s=10, facecolors="none", edgecolors="grey", lw=0.5)
        if zero.any():
            axes[0].text(i, -1.1, f"{zero.sum()} zero", ha="center", fontsize=7)
        axes[1].scatter(jitter, [r["ratio"] for r in mine], s=10, color=f"C{i}")
    labels = [f"{m}\n{v}" for m, v in keys]
    for ax, title in zip(axes, ("cos(before, after the round)", "score after / before")):
        ax.set_xticks(range(len(keys)), labels, fontsize=6, rotation=30)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-1.2, 1.05)
    axes[1].axhline(1.0, color="grey", lw=0.5)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What every process computed: one row per variant, and the scores before."""

    job: Job
    rows: list[dict]
    before: np.ndarray  # eval score of each trained network


def _headline(config: ml_collections.ConfigDict, workdir: str) -> str:
    reps = int(config.relearn.repetitions)
    return f"jaxshrink relearning ({config.task}): {reps} repetitions; workdir {workdir}"


def _run(config: ml_collections.ConfigDict, workdir: str, context: Context) -> Outcome:
    """Trains the networks, then every variant one round, as batches (every process)."""
    log = context.log
    reps = int(config.relearn.repetitions)
    seeds = [int(config.seed) + i for i in range(reps)]
    steps = int(config.minimize.round_steps)
    job = Job(config, workdir, log)
    log(job.describe())
    trained = stages.train_stage(job, seeds)
    before = job.evaluate(trained)["score"]
    m = masks_lib.num_candidates(job.model.spec)
    variants = plan(config, m)
    states = start_states(job, trained, seeds, variants)
    log(
        f"relearn: {len(variants)} variants ({reps} repetitions x {m} units x "
        f"{len(config.relearn.modes)} modes x {len(config.relearn.fills)} values + "
        f"references), {steps} steps each"
    )
    every = max(1, int(config.train.log_every))
    ends, scores = stages.train_variants(job, states, steps, every, "relearn")
    rows = _rows(job.model.spec, variants, seeds, (trained, states, ends), scores, before)
    return Outcome(job, rows, before)


def _rows(model_spec, variants, seeds, states, scores, before) -> list[dict]:
    """`relearn.csv`'s rows: `states` = (trained, start and end of the round) batches."""
    trained, starts, ends = states
    rep = np.asarray([v["repetition"] for v in variants])
    cand = np.asarray([max(v["candidate"], 0) for v in variants])
    before_rows = unit_rows(model_spec, batching.take(trained.params, rep), cand)
    start_rows = unit_rows(model_spec, starts.params, cand)
    end_rows = unit_rows(model_spec, ends.params, cand)
    cos_start, cos_end = cosine(before_rows, start_rows), cosine(before_rows, end_rows)
    norm_before = np.linalg.norm(before_rows, axis=-1)
    norm_end = np.linalg.norm(end_rows, axis=-1)
    reference = {v["repetition"]: i for i, v in enumerate(variants) if v["mode"] == "none"}
    rows = []
    for i, v in enumerate(variants):
        if v["mode"] == "none":
            continue
        r = v["repetition"]
        rows.append(
            {
                "repetition": r,
                "seed": seeds[r],
                "candidate": masks_lib.candidate_name(model_spec, v["candidate"]),
                "mode": v["mode"],
                "values": v["values"],
                "cos_start": float(cos_start[i]),
                "cos_end": float(cos_end[i]),
                "norm_end": float(norm_end[i] / norm_before[i]),
                "stayed_zero": float(norm_end[i] == 0),
                "drop": float(scores[i, 0] / before[r]),
                "ratio": float(scores[i, -1] / before[r]),
                "ratio_reference": float(scores[i, -1] / scores[reference[r], -1]),
            }
        )
    return rows


def _write(outcome: Outcome, workdir: str, context: Context) -> Report:
    """The table of means per mode and values, its CSVs and the picture, on process 0."""
    job, rows = outcome.job, outcome.rows
    steps = int(job.config.minimize.round_steps)
    table = summarize(rows)
    files.write_csv(os.path.join(workdir, "relearn.csv"), rows)
    files.write_csv(os.path.join(workdir, "relearn_table.csv"), table)
    markdown = format_markdown(table)
    files.write_text(os.path.join(workdir, "relearn_table.md"), markdown)
    plot(rows, os.path.join(workdir, "relearn.png"))
    results = {
        "config": job.config.to_dict(),
        "device": jax.devices()[0].device_kind,
        "reproducibility": job.reproducibility,
        "data": job.dataset.info,
        "seconds": time.perf_counter() - context.start,
        "scores_before": outcome.before.tolist(),
        "table": table,
        "rows": rows,
    }
    text = (
        f"\nRelearning after one round of {steps} steps (means per mode and values)\n\n"
        f"{markdown}\n"
        f"workdir: {workdir} ({time.perf_counter() - context.start:.1f}s)"
    )
    return Report(results, text)


EXPERIMENT = Experiment(
    name="relearn",
    section="relearn",
    headline=_headline,
    run=_run,
    report=_write,
    check=check,
)
