"""An interrupted experiment, rerun with the same command, ends exactly as one that was
never interrupted: one harness for every kind of run.

The interruption is a `KeyboardInterrupt` raised right after a checkpoint of the given
stage completes, as a kill between two checkpoints would (`conftest.die_after_saves`).
The kill by a signal from outside is `tests/runtime/test_reliability.py`'s, and the kill
of one process of a multi-process job `tests/runtime/test_distributed.py`'s.
"""

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
from conftest import die_after_saves, tiny_config
from test_autoencoder import tiny_autoencoder
from test_every_model import tiny_summation
from test_sweep import tiny_sweep

from jaxshrink.experiments import runner

pytestmark = pytest.mark.e2e  # every case runs its experiment three times


class Case(NamedTuple):
    make: Callable  # () -> a fresh config
    stage: str  # the checkpointed stage after which the run is killed
    saves: int  # ... after its `saves`-th checkpoint
    kept: tuple[str, ...]  # the results that must be equal
    written: str  # a file only a finished run writes


def tiny_canny():
    c = tiny_config("canny")
    c.minimize.threshold = 0.9
    return c


SINGLE = ("kept", "rounds", "trained", "final", "params", "widths")
CASES = {
    "edges": Case(tiny_canny, "minimize", 2, SINGLE, "results.json"),
    # Groups of units (`minimize.group='adaptive'`) resume too: `MinState.group`.
    "summation": Case(tiny_summation, "minimize", 2, SINGLE, "results.json"),
    # Batch norm's running statistics and transposed convolutions.
    "autoencoder": Case(tiny_autoencoder, "minimize", 2, SINGLE, "results.json"),
    # A batch of runs; killed mid-way through the rounds of every run.
    "sweep": Case(tiny_sweep, "minimize", 3, ("runs", "round_logs"), "runs.csv"),
}


def _exported(workdir) -> dict:
    path = os.path.join(workdir, "export", "params.npz")
    if not os.path.exists(path):
        return {}
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_interrupted_run_resumes_to_the_same_result(name, tmp_path, monkeypatch):
    case = CASES[name]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    want = runner.run(case.make(), straight)

    undo = die_after_saves(monkeypatch, case.stage, case.saves)
    with pytest.raises(KeyboardInterrupt):
        runner.run(case.make(), resumed)
    undo()
    assert not os.path.exists(os.path.join(resumed, case.written))

    got = runner.run(case.make(), resumed)
    for key in case.kept:
        assert got[key] == want[key], key
    if "rounds" in case.kept:
        assert len(want["rounds"]) >= case.saves  # the kill did fall inside the rounds
    a, b = _exported(straight), _exported(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
