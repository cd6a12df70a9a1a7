"""The prepared GPU check (`experiments/gpu_check.py`): its counts on hand-made cases, and
a rehearsal of the whole check on this CPU at tiny sizes, so that the first call on a
GPU cannot fail on a typo."""

import importlib.util
import json
import os
import subprocess
import sys

import ml_collections
import pytest
from conftest import ROOT

SCRIPT = os.path.join(ROOT, "experiments", "gpu_check.py")
_spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def test_a_step_of_the_thesis_network_counts_its_nine_convolutions():
    # 256 px, batch 3: each layer 2 * 25 * cin * cout * 3 * 256^2 FLOPs; forward and
    # filter gradient of 1->5, 5->5, 5->1 (35 channel pairs), input gradient of the last two (30).
    per_pair = 2 * 25 * 3 * 256 * 256
    assert gpu_check.step_flops(256) == per_pair * (35 + 35 + 30) == 983_040_000


def test_the_grid_runs_the_thesis_size_and_64_runs_first():
    setting = {
        "sizes": (256, 64),
        "runs": (64, 1),
        "forms": ("xla", "pallas", "packed:4"),
        "tf32": ("xla", "packed:4"),
    }
    order = gpu_check.cells(setting)
    assert order[:3] == [
        (256, 64, "xla", "highest"),
        (256, 64, "pallas", "highest"),
        (256, 64, "packed:4", "highest"),
    ]
    # TF32 only for the forms that call cuDNN, after 'highest' at both run counts.
    assert order[6:10] == [
        (256, 64, "xla", "default"),
        (256, 64, "packed:4", "default"),
        (256, 1, "xla", "default"),
        (256, 1, "packed:4", "default"),
    ]
    assert len(order) == 2 * (6 + 4)


def test_the_fastest_form_is_read_at_the_first_size_and_most_runs():
    def row(size, runs, conv, precision="highest", rate=None):
        record = {"size": size, "runs": runs, "conv": conv, "precision": precision}
        return {**record, **({"error": "x"} if rate is None else {"seed_steps_per_s": rate})}

    rows = [
        row(256, 64, "xla", rate=10),
        row(256, 64, "pallas", rate=30),
        row(256, 1, "direct", rate=99),
        row(256, 64, "packed:4", "default", rate=50),
        row(64, 512, "direct", rate=9e4),
        row(256, 64, "packed:2"),
    ]
    assert gpu_check.fastest_form(rows) == "pallas"
    assert gpu_check.fastest_form([]) == "xla"


def test_the_sweep_projection_from_a_log():
    log = (
        "[ 0.0s] jaxshrink sweep ...: 10 runs on 4 trained networks\n"
        "[ 9.0s] train: step 500/10000  loss 0.8   100.0 seed-steps/s\n"
        "[19.0s] train: step 1000/10000  loss 0.7   200.0 seed-steps/s\n"
        "[29.0s] train: step 1500/10000  loss 0.7   400.0 seed-steps/s\n"
    )
    c = ml_collections.ConfigDict(
        {
            "model": {"num_filters": 5, "num_layers": 3},
            "train": {"initial_steps": 1000},
            "minimize": {"round_steps": 20},
        }
    )
    record = gpu_check.sweep_projection(log, 10, 4, c)
    # The first rate holds the compilation: the median of 200 and 400.
    assert record["seed_steps_per_s"] == 300.0
    assert record["seed_steps_at_most"] == 4 * 1000 + 10 * 10 * 20
    assert record["projected_minutes"] == pytest.approx(6000 / 300 / 60)


@pytest.mark.e2e
def test_the_whole_check_runs_on_this_cpu_at_tiny_sizes(tmp_path):
    # Through the shell script the GPU call runs, with this interpreter as its python3.
    out = tmp_path / "out"
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    proc = subprocess.run(
        ["bash", os.path.join("experiments", "gpu_check.sh"), str(out), "--tiny", "--budget=600"],
        cwd=ROOT,
        env=dict(os.environ, PATH=path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    head = report["provenance"]
    for key in ("device", "jax", "date", "command"):
        assert head[key], key
    parts = report["parts"]
    assert list(parts) == list(gpu_check.PARTS)
    for name, part in parts.items():
        assert part["exit_code"] == 0, name
        assert part["skipped"] == [], (name, part["skipped"])
    tiny = gpu_check.TINY

    grid = [r for r in parts["grid"]["records"] if "size" in r]
    assert [(r["size"], r["runs"], r["conv"], r["precision"]) for r in grid] == gpu_check.cells(
        tiny
    )
    for r in grid:
        assert "error" not in r, r
        assert r["seed_steps_per_s"] > 0 and r["mib_per_run"] > 0
        assert 0 < r["fraction_of_fp32_peak"]
    assert parts["grid"]["records"][0]["kind"] == "matmul_peak_gflops_per_s"

    profile = parts["profile"]["records"]
    assert [(r["conv"], r["layer"]) for r in profile] == [
        (form, f"{i}->{o}") for form in tiny["forms"] for i, o in tiny["layers"]
    ]
    for r in profile:
        for piece in ("forward", "input_gradient", "filter_gradient"):
            assert r[f"{piece}_ms"] > 0, (r, piece)

    kernels = parts["kernels"]["records"]
    # XLA's layer, Pallas's at the default tile (16 rows for a 16 px image of 5
    # channels), and under JAX's own GPU lowering (interpret mode here).
    assert [r["kernel"].split("(")[1] for r in kernels] == [
        "xla)",
        "pallas, 16 rows per tile)",
        "pallas, 16 rows, JAX's GPU lowering)",
    ]
    for r in kernels:
        assert r["forward_ms"] > 0 and r["forward_and_backward_ms"] > 0, r

    for layout, flag in gpu_check.LAYOUT_FLAGS.items():
        assert flag in parts[layout]["xla_flags"]
        rows = parts[layout]["records"]
        assert {r["conv"] for r in rows} == set(tiny["tf32"])
        assert all("seed_steps_per_s" in r for r in rows), rows

    (sweep,) = parts["sweep"]["records"]
    assert sweep["finished"] and sweep["projected_minutes"] > 0
    assert sweep["runs"] == 3 and sweep["networks"] == 1
    assert "--config.model.conv=" in sweep["command"]
    assert "train: step" in (out / "sweep.log").read_text()
    tables = (out / "gpu_check.md").read_text()
    for title in ("Seed-steps per second", "pieces per layer", "Pallas layer", "Figure 4.2"):
        assert title in tables


def test_the_driver_leaves_the_device_to_its_parts(tmp_path):
    # JAX on a GPU preallocates most of the card for the first process that uses it, so
    # the driver reads the device in a child process and never imports jax itself.
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{SCRIPT!r}, {str(tmp_path)!r}, '--parts=']\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "print('imported jax:', 'jax' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("imported jax: False")
    assert "# GPU check" in proc.stdout and "jax 0." in proc.stdout
