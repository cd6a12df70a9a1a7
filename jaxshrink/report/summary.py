"""What a finished run leaves for a person: `results.json`, pictures and a summary.

`results` assembles the record of one run (config, data, baseline and final scores,
kept units per layer, parameter and FLOP counts before and after, every round);
`summary` is the text printed at the end (the pictures: `run_pictures.draw_run`).
Everything reads the model's spec and the task, so it works for every registered model
and for a researcher's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax

from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.core import tasks
from jaxshrink.core.results import DeployReport, Evaluated, RunResult

ROW_LIMIT = 40  # layers with more units are summarised as "kept k of n"


def _ratio(final: float, trained: float) -> float | None:
    # None when the trained network scores 0 (e.g. targets without any edge).
    return final / trained if trained > 0 else None


def results(
    job,
    trained,
    final,
    trained_scores,
    final_scores,
    rounds,
    exported,
    pictures=(),
    tests=(None, None),
) -> RunResult:
    """The record of one run (see the module docstring); `results.json` holds its
    `to_json()`.

    Args:
      job: the run's `Job`.
      trained, final: the run before and after minimization (no batch axis).
      trained_scores, final_scores: their mean eval metrics, ``score`` among them.
      rounds: the `RoundEntry` of every round that tested a change.
      exported: the compact network's `ExportReport`.
      pictures: the names of the pictures drawn.
      tests: with a validation split, the test set's metrics of the trained and the
        final run; (None, None) without one.
    """
    model_spec = job.model.spec
    full = spec_lib.full(model_spec)
    return RunResult(
        status="ok",
        config=job.config.to_dict(),
        workdir=job.workdir,
        device=jax.devices()[0].device_kind,
        reproducibility=job.reproducibility,
        trained=Evaluated(int(trained.step), trained_scores, tests[0]),
        data=job.dataset.info,
        score_name=job.task.score_label,
        final=Evaluated(int(final.step), final_scores, tests[1]),
        reference_ratio=_ratio(final_scores["score"], trained_scores["score"]),
        layers=tuple(model_spec.names),
        kept=tuple(tuple(map(bool, row)) for row in masks_lib.to_rows(model_spec, final.masks)),
        removed_units=int(masks_lib.count_alive(full) - masks_lib.count_alive(final.masks)),
        flops_unit=f"forward FLOPs per example of shape {list(model_spec.input_shape)}",
        rounds=tuple(rounds),
        export=exported,
        curve=_curve(job.curve),
        pictures=tuple(pictures),
    )


def _curve(curve: dict | None) -> dict | None:
    """The initial training's curve of the run (runs were batched: one value each)."""
    out = curve and {
        "step": curve["step"],
        "loss": [v[0] for v in curve["loss"]],
        "eval_step": curve["eval_step"],
        "eval_score": [v[0] for v in curve["eval_score"]],
    }
    if out and curve.get("train_score"):  # a classifier's training accuracy
        out["train_score"] = [v[0] for v in curve["train_score"]]
    return out


def _ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1%}"


def _kept_line(name: str, row: Sequence[bool]) -> str:
    if len(row) > ROW_LIMIT:
        return f"    {name}: kept {sum(row)} of {len(row)}"
    return f"    {name}: " + " ".join("#" if k else "." for k in row)


def _metric_line(metric: tasks.SummaryMetric, trained: Evaluated, final: Evaluated) -> str:
    """A metric the task reports beside its score, trained -> minimized ('' if absent)."""
    if metric.key not in final.metrics:
        return ""
    before, after = trained.metrics[metric.key], final.metrics[metric.key]
    return f"  {metric.label} {before:{metric.format}} -> {after:{metric.format}}\n"


def summary(result: RunResult | Mapping, task: tasks.Task | None = None) -> str:
    """The text printed at the end of a run.

    Args:
      result: the run's record, or a `results.json` as read (`RunResult.from_json`).
      task: the run's task, whose `summary` metrics are printed beside the score
        (default: the registered task the config names).
    """
    r = result if isinstance(result, RunResult) else RunResult.from_json(result)
    task = task or tasks.TASKS.get(r.config["task"])
    t, f, e, label = r.trained, r.final, r.export, r.score_name
    kept = "\n".join(_kept_line(n, row) for n, row in zip(r.layers, r.kept))
    extra = "".join(_metric_line(m, t, f) for m in (task.summary if task else ()))
    m = r.config["minimize"]
    split = r.data.get("eval_split", "eval")  # 'validation' with a validation split
    return (
        f"\n== jaxshrink {r.config['task']} ({r.config['data']['dataset']}) ==\n"
        f"  data: {r.data['description']}\n"
        f"  trained {t.steps} steps: {split} {label} {t.score:.4g}\n"
        f"  minimized ({m['strategy']}, threshold {m['threshold']}): "
        f"{len(r.rounds)} rounds, {r.accepted} kept, {label} {f.score:.4g} "
        f"({_ratio_text(r.reference_ratio)} of trained)\n"
        f"{extra}"
        f"{_test_text(r, label)}"
        f"  units removed: {r.removed_units}; kept (# = kept):\n{kept}\n"
        f"  units per layer {list(e.full_widths)} -> {list(e.widths)}\n"
        f"  parameters {e.full_params:,} -> {e.params:,}, "
        f"FLOPs/example {e.full_flops:,} -> {e.flops:,}\n"
        f"  inference {e.full_inference_seconds * 1e3:.2f} ms -> "
        f"{e.inference_seconds * 1e3:.2f} ms per batch of {e.timing_batch[0]}\n"
        f"{_deploy_text(r.deploy, label)}"
        f"  workdir: {r.workdir}\n"
    )


def _test_text(r: RunResult, label: str) -> str:
    """The test set's line ('' without a validation split)."""
    if r.trained.test is None or r.final.test is None:
        return ""
    before, after = r.trained.test["score"], r.final.test["score"]
    n = r.data.get("test_examples", "?")
    return f"  test set ({n} examples, scored here only): {label} {before:.4g} -> {after:.4g}\n"


def _deploy_text(record: DeployReport | None, label: str) -> str:
    """The deploy stage's forms in a few lines ('' when it did not run)."""
    if record is None:
        return ""
    b = record.batch_sizes
    engine = "onnxruntime" if record.forms[0].onnx is not None else "xla"
    lines = [
        f"  deploy (latency in ms, {engine}, batch {b[0]} / {b[-1]}, "
        f"inputs {list(record.latency_input_shape)}):"
    ]
    for r in record.forms:
        extra = f" {r.info['bits']}-bit" if "bits" in r.info else ""
        extra += f" ranks {r.info['ranks']}" if "ranks" in r.info else ""
        first, last = r.latency(engine, b[0]), r.latency(engine, b[-1])
        lines.append(
            f"    {r.form:<10} {label} {r.score:.4g}  params {r.params:,}  "
            f"FLOPs {r.flops:,}  bytes {r.bytes:,}  "
            f"{first.median_s * 1e3:.2f} / {last.median_s * 1e3:.2f} ms{extra}"
        )
    lines += [f"    note: {n}" for n in record.notes]
    return "\n".join(lines) + "\n"
