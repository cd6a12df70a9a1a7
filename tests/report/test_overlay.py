"""Several finished runs in one figure (thesis 004's Models A, B and C side by side)."""

import json

import pytest

from jaxshrink.report import overlay


def _workdir(path, steps, loss, train_score=None, eval_split="validation"):
    path.mkdir()
    curve = {"step": steps, "loss": loss, "eval_step": steps, "eval_score": [0.5] * len(steps)}
    if train_score is not None:
        curve["train_score"] = train_score
    results = {"curve": curve, "data": {"eval_split": eval_split}}
    (path / "results.json").write_text(json.dumps(results))
    return str(path)


def test_two_runs_overlay_their_losses_and_accuracies(tmp_path):
    a = _workdir(tmp_path / "model_a", [1, 2, 3], [2.0, 1.0, 0.5], [0.4, 0.6, 0.7])
    b = _workdir(tmp_path / "model_b", [1, 2, 3], [8.0, 2.0, 1.0], [0.3, 0.6, 0.8])
    runs = overlay.curves([a, b])
    assert list(runs) == ["model_a", "model_b"]
    assert runs["model_b"]["loss"] == [8.0, 2.0, 1.0]
    out = tmp_path / "out"
    overlay.main([a, b, f"--out={out}", "--labels=A,B"])
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "loss_normalised.png"]
    assert all(p.stat().st_size > 1000 for p in out.iterdir())


def test_a_run_without_training_accuracy_gets_the_loss_overlay_only(tmp_path):
    a = _workdir(tmp_path / "a", [1, 2], [1.0, 0.5])
    written = overlay.draw([a], str(tmp_path / "out"))
    assert [p.rsplit("/", 1)[-1] for p in written] == ["loss_normalised.png"]


def test_an_unfinished_run_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no results.json"):
        overlay.main([str(tmp_path / "empty"), f"--out={tmp_path / 'out'}"])
    with pytest.raises(ValueError, match="1 labels for 2 workdirs"):
        overlay.curves([str(tmp_path / "x"), str(tmp_path / "y")], ["one"])
