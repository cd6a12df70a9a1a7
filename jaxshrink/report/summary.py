"""What a finished run leaves for a person: `results.json`, pictures and a summary.

`results` assembles the record of one run (config, data, baseline and final scores,
kept units per layer, parameter and FLOP counts before and after, every round);
`draw_run` writes the pictures that fit the model and the task; `summary` is the
text printed at the end. Everything reads the model's spec and the task, so it works
for every registered model and for a researcher's own.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxshrink import data
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.core import train
from jaxshrink.report import pictures as visualize
from jaxshrink.report import plots
from jaxshrink.search import batching

ROW_LIMIT = 40  # layers with more units are summarised as "kept k of n"


def _ratio(final: float, trained: float) -> float | None:
    # None when the trained network scores 0 (e.g. targets without any edge).
    return final / trained if trained > 0 else None


def results(job, trained, final, trained_scores, final_scores, rounds, exported) -> dict:
    """The JSON-able record of one run (see the module docstring)."""
    config, model_spec = job.config, job.model.spec
    full = spec_lib.full(model_spec)
    return {
        "status": "ok",
        "config": config.to_dict(),
        "workdir": job.workdir,
        "device": jax.devices()[0].device_kind,
        "data": job.dataset.info,
        "score": {"name": job.task.score_label, "key": "score"},
        "trained": {"steps": int(trained.step), "eval": trained_scores},
        "final": {"steps": int(final.step), "eval": final_scores},
        "reference_ratio": _ratio(final_scores["score"], trained_scores["score"]),
        "layers": model_spec.names,
        "kept": masks_lib.to_rows(model_spec, final.masks),
        "widths": {"before": exported["full_widths"], "after": exported["widths"]},
        "removed_units": int(masks_lib.count_alive(full) - masks_lib.count_alive(final.masks)),
        "params": {"before": exported["full_params"], "after": exported["params"]},
        "flops": {
            "before": exported["full_flops"],
            "after": exported["flops"],
            "unit": f"forward FLOPs per example of shape {list(model_spec.input_shape)}",
        },
        "rounds": rounds,
        "export": exported,
        "curve": job.curve
        and {
            "step": job.curve["step"],
            "loss": [v[0] for v in job.curve["loss"]],
            "eval_step": job.curve["eval_step"],
            "eval_score": [v[0] for v in job.curve["eval_score"]],
        },
    }


def _is_image_fcn(model_spec) -> bool:
    """Every layer a 2-D convolution with few units: the edge FCN's pictures fit."""
    return all(layer.kind == "conv" and layer.units <= 16 for layer in model_spec.layers) and (
        len(model_spec.input_shape) == 3
    )


def draw_run(job, trained, final, rounds: list[dict], baseline: float) -> list[str]:
    """The pictures of one run that fit its model and task; returns their names."""
    config, out, model = job.config, job.workdir, job.model
    model_spec, label = model.spec, job.task.score_label
    names = []

    def path(name):
        names.append(name)
        return os.path.join(out, name)

    if _is_image_fcn(model_spec):  # thesis 001, 3.2
        visualize.save_masks(
            path("masks_trained.png"), model_spec, trained.params, trained.masks, "trained"
        )
        visualize.save_masks(
            path("masks_minimized.png"), model_spec, final.params, final.masks, "minimized"
        )
        # "After a few steps": the same run's first steps, recomputed (same seed, batches).
        few = min(100, int(config.train.initial_steps))
        start = job.place(train.create_train_states([int(config.seed)], model, job.trainer.tx))
        steps = job.place(np.full((1,), few, np.int32))
        early = batching.take(job.train_fn(start, job.train_data, steps)[0], 0)
        visualize.save_filter_outputs_stages(
            path("filter_outputs.png"),
            model,
            [
                (f"after {few} steps", early.params, early.masks),
                (f"after training ({int(trained.step)} steps)", trained.params, trained.masks),
                (f"minimized ({int(final.step)} steps)", final.params, final.masks),
            ],
            data.decode(job.dataset.eval.inputs[:1])[0],
        )
    first = model_spec.layers[0]
    if job.task.name == "classification":  # thesis 004, 3.6
        x, labels = job.dataset.eval.inputs, np.asarray(job.dataset.eval.targets)
        predicted = np.argmax(job.predict(final, x), axis=-1)
        plots.save_confusion_matrix(
            path("confusion_matrix.png"),
            labels,
            predicted,
            model_spec.layers[-1].units,
            title="minimized network, eval split",
        )
        if first.kind == "conv" and first.in_features in (1, 3):
            plots.save_first_layer_filters(
                path("first_layer_filters.png"),
                np.asarray(spec_lib.get(final.params, first.kernel)),
                np.asarray(final.masks[first.name]),
                title=f"{first.name} after minimization",
            )
    if (
        job.task.name == "regression"
        and len(model_spec.layers) == 2
        and all(layer.kind == "dense" for layer in model_spec.layers)
    ):
        hidden, output = model_spec.layers
        layer_params = final.params[hidden.name]
        plots.save_unit_weights(
            path("unit_weights.png"),
            np.asarray(layer_params["kernel"]),
            np.asarray(layer_params.get("bias", np.zeros(hidden.units))),
            np.asarray(spec_lib.get(final.params, output.kernel)),
            np.asarray(final.masks[hidden.name]),
            title="surviving hidden units",
        )
    if job.curve and job.curve["step"]:
        c = job.curve
        losses = [v[0] for v in c["loss"]]
        visualize.save_training_curve(
            path("training_curve.png"),
            c["step"],
            losses,
            c["eval_step"],
            [v[0] for v in c["eval_score"]],
            title=f"initial training ({config.train.loss or job.task.losses[0]} loss)",
            score_label=label,
        )
        if job.task.name == "classification" and losses[0] > 0:
            plots.save_normalised_loss(
                path("loss_normalised.png"), {"training loss": (c["step"], losses)}
            )
    if config.minimize.enabled:
        visualize.save_timeline(
            path("timeline.png"),
            rounds,
            baseline,
            threshold=float(config.minimize.threshold),
            score_label=label,
        )
    visualize.save_kept_matrix(
        path("kept.png"), masks_lib.to_rows(model_spec, final.masks), model_spec.names
    )
    return names


def _ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1%}"


def _kept_line(name: str, row: list[bool]) -> str:
    if len(row) > ROW_LIMIT:
        return f"    {name}: kept {sum(row)} of {len(row)}"
    return f"    {name}: " + " ".join("#" if k else "." for k in row)


def summary(results: dict) -> str:
    """The text printed at the end of a run."""
    t, f, e = results["trained"], results["final"], results["export"]
    label = results["score"]["name"]
    kept = "\n".join(_kept_line(n, r) for n, r in zip(results["layers"], results["kept"]))
    accepted = sum(r["accepted"] for r in results["rounds"])
    m = results["config"]["minimize"]
    extra = ""
    if "top1_error" in f["eval"]:
        extra = f"  top-1 error {t['eval']['top1_error']:.2%} -> {f['eval']['top1_error']:.2%}\n"
    elif "mse" in f["eval"]:
        extra = f"  eval MSE {t['eval']['mse']:.4g} -> {f['eval']['mse']:.4g}\n"
    return (
        f"\n== jaxshrink {results['config']['task']} ({results['config']['data']['dataset']}) ==\n"
        f"  data: {results['data']['description']}\n"
        f"  trained {t['steps']} steps: eval {label} {t['eval']['score']:.4g}\n"
        f"  minimized ({m['strategy']}, threshold {m['threshold']}): "
        f"{len(results['rounds'])} rounds, {accepted} kept, {label} {f['eval']['score']:.4g} "
        f"({_ratio_text(results['reference_ratio'])} of trained)\n"
        f"{extra}"
        f"  units removed: {results['removed_units']}; kept (# = kept):\n{kept}\n"
        f"  units per layer {e['full_widths']} -> {e['widths']}\n"
        f"  parameters {e['full_params']:,} -> {e['params']:,}, "
        f"FLOPs/example {e['full_flops']:,} -> {e['flops']:,}\n"
        f"  inference {e['full_inference_seconds'] * 1e3:.2f} ms -> "
        f"{e['inference_seconds'] * 1e3:.2f} ms per batch of {e['timing_batch'][0]}\n"
        f"{_deploy_text(results.get('deploy'), label)}"
        f"  workdir: {results['workdir']}\n"
    )


def _deploy_text(record: dict | None, label: str) -> str:
    """The deploy stage's forms in a few lines ('' when it did not run)."""
    if not record:
        return ""
    b = record["batch_sizes"]
    key = "onnxruntime" if "onnx" in record["forms"][0] else "xla"
    lines = [
        f"  deploy (latency in ms, {key}, batch {b[0]} / {b[-1]}, "
        f"inputs {record['latency_input_shape']}):"
    ]
    for r in record["forms"]:
        extra = f" {r['bits']}-bit" if "bits" in r else ""
        extra += f" ranks {r['ranks']}" if "ranks" in r else ""
        first, last = r.get(f"{key}_b{b[0]}"), r.get(f"{key}_b{b[-1]}")
        lines.append(
            f"    {r['form']:<10} {label} {r['score']:.4g}  params {r['params']:,}  "
            f"FLOPs {r['flops']:,}  bytes {r['bytes']:,}  "
            f"{first['median_s'] * 1e3:.2f} / {last['median_s'] * 1e3:.2f} ms{extra}"
        )
    lines += [f"    note: {n}" for n in record["notes"]]
    return "\n".join(lines) + "\n"
