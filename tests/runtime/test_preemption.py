"""Stopping on request: SIGTERM and SIGINT end a run at its next safe point with a
checkpoint and exit 75; the same command resumes to the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT, tiny_config

from jaxshrink.experiments import runner
from jaxshrink.runtime import preemption, stages

# A tiny Canny run through the command line whose rounds train in several chunks
# (60 steps per round, a safe point every 10): a stop can land inside a round.
CLI = [
    sys.executable,
    "-u",
    "-m",
    "jaxshrink.main",
    f"--config={os.path.join(ROOT, 'configs', 'canny.py')}:quick",
    "--config.data.crop_size=16",
    "--config.data.train_size=12",
    "--config.data.eval_size=4",
    "--config.train.initial_steps=40",
    "--config.train.log_every=10",
    "--config.train.eval_every=10",
    "--config.minimize.round_steps=60",
    "--config.minimize.threshold=0.9",
    "--config.optim.learning_rate=0.01",
]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT)


def _comparable(workdir):
    r = json.loads((workdir / "results.json").read_text())
    return {k: r[k] for k in ("status", "kept", "rounds", "trained", "final", "params")}


@pytest.mark.e2e
def test_sigterm_mid_run_writes_a_checkpoint_exits_75_and_the_rerun_resumes(tmp_path):
    straight = tmp_path / "straight"
    done = subprocess.run(
        [*CLI, f"--workdir={straight}"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(
        [*CLI, f"--workdir={stopped}"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if "minimize: round  1" in line:  # round 2 is training: stop it
            proc.send_signal(signal.SIGTERM)
            sent = time.perf_counter()
            break
    proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    # 75: stopped at a safe point with a checkpoint (76 would mean the grace expired).
    assert proc.returncode == preemption.EXIT_CODE, err[-3000:]
    print(f"SIGTERM to exit: {time.perf_counter() - sent:.2f} s")
    stops = [x for x in err.splitlines() if "stopped by SIGTERM" in x]
    assert len(stops) == 1 and "rerun the same command to resume" in stops[0], err
    assert not (stopped / "results.json").exists()

    again = subprocess.run(
        [*CLI, f"--workdir={stopped}"], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stdout
    assert _comparable(stopped) == _comparable(straight)


def _config():
    c = tiny_config("canny")
    c.minimize.threshold = 0.9
    c.minimize.round_steps = 12
    c.train.log_every = 5  # rounds of three chunks: 5, 5 and 2 steps
    return c


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    return runner.run(_config(), str(tmp_path_factory.mktemp("straight")))


@pytest.mark.e2e
@pytest.mark.parametrize(
    "where",
    ["at training step 20", "in minimization round 2, after 5", "after minimization round 3"],
    ids=["training", "mid-round", "between-rounds"],
)
def test_a_stop_at_each_kind_of_safe_point_resumes_to_the_uninterrupted_result(
    straight_run, tmp_path, monkeypatch, where
):
    want = straight_run
    real_stop = preemption.stop
    places = []

    def stop_here(at, save=None):  # as if SIGTERM had arrived just before this point
        places.append(at)
        if at.startswith(where):
            preemption._state["signal"] = signal.SIGTERM
        real_stop(at, save)

    monkeypatch.setattr(stages.preemption, "stop", stop_here)
    workdir = str(tmp_path / "stopped")
    with pytest.raises(preemption.Stopped, match=f"stopped by SIGTERM {where}"):
        runner.run(_config(), workdir)
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    monkeypatch.undo()
    got = runner.run(_config(), workdir)
    for key in ("kept", "rounds", "final", "trained"):
        assert got[key] == want[key], key
    assert places[-1].startswith(where)  # it stopped at the first point asked
    if "round" in where:  # every chunk's end is a safe point, inside rounds too
        assert "in minimization round 1, after 10 of 12 steps" in places


def _python(code: str, *signals_to_send, wait: float = 1.0):
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    for s in signals_to_send:
        proc.send_signal(s)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=30 + wait)
    return proc.returncode, out, err


# A job that never reaches a safe point: busy in Python, outside any stop check.
_BUSY = """
    import time
    from jaxshrink.runtime import preemption
    with preemption.watch({grace}):
        print("ready", flush=True)
        end = time.time() + 20
        while time.time() < end:
            pass
    print("finished", flush=True)
"""


def test_no_safe_point_within_the_grace_period_exits_76():
    code, out, err = _python(_BUSY.format(grace=0.5), signal.SIGTERM)
    assert code == preemption.EXPIRED_CODE
    assert "finished" not in out
    assert "no safe point within the grace period of 0.5 s" in err


def test_a_second_signal_stops_at_once():
    code, out, err = _python(_BUSY.format(grace=25), signal.SIGINT, signal.SIGINT)
    assert code == preemption.EXPIRED_CODE
    assert "finished" not in out
    assert err.count("SIGINT") == 2


def test_outside_watch_the_signal_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.watch(1.0):
        assert signal.getsignal(signal.SIGTERM) is not before
        assert not preemption.requested()
    assert signal.getsignal(signal.SIGTERM) is before
    preemption.stop("anywhere")  # nothing asked: returns
