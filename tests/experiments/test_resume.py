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
from conftest import die_after_saves, load_config, tiny_config
from test_autoencoder import tiny_autoencoder
from test_every_model import tiny_summation
from test_sweep import tiny_sweep

from jaxshrink.experiments import runner, sweep

pytestmark = pytest.mark.e2e  # every case runs its experiment three times


class Case(NamedTuple):
    make: Callable  # () -> a fresh config
    stage: str  # the checkpointed stage after which the run is killed
    saves: int  # ... after its `saves`-th checkpoint
    kept: tuple[str, ...]  # the results that must be equal
    written: str  # a file only a finished run writes
    check: Callable | None = None  # (results) -> None: what the case is about


def tiny_canny():
    c = tiny_config("canny")
    c.minimize.threshold = 0.9
    return c


def tiny_plain_sweep():
    """A plain U-Net (`Model.wrap`: its layers are channel groups, its deeper level a
    branch) in a batch of 2 seeds x 2 thresholds, with the depth search on."""
    c = load_config("unet", "quick")
    tiny = tiny_config("sobel")
    for section, keys in (
        ("data", ("crop_size", "train_size", "eval_size")),
        ("train", ("initial_steps", "log_every", "eval_every", "eval_batch_size")),
        ("minimize", ("round_steps",)),
        ("output", ("num_examples",)),
    ):
        for key in keys:
            c[section][key] = tiny[section][key]
    c.model.widths = (4, 6)
    # Groups: down0 x2 (4), bottleneck x2 (6, branches), up0 (4, a branch), dec0 x2 (4).
    c.train.start_widths = (4, 4, 6, 6, 4, 3, 4)  # grows dec0/conv1 first
    c.minimize.grow = True
    c.minimize.depth = "cost"
    c.minimize.max_rounds = 3
    sweep.add_section(c)
    c.sweep.num_seeds = 1
    c.sweep.strategies = ("cosine",)
    c.sweep.thresholds = (0.5, 1.0)
    return c


def _grew_first(results) -> None:
    """Every run of the plain sweep began with a growth round of dec0/conv1."""
    firsts = [log[0] for log in results["round_logs"]]
    assert [(r["kind"], r["candidate"].split("/")[:2]) for r in firsts] == [
        ("grow", ["dec0", "conv1"])
    ] * 2


SINGLE = ("kept", "rounds", "trained", "final", "params", "widths")
CASES = {
    "edges": Case(tiny_canny, "minimize", 2, SINGLE, "results.json"),
    # Groups of units (`minimize.group='adaptive'`) resume too: `MinState.group`.
    "summation": Case(tiny_summation, "minimize", 2, SINGLE, "results.json"),
    # Batch norm's running statistics and transposed convolutions.
    "autoencoder": Case(tiny_autoencoder, "minimize", 2, SINGLE, "results.json"),
    # A batch of runs; killed mid-way through the rounds of every run.
    "sweep": Case(tiny_sweep, "minimize", 3, ("runs", "round_logs"), "runs.csv"),
    # A plain module's channel groups, branches and growth, in a batch of runs.
    "plain": Case(
        tiny_plain_sweep, "minimize", 2, ("runs", "round_logs"), "runs.csv", _grew_first
    ),
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
    if case.check is not None:
        case.check(want)
    for key in case.kept:
        assert got[key] == want[key], key
    if "rounds" in case.kept:
        assert len(want["rounds"]) >= case.saves  # the kill did fall inside the rounds
    a, b = _exported(straight), _exported(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
