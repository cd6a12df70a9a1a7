"""The engine benchmark: a tiny run writes its table and JSON, with a peer beside it."""

import json
import os
import sys

import pytest
from conftest import ROOT

from jaxshrink.bench import speed as bench

# A stand-in peer: prints noise, then the JSON line bench reads (rate: size * seeds).
FAKE_PEER = """import json, sys
size, seeds, steps = map(int, sys.argv[1:])
print("warming up")
print(json.dumps({"peer": "fake", "seed_steps_per_s": float(size * seeds), "steps": steps}))
"""


def test_bench_runs_a_peer_beside_per_precision_with_memory_and_share_of_peak(tmp_path, capsys):
    script = tmp_path / "peer.py"
    script.write_text(FAKE_PEER)
    out = tmp_path / "bench.json"
    peer = f"{sys.executable} {script} {{size}} {{seeds}} {{steps}}"
    argv = ["--sizes=8", "--seeds=1", "--methods=loop", "--steps=2", f"--out={out}"]
    report = bench.main([*argv, f"--peer={peer}", "--precision=highest,default", "--peak"])
    rows = report["rows"]
    assert [r["precision"] for r in rows] == ["highest", "default"]
    for row in rows:
        assert row["peer"]["seed_steps_per_s"] == 8.0 and row["peer"]["steps"] == 2
        assert row["peer"]["command"] == f"{sys.executable} {script} 8 1 2"
        assert row["ratio"] == pytest.approx(row["seed_steps_per_s"] / 8.0)
        # With --peak, each row's FLOP rate as a share of its precision's matrix product.
        peak = report["matmul_gflops_per_s"][row["precision"]]
        assert peak > 0 and row["fraction_of_matmul_peak"] == row["gflops_per_s"] / peak
        # Memory: XLA's estimate for the program, per run.
        assert row["train_bytes"] > 0 and row["train_bytes_per_run"] == row["train_bytes"]
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["ratio"] == pytest.approx(rows[0]["ratio"])
    assert saved["matmul_gflops_per_s"] == report["matmul_gflops_per_s"]
    assert "peer steps/s" in capsys.readouterr().out


def test_a_peer_without_a_rate_is_an_error(tmp_path):
    silent = tmp_path / "silent.py"
    silent.write_text("print('{}')\n")
    with pytest.raises(RuntimeError, match="no JSON line with seed_steps_per_s"):
        bench.run_peer(f"{sys.executable} {silent}", 8, 1, 2)
    failing = tmp_path / "failing.py"
    failing.write_text("raise SystemExit(3)\n")
    with pytest.raises(RuntimeError, match="exit 3"):
        bench.run_peer(f"{sys.executable} {failing}", 8, 1, 2)


def test_bench_measures_any_config_on_synthetic_data(tmp_path):
    root = ROOT
    config = os.path.join(root, "configs", "mnist.py") + ":quick"
    out = tmp_path / "bench.json"
    argv = ["--seeds=2", "--methods=loop", "--steps=1", f"--config={config}", f"--out={out}"]
    report = bench.main(argv)
    (row,) = report["rows"]
    assert row["input_shape"] == [28, 28, 1] and row["size"] == "28x28x1"
    assert row["seeds"] == 2 and row["seed_steps_per_s"] > 0 and row["flops_per_seed_step"] > 0
    assert report["network"] == config
    with pytest.raises(SystemExit, match="no config file"):
        bench.main(["--config=configs/none.py", f"--out={out}"])


def test_largest_group_divides_the_memory_limit_by_the_bytes_per_run():
    assert bench.largest_group(8, "highest", "vmap", "sum") is None  # the CPU has no limit
    assert bench.runs_that_fit(1000, 100, 300) == 3  # 100 + 3 x 300 = 1000
    assert bench.runs_that_fit(999, 100, 300) == 2
    assert bench.runs_that_fit(50, 100, 300) == 0 and bench.runs_that_fit(1000, 100, 0) == 0
    # Two small compilations give the line bytes = fixed + per_run x runs; a limit
    # that holds no run trains nothing. (The check that trains the largest group ran
    # on an H100: experiments/results/gpu_h100.)
    fit = bench.largest_group(8, "highest", "vmap", "sum", probe=(1, 3), limit=1)
    assert fit["bytes_per_run"] > 0 and fit["largest_group"] == 0 and not fit["fits"]
    assert fit["bytes_limit"] == 1
