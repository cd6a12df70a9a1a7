"""The relearning experiment (thesis 2.4.1's three modes) end to end on a tiny network."""

import os

import numpy as np
import pytest
from conftest import tiny_config

from jaxshrink.experiments import relearn, runner


def test_cosine_is_nan_for_an_all_zero_row():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [-3.0, -4.0]])
    got = relearn.cosine(a, b)
    assert got[0] == 1.0 and np.isnan(got[1]) and got[2] == -1.0


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    c = tiny_config("canny")
    c.minimize.enabled = False
    c.relearn = relearn.default_config("canny").relearn
    c.relearn.repetitions = 1
    c.relearn.modes = ("disabled", "disabled_frozen")
    c.minimize.round_steps = 4
    workdir = str(tmp_path_factory.mktemp("relearn"))
    return workdir, runner.run(c, workdir)


def _rows(result, mode, fill):
    return [r for r in result[1]["rows"] if (r["mode"], r["values"]) == (mode, fill)]


@pytest.mark.e2e
def test_every_unit_is_tested_in_every_mode_and_fill(result):
    workdir, out = result
    assert len(out["rows"]) == 10 * 2 * 2  # 10 hidden units x 2 modes x 2 fills
    assert {r["candidate"] for r in out["rows"]} == {
        f"conv_{i}/{u}" for i in (0, 1) for u in range(5)
    }
    for name in ("relearn.csv", "relearn_table.md", "relearn.png", "results.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0


@pytest.mark.e2e
def test_zero_values_stay_zero_and_a_gated_unit_never_moves(result):
    for mode in ("disabled", "disabled_frozen"):
        assert all(
            r["stayed_zero"] == 1.0 and r["norm_end"] == 0.0 for r in _rows(result, mode, "zero")
        )
    for r in _rows(result, "disabled_frozen", "reinit"):  # gated and frozen: bit-identical
        assert r["cos_end"] == r["cos_start"] and r["stayed_zero"] == 0.0
    # A zero unit and a gated unit compute the same network: the same scores.
    zero = [r["ratio"] for r in _rows(result, "disabled", "zero")]
    gated = [r["ratio"] for r in _rows(result, "disabled_frozen", "reinit")]
    np.testing.assert_allclose(zero, gated, rtol=1e-6)


@pytest.mark.e2e
def test_redrawn_values_train_in_the_disabled_mode(result):
    rows = _rows(result, "disabled", "reinit")
    assert all(r["cos_end"] != r["cos_start"] for r in rows)
    table = {(e["mode"], e["values"]): e for e in result[1]["table"]}
    assert table["disabled", "zero"]["stayed_zero"] == 1.0
    assert table["disabled", "reinit"]["variants"] == 10
