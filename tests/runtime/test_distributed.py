"""Several processes as one job (jax.distributed), and the same result on any layout:
the sweep on 1, 2 and 4 devices and as two local CPU processes gives the same rows bit
for bit; a killed process stops the job and the same commands resume it; an
unreachable coordinator is one line within a bounded time.

One two-process job serves both of its end-to-end tests (killed after round 2 and
resumed), and one fixture runs the other layouts: its rows must equal, bit for bit,
those of every layout running uninterrupted.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from jaxshrink.core import errors, files
from jaxshrink.runtime import distributed

# The quick sweep at a test's size: 2 seeds x 3 strategies x 2 thresholds = 12 runs
# on 4 trained networks, a checkpoint after every 20 training steps and every round.
OVERRIDES = {
    "data.crop_size": 16,
    "data.train_size": 12,
    "data.eval_size": 4,
    "train.initial_steps": 40,
    "train.log_every": 20,
    "train.eval_every": 20,
    "minimize.round_steps": 3,
    "sweep.num_seeds": 2,
    "sweep.thresholds": (0.9, 1.0),
    "optim.learning_rate": 0.01,
    # XLA's CPU thread pool at 4 threads in every layout: more forced devices than
    # cores would otherwise enlarge it (`runtime.determinism`).
    "batch.cpu_threads": 4,
}
CLI = [
    sys.executable,
    "-u",
    "-m",
    "jaxshrink.main",
    f"--config={os.path.join(ROOT, 'configs', 'sweep.py')}:quick",
    *(f"--config.{k}={v}".replace(" ", "") for k, v in OVERRIDES.items()),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, port, i, *extra):
    command = [
        *CLI,
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        "--heartbeat_timeout=5",
        *extra,
    ]
    return subprocess.Popen(
        command,
        env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _two_processes(workdir, timeout=300):
    """Runs the sweep as processes 0 and 1 to the end; returns their outputs."""
    port = _free_port()
    procs = [_start(workdir, port, i) for i in (1, 0)]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs[1], outs[0]  # process 0's, process 1's


def _rows(workdir):
    return files.read_csv(os.path.join(workdir, "runs.csv"))


def _run_alone(workdir, devices: int) -> str:
    """The sweep in one process on `devices` forced host devices; its output."""
    flags = f"--xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=flags)
    proc = subprocess.run(
        [*CLI, f"--workdir={workdir}"], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The sweep's rows in one process on 1, 2 and 4 devices (forced host devices)."""
    out = {}
    for devices in (1, 2, 4):
        workdir = tmp_path_factory.mktemp(f"devices{devices}")
        log = _run_alone(workdir, devices)
        assert f"cpu x{devices} (cpu)" in log and "XLA CPU pool of 4 threads" in log
        out[devices] = _rows(workdir)
    return out


@pytest.fixture(scope="module")
def one(layouts):
    """The reference: the sweep in one process on one device."""
    return layouts[1]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The sweep as processes 0 and 1; process 1 SIGKILLed after round 2's checkpoint;
    then the same two commands again, to the end."""
    workdir = tmp_path_factory.mktemp("two")
    port = _free_port()
    procs = [_start(workdir, port, i) for i in (1, 0)]
    seen = []
    for line in procs[1].stdout:  # process 0's log
        seen.append(line)
        if "minimize: round  2" in line:
            procs[0].send_signal(signal.SIGKILL)  # process 1
            break
    t0 = time.perf_counter()
    first_out0 = procs[1].communicate(timeout=120)[0]
    procs[0].wait(timeout=30)
    killed = {
        "codes": (procs[1].returncode, procs[0].returncode),
        "seconds": time.perf_counter() - t0,
        "log": "".join(seen) + first_out0,
        "rows_written": (workdir / "runs.csv").exists(),
    }
    out0, out1 = _two_processes(workdir)
    return workdir, killed, out0, out1


@pytest.mark.e2e
def test_two_processes_give_the_sweep_of_one(two, one):
    workdir, _, out0, out1 = two
    assert "cpu x2 (cpu, process 0 of 2)" in out0  # the run axis over both processes
    assert "minimize: round" in out0 and "minimize: round" not in out1  # one log
    # Process 0 alone wrote the job's files; each process held its own lock.
    names = set(os.listdir(workdir))
    assert {"runs.csv", "results.json", "figure_4_2.png", ".lock.0", ".lock.1"} <= names
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "minimize"))
    got = _rows(workdir)
    assert len(got) == 12 and got == one  # bit for bit
    assert len({r["kept"] for r in got}) > 1  # the runs differ: a comparison with content


@pytest.mark.e2e
def test_the_sweep_is_the_same_bits_on_one_two_and_four_devices(layouts, one):
    assert len(one) == 12 and len({r["kept"] for r in one}) > 1  # runs that differ
    assert layouts[2] == one and layouts[4] == one  # every column of every row


@pytest.mark.e2e
def test_a_killed_process_stops_the_job_and_the_same_commands_resume_it(two, one):
    workdir, killed, out0, _ = two
    # The survivor stops by itself (heartbeat timeout and its grace), without results.
    process0, process1 = killed["codes"]
    assert process1 == -signal.SIGKILL, killed["log"][-2000:]
    assert process0 != 0, killed["log"][-2000:]
    assert killed["seconds"] < 100
    assert not killed["rows_written"]
    # The same commands resumed after the last complete round, to the same rows.
    assert "minimize: resumed after round" in out0
    assert _rows(workdir) == one


@pytest.mark.e2e
def test_an_unreachable_coordinator_is_one_line_within_the_timeout(tmp_path):
    port = _free_port()  # nothing listens there
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            *CLI,
            f"--workdir={tmp_path}",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            "--process_id=1",
            "--distributed_timeout=3",
        ],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("jaxshrink: error:")]
    assert f"could not join the job through the coordinator at 127.0.0.1:{port}" in line
    assert "within 3 s" in line
    assert time.perf_counter() - t0 < 60


def test_arguments_and_cluster_detection(monkeypatch):
    assert distributed.cluster_detected({"SLURM_NTASKS": "4", "SLURM_PROCID": "3"})
    assert not distributed.cluster_detected({"SLURM_NTASKS": "4"})  # a salloc shell: no rank
    assert distributed.cluster_detected({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"})
    assert distributed.cluster_detected({"JAX_COORDINATOR_ADDRESS": "host0:1234"})
    assert not distributed.cluster_detected({"SLURM_NTASKS": "1"})
    assert not distributed.cluster_detected({"SLURM_NTASKS": "x"})
    assert not distributed.cluster_detected({})
    for name in ("SLURM_NTASKS", "SLURM_PROCID", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False  # one process: nothing to join
    assert distributed.describe() == "" and distributed.is_primary()
    with pytest.raises(errors.ConfigError, match="go together"):
        distributed.initialize("127.0.0.1:1", num_processes=2)
    with pytest.raises(errors.ConfigError, match="must be 0 to 1, got 2"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=2)


def test_reachable_waits_for_a_listening_port_within_the_bound():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert distributed.reachable(f"127.0.0.1:{server.getsockname()[1]}", 1.0)
    t0 = time.perf_counter()
    assert not distributed.reachable(f"127.0.0.1:{_free_port()}", 0.5)
    assert 0.5 <= time.perf_counter() - t0 < 5
