"""Why can a mask be removed? The thesis's Table 4.1 and Figure 4.1 (sections 4.1, 4.2).

The experiment of a config with a `correlation` section (`EXPERIMENT`, run by
`jaxshrink.experiments.runner`):

1. trains R networks (seeds `seed`, `seed+1`, ...; all at once) for
   `train.initial_steps` steps (thesis: 100 repetitions of 10000 steps);
2. for every repetition, disables each hidden mask in turn -- and once none, the
   reference -- resets Adam, and trains every variant `correlation.second_steps` more
   steps (thesis: 10000), evaluating every `correlation.eval_every` steps. All
   R x (masks + 1) variants are one batch of runs, trained by one compiled program;
3. records per (repetition, mask): the cosine-similarity statistics of the mask to
   the other masks of its layer at the moment of disabling (min, max, std, mean,
   median of the signed and of the absolute similarities), and the scores.

Scores, all relative to the same repetition's reference run (no mask disabled):

* ``drop``: eval F1 right after disabling, before any retraining, over the reference
  at that moment (the trained network's score); Figure 4.1's x axis;
* ``loss``: eval F1 at the end of the second phase over the reference's at the end
  (the thesis's "relative score ... compared to the case where we did not disable");
* ``best``: the best eval F1 reached during the second phase over the reference's
  best (the thesis's "greatest score ... in the second 10000 training steps");
  Figure 4.1's y axis ("gain").

Table 4.1 correlates each statistic with ``loss``, ``best`` and ``drop`` (Pearson,
Kendall, Spearman from `scipy.stats`) on two samples, because the thesis's text
admits two readings of what is correlated:

* *per repetition* (the thesis's words: "After all the experiments, we will have 100
  scalars to compute correlations with", one per repetition): in each repetition,
  the column's strategy -- CosMax with that aggregation, signed or absolute -- would
  select one mask: the argmax of the column over the candidate masks of both layers,
  ties to the lowest candidate index (`strategies.select`, the first pick of the
  ``cosine`` strategy with that `minimize.aggregation` and `minimize.absolute`). The
  repetition's scalar is the column's value for that mask, its targets that mask's
  loss, best and drop; R pairs per column, and each column may select other masks;
* *pooled*: every (repetition, mask) pair, R x masks points per column. It mixes
  the layers, whose masks are vectors of different lengths (26 and 126 weights in
  the thesis network), so their similarities are not on one scale: random
  directions in more dimensions are closer to orthogonal.

Columns ``cos:<how>`` aggregate the signed similarities, ``|cos|:<how>`` their
absolute values (the thesis's absolute-value brackets); every cell is a signed
correlation coefficient. The rows "1. max" ... "6. max" are read as: the n-th
largest of the column's six loss and best coefficients (``drop``, which the thesis's
table does not have, is left out of them). This reading reproduces every "n. max"
row of the thesis's table from its six rows above (e.g. cos:min: -0.32, -0.20,
-0.27, -0.05, -0.04, -0.06 sorted gives -0.04, -0.05, -0.06, -0.20, -0.27, -0.32).

Outputs in `workdir`: `correlation.csv` (one row per repetition and mask),
`table_4_1.csv` and `table_4_1.md` (both tables, labelled by their ``sample``),
`table_4_1_selected.csv` (the mask each column selected in each repetition),
`figure_4_1.png` and `results.json`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from jaxshrink.config import schema, validate
from jaxshrink.core import files, optim
from jaxshrink.core import masks as masks_lib
from jaxshrink.experiments.registry import Context, Experiment, Report
from jaxshrink.runtime import stages
from jaxshrink.runtime.job import Job
from jaxshrink.search import batching, minimize, strategies

AGGREGATIONS = ("min", "max", "std", "mean", "median")  # Table 4.1's column order
COEFFICIENTS = {
    "prs": lambda x, y: stats.pearsonr(x, y)[0],
    "knd": lambda x, y: stats.kendalltau(x, y)[0],
    "spr": lambda x, y: stats.spearmanr(x, y)[0],
}
TARGETS = ("loss", "best", "drop")  # Table 4.1's row groups; drop is not the thesis's
NTH_MAX_TARGETS = ("loss", "best")  # the six rows the thesis's "n. max" rows rank
# The two samples a table can be computed on (see the module doc), as labelled in
# the outputs: the thesis's words first, then the package's earlier reading.
SAMPLES = {
    "per_repetition": "one scalar per repetition: the mask the column's strategy selects",
    "pooled": "every (repetition, mask) pair pooled",
}
SIGNEDNESS_NOTE = (
    "Columns `cos:<aggregation>` aggregate the signed cosine similarities of a mask to "
    "the other masks of its layer; `|cos|:<aggregation>` aggregate their absolute "
    "values. Every cell is a signed correlation coefficient."
)


def add_section(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the thesis's mask-correlation experiment (4.1) to a run config, in place."""
    c.correlation = ml_collections.ConfigDict()
    c.correlation.repetitions = 100  # [4.1]; seeds are seed, seed+1, ...
    c.correlation.second_steps = 10000  # steps after disabling a mask [4.1]
    # Eval-split F1 every this many steps of the second phase, for "best" (the
    # thesis evaluates periodically without saying how often).
    c.correlation.eval_every = 1000
    return c


def default_config(dataset: str = "canny") -> ml_collections.ConfigDict:
    """The thesis's mask-correlation experiment (4.1, 4.2): Table 4.1 and Figure 4.1."""
    c = schema.base_config(dataset)
    c.minimize.enabled = False
    return add_section(c)


def make_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks the correlation experiment in place to about a minute on a 2-core CPU."""
    c.data.crop_size = 32
    c.data.train_size = 300
    c.data.eval_size = 32
    c.train.initial_steps = 400
    c.train.log_every = 200
    c.train.eval_every = 400
    c.correlation.repetitions = 4
    c.correlation.second_steps = 200
    c.correlation.eval_every = 50
    return c


def make_medium(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A CPU-sized run that still gives correlations worth reading (9 minutes, 2 cores)."""
    make_quick(c)
    c.train.initial_steps = 1000
    c.train.eval_every = 1000
    c.correlation.repetitions = 12
    c.correlation.second_steps = 400
    c.correlation.eval_every = 100
    return c


PRESETS = {"quick": make_quick, "medium": make_medium}


def get_preset(dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`default_config(dataset)` with the presets named by `arg` (or None)."""
    return schema.apply_presets(default_config(dataset), PRESETS, arg)


def check(c: ml_collections.ConfigDict) -> None:
    """The `correlation` section's fields."""
    for field in ("correlation.repetitions", "correlation.second_steps"):
        validate.check_int(c, field)
    validate.check_int(c, "correlation.eval_every")


def stat_columns() -> list[str]:
    """Table 4.1's columns: cos:<how> (signed) and |cos|:<how>, alternating."""
    return [c for how in AGGREGATIONS for c in (f"cos:{how}", f"|cos|:{how}")]


def cosine_features(model_spec, params: dict, masks: dict) -> dict[str, jax.Array]:
    """Every column of `stat_columns()` for every candidate mask, as (candidates,) arrays."""
    out = {}
    for how in AGGREGATIONS:
        for absolute, name in ((False, f"cos:{how}"), (True, f"|cos|:{how}")):
            per_layer = strategies.cosine_stats(model_spec, params, masks, how, absolute)
            out[name] = masks_lib.flatten(model_spec, per_layer)
    return out


def _coefficient(name: str, x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")  # undefined for constant or tiny samples
    return float(COEFFICIENTS[name](x, y))


def _table(samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Coefficient rows, then "n. max" rows, from each column's own sample of rows."""
    columns = stat_columns()
    table = []
    for target in TARGETS:
        for coef in COEFFICIENTS:
            entry = {"row": f"{target}({coef})"}
            for col in columns:
                x = [r[col] for r in samples[col]]
                entry[col] = _coefficient(coef, x, [r[target] for r in samples[col]])
            table.append(entry)
    ranked = [t for t in table if t["row"].split("(")[0] in NTH_MAX_TARGETS]
    return table + nth_max_rows(ranked, columns)


def table_4_1(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 4.1 on the pooled sample: every (repetition, mask) row is one point.

    `rows` hold `stat_columns()`, loss, best and drop. Returns one dict per table
    row: ``{"row": "loss(prs)", "cos:min": ..., ...}`` for loss, best and drop, then
    the six "n. max" rows (see the module doc for that reading).
    """
    return _table(dict.fromkeys(stat_columns(), rows))


def select_per_repetition(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping]]:
    """Per column, the row of the mask its strategy selects in each repetition.

    The selection is the argmax of the column over the repetition's rows, ties to
    the first row: `strategies.select` on rows in candidate order (as
    the experiment writes them). Repetitions come out in order of first
    appearance; a repetition whose column has no finite value is left out.
    """
    by_rep: dict[Any, list[Mapping]] = {}
    for r in rows:
        by_rep.setdefault(r["repetition"], []).append(r)
    out = {}
    for col in stat_columns():
        chosen = []
        for mine in by_rep.values():
            values = np.asarray([float(r[col]) for r in mine])
            finite = np.isfinite(values)
            if finite.any():
                chosen.append(mine[int(np.argmax(np.where(finite, values, -np.inf)))])
        out[col] = chosen
    return out


def table_4_1_per_repetition(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 4.1 on the thesis's sample: one point per repetition and column.

    Each column correlates, over the repetitions, its value for the mask it selects
    (`select_per_repetition`) with that mask's loss, best and drop. Same row layout
    as `table_4_1`.
    """
    return _table(select_per_repetition(rows))


def selected_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per (column, repetition): the selected mask, its value and scores."""
    return [
        {
            "column": col,
            "repetition": r["repetition"],
            "candidate": r["candidate"],
            "value": r[col],
            **{t: r[t] for t in TARGETS},
        }
        for col, chosen in select_per_repetition(rows).items()
        for r in chosen
    ]


def nth_max_rows(coefficients: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[dict]:
    """The "n. max" rows: per column, the n-th largest of the coefficient rows above."""
    out = []
    for n in range(len(coefficients)):
        entry = {"row": f"{n + 1}. max"}
        for col in columns:
            values = sorted((t[col] for t in coefficients if np.isfinite(t[col])), reverse=True)
            entry[col] = values[n] if n < len(values) else float("nan")
        out.append(entry)
    return out


def format_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """Table 4.1 as a markdown table (two decimals, like the thesis)."""
    columns = stat_columns()
    header = [c.replace("|", "\\|") for c in columns]  # |cos| must not split cells
    lines = ["| | " + " | ".join(header) + " |", "|---" * (len(columns) + 1) + "|"]
    for entry in table:
        cells = " | ".join(f"{entry[c]:.2f}" for c in columns)
        lines.append(f"| {entry['row']} | {cells} |")
    return "\n".join(lines) + "\n"


def format_report(tables: Mapping[str, Sequence[Mapping[str, Any]]], sizes: Mapping) -> str:
    """Both Table 4.1 readings as one markdown document, each table under its label.

    `tables` and `sizes` (points per column) are keyed by `SAMPLES`' names.
    """
    parts = [f"{SIGNEDNESS_NOTE}\n"]
    for name, table in tables.items():
        parts.append(f"### Table 4.1, {name}: {SAMPLES[name]} ({sizes[name]} points per column)\n")
        parts.append(format_markdown(table))
    return "\n".join(parts)


def plot_figure_4_1(rows: Sequence[Mapping[str, Any]], path: str) -> str:
    """Figure 4.1: drop (x) against best (y), in %, for all layers and per layer.

    Left column: every (repetition, mask); right column: only each repetition's
    optimal choice, the mask whose variant scored highest at the end.
    """
    layers = sorted({r["layer"] for r in rows})
    panels = [("All layers combined", layers)] + [
        (f"Layer {i + 1} ({name})", [name]) for i, name in enumerate(layers)
    ]
    optimal = set()
    for rep in {r["repetition"] for r in rows}:
        mine = [r for r in rows if r["repetition"] == rep]
        optimal.add((rep, max(mine, key=lambda r: r["loss"])["candidate"]))
    fig = Figure(figsize=(9, 3.2 * len(panels)))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for i, (title, names) in enumerate(panels):
        for j, only_optimal in enumerate((False, True)):
            ax = axes[i][j]
            sel = [
                r
                for r in rows
                if r["layer"] in names
                and (not only_optimal or (r["repetition"], r["candidate"]) in optimal)
            ]
            ax.scatter(
                [100 * r["drop"] for r in sel], [100 * r["best"] for r in sel], s=12, alpha=0.6
            )
            ax.set_title(title + (": optimal choice" if only_optimal else ""), fontsize=9)
            ax.set_xlabel("drop: relative score after disabling (%)")
            ax.set_ylabel("gain: best relative score (%)")
            ax.axhline(100, color="grey", lw=0.5)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What every process computed: one row per (repetition, mask)."""

    job: Job
    rows: list[dict]


def _headline(config: ml_collections.ConfigDict, workdir: str) -> str:
    reps = int(config.correlation.repetitions)
    return f"jaxshrink mask correlations ({config.task}): {reps} repetitions; workdir {workdir}"


def _run(config: ml_collections.ConfigDict, workdir: str, context: Context) -> Outcome:
    """Trains the networks, then every variant of each, as batches (every process)."""
    log = context.log
    ccfg = config.correlation
    reps = int(ccfg.repetitions)
    second, every = int(ccfg.second_steps), int(ccfg.eval_every)
    seeds = [int(config.seed) + i for i in range(reps)]
    job = Job(config, workdir, log)
    log(job.describe())
    trained = stages.train_stage(job, seeds)

    model_spec = job.model.spec
    layout = masks_lib.candidate_layout(model_spec)
    names = [f"{layer}/{u}" for layer, units in layout for u in range(units)]
    m = len(names)
    # Variant v of a repetition: v < m disables candidate v; v == m is the reference.
    rep_index = np.repeat(np.arange(reps), m + 1)
    onehot = np.tile(np.concatenate([np.eye(m, dtype=bool), np.zeros((1, m), bool)]), (reps, 1))
    features = jax.vmap(lambda p, m: cosine_features(model_spec, p, m))(
        trained.params, trained.masks
    )

    def alter(run, flat):
        hot = masks_lib.unflatten(model_spec, flat, fill=False)
        run = minimize.alter(model_spec, run, hot, config.minimize.mode)
        return run.replace(opt_state=optim.reset(job.trainer.tx, run.params))

    states = jax.vmap(alter)(batching.take(trained, rep_index), jnp.asarray(onehot))
    n = batching.num_runs(states)
    log(f"correlation: {n} variants ({reps} x ({m} masks + reference)), {second} steps each")
    _, scores = stages.train_variants(job, states, second, every, "correlation")
    traj = scores.reshape(reps, m + 1, -1)  # (rep, variant, eval)
    return Outcome(job, _rows(traj, features, seeds, names))


def _rows(traj: np.ndarray, features: dict, seeds: list[int], names: list[str]) -> list[dict]:
    """`correlation.csv`'s rows from the (repetition, variant, eval) scores `traj`."""
    m = len(names)
    ref = traj[:, m]
    rows = []
    for r in range(len(seeds)):
        for v in range(m):
            row = {
                "repetition": r,
                "seed": seeds[r],
                "candidate": names[v],
                "layer": names[v].split("/")[0],
                "drop": float(traj[r, v, 0] / ref[r, 0]),
                "loss": float(traj[r, v, -1] / ref[r, -1]),
                "best": float(traj[r, v].max() / ref[r].max()),
                "final": float(traj[r, v, -1]),
                "reference_final": float(ref[r, -1]),
            }
            for col in stat_columns():
                row[col] = float(features[col][r, v])
            rows.append(row)
    return rows


def _write(outcome: Outcome, workdir: str, context: Context) -> Report:
    """Both readings of Table 4.1, its CSVs and Figure 4.1, on process 0."""
    job, rows = outcome.job, outcome.rows
    reps = int(job.config.correlation.repetitions)
    tables = {"per_repetition": table_4_1_per_repetition(rows), "pooled": table_4_1(rows)}
    sizes = {"per_repetition": reps, "pooled": len(rows)}
    files.write_csv(os.path.join(workdir, "correlation.csv"), rows)
    files.write_csv(
        os.path.join(workdir, "table_4_1.csv"),
        [{"sample": name, **entry} for name, table in tables.items() for entry in table],
    )
    files.write_csv(os.path.join(workdir, "table_4_1_selected.csv"), selected_rows(rows))
    markdown = format_report(tables, sizes)
    files.write_text(os.path.join(workdir, "table_4_1.md"), markdown)
    plot_figure_4_1(rows, os.path.join(workdir, "figure_4_1.png"))
    results = {
        "config": job.config.to_dict(),
        "device": jax.devices()[0].device_kind,
        "reproducibility": job.reproducibility,
        "data": job.dataset.info,
        "seconds": time.perf_counter() - context.start,
        "samples": {name: {"points": sizes[name], "meaning": SAMPLES[name]} for name in SAMPLES},
        "pooled_pairs": len(rows),
        "table_4_1": tables,
        "selected": selected_rows(rows),
        "rows": rows,
    }
    text = (
        "\nTable 4.1 (correlations with loss, best and drop), both readings\n\n"
        f"{markdown}\n"
        f"workdir: {workdir} ({time.perf_counter() - context.start:.1f}s)"
    )
    return Report(results, text)


EXPERIMENT = Experiment(
    name="correlation",
    section="correlation",
    headline=_headline,
    run=_run,
    report=_write,
    check=check,
)
