"""Tasks: the compared score, the reported metrics and the loss registry, by hand."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxshrink.core import metrics, tasks


def test_classification_metrics_and_score_by_hand():
    task = tasks.get_task("classification")
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 5.0, 0.0], [1.0, 0.0, 0.0]])
    labels = jnp.array([0, 1, 1, 2])
    per = task.metrics(logits, labels)
    np.testing.assert_array_equal(per["accuracy"], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(per["top1_error"], [0.0, 1.0, 0.0, 1.0])
    # -log softmax of the label: row 0 is -log(e^2 / (e^2 + 2)).
    np.testing.assert_allclose(per["cross_entropy"][0], -np.log(np.e**2 / (np.e**2 + 2)), 1e-6)
    means = {k: jnp.mean(v) for k, v in per.items()}
    assert float(task.score(means)) == 0.5
    assert float(task.loss(logits, labels)) == pytest.approx(float(means["cross_entropy"]))


def test_regression_score_is_the_inverse_mse():
    task = tasks.get_task("regression")
    out, y = jnp.array([[1.0], [2.0], [4.0]]), jnp.array([[1.0], [1.0], [2.0]])
    per = task.metrics(out, y)
    np.testing.assert_array_equal(per["mse"], [0.0, 1.0, 4.0])
    np.testing.assert_array_equal(per["mae"], [0.0, 1.0, 2.0])
    means = {k: jnp.mean(v) for k, v in per.items()}
    assert float(task.score(means)) == pytest.approx(3 / 5)  # 1 / mean MSE (5/3)
    assert float(task.loss(out, y)) == pytest.approx(5 / 3)
    # A perfect fit has a finite (clipped) score, so ratios stay defined.
    assert np.isfinite(float(task.score({"mse": jnp.float32(0.0)})))
    # The threshold rule: a 5% tolerance allows the MSE to grow by 1/0.95.
    old, new = 1e-4, 1e-4 / 0.95
    ratio = task.score({"mse": jnp.float32(new)}) / task.score({"mse": jnp.float32(old)})
    assert float(ratio) == pytest.approx(0.95, rel=1e-5)


def test_edges_score_is_the_mean_f1_and_the_loss_follows_the_config():
    assert tasks.get_task("edges", "f1").loss is metrics.f1_loss
    assert tasks.get_task("edges").loss is metrics.mse  # the task's default
    task = tasks.get_task("edges", "mae")
    out = jnp.zeros((2, 8, 8, 1)).at[0, 2:4, 2:4].set(1.0)
    per = task.metrics(out, out)
    np.testing.assert_array_equal(per["f1"], [1.0, 1.0])  # identical images, both
    assert float(task.score({"f1": jnp.mean(per["f1"])})) == 1.0


def test_every_task_names_its_losses_in_the_registry():
    for name, task in tasks.TASKS.items():
        assert task.losses and all((name, loss) in tasks.LOSSES for loss in task.losses)
    assert {task for task, _ in tasks.LOSSES} == set(tasks.TASKS)
