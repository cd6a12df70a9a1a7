"""What a network is trained for: loss, per-example metrics, the score, its picture's kind.

A `Task` removes every task-specific string from the loops. The minimization rule
compares `score` (higher is better, positive) between the trial network and the last
accepted one; `metrics` are reported beside it. The registry `TASKS` is the one place
tasks are named:

* ``edges`` (thesis 001): images -> edge maps. Loss MAE, MSE or the soft F1 loss
  E/(2TP+E) (2.3.1); metrics F1, MAE, MSE and UIQI (3.1); score the mean per-image F1.
* ``classification`` (theses 003, 004): logits over classes, integer labels. Loss the
  softmax cross-entropy; metrics accuracy, top-1 error and cross-entropy; score the
  accuracy (what both theses report).
* ``regression`` (thesis 003's summation network): loss MSE (or MAE); metrics MSE and
  MAE; score ``1 / MSE``. Why not ``1 / (1 + MSE)`` or R²: both saturate near a good
  fit, so a 95% threshold would accept an MSE a hundred times worse (from 1e-4 to
  1e-2, ``1 / (1 + MSE)`` falls by 1%). With ``1 / MSE`` the rule reads "keep a change
  if the eval MSE grows by at most a factor 1 / threshold", whatever the targets'
  scale. (An MSE of exactly 0 gives an infinite score; it is clipped at 1e-30.)
* ``reconstruction`` (thesis 003's MNIST autoencoder, 2.7.2): images -> the same
  images. Loss, metrics and score as ``regression``; its picture shows input,
  output and their difference.

`score` is computed from the eval split's *mean* metrics (for regression the mean
MSE, not a mean of per-example 1/MSE).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import optax

from jaxshrink.core import metrics


class SummaryMetric(NamedTuple):
    """An eval metric the end-of-run summary prints, trained -> minimized:
    ``f"  {label} {trained:{format}} -> {minimized:{format}}"``."""

    key: str  # a key of the task's `metrics`
    label: str
    format: str  # a format spec, e.g. '.4g'


class Task(NamedTuple):
    """The task-specific pieces of a run."""

    name: str
    loss: Callable  # (outputs, targets) -> scalar training loss
    metrics: Callable  # (outputs, targets) -> {name: (batch,) per-example values}
    score: Callable  # {name: eval mean} -> scalar; higher is better, positive
    score_label: str  # how the score is named in logs and pictures
    # How a few examples are pictured: a name in `jaxshrink.report.pictures.TASK_PICTURES`
    # (training never draws, so a task names its picture and never imports matplotlib).
    picture: str
    losses: tuple[str, ...]  # allowed `train.loss` values (the first is the default)
    # The metrics the run's summary prints beside the score.
    summary: tuple[SummaryMetric, ...] = ()


def _per_image(fn):
    return lambda out, y: jnp.mean(fn(out, y), axis=tuple(range(1, out.ndim)))


def _edge_metrics(out, y):
    return {
        "f1": metrics.f1_score_per_image(out, y),
        "mae": _per_image(lambda o, t: jnp.abs(o - t))(out, y),
        "mse": _per_image(lambda o, t: jnp.square(o - t))(out, y),
        "uiqi": metrics.uiqi_per_image(out, y),
    }


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of integer labels."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _class_metrics(logits, labels):
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return {
        "accuracy": correct,
        "top1_error": 1.0 - correct,
        "cross_entropy": optax.softmax_cross_entropy_with_integer_labels(logits, labels),
    }


def mean_squared_error(out, y):
    """MSE of any shapes (the edge task's `metrics.mse` wants NHWC images)."""
    return jnp.mean(jnp.square(out - y))


def mean_absolute_error(out, y):
    return jnp.mean(jnp.abs(out - y))


def _regression_metrics(out, y):
    return {
        "mse": _per_image(lambda o, t: jnp.square(o - t))(out, y),
        "mae": _per_image(lambda o, t: jnp.abs(o - t))(out, y),
    }


def inverse_mse(means):
    return 1.0 / jnp.maximum(means["mse"], 1e-30)


TASKS: dict[str, Task] = {
    "edges": Task(
        name="edges",
        loss=metrics.mse,  # replaced by `train.loss` in `get_task`
        metrics=_edge_metrics,
        score=lambda means: means["f1"],
        score_label="F1",
        picture="triptychs",
        losses=("mse", "mae", "f1"),
        summary=(SummaryMetric("mse", "eval MSE", ".4g"),),
    ),
    "classification": Task(
        name="classification",
        loss=cross_entropy,
        metrics=_class_metrics,
        score=lambda means: means["accuracy"],
        score_label="accuracy",
        picture="labelled",
        losses=("cross_entropy",),
        summary=(SummaryMetric("top1_error", "top-1 error", ".2%"),),
    ),
    "regression": Task(
        name="regression",
        loss=mean_squared_error,
        metrics=_regression_metrics,
        score=inverse_mse,
        score_label="1/MSE",
        picture="scatter",
        losses=("mse", "mae"),
        summary=(SummaryMetric("mse", "eval MSE", ".4g"),),
    ),
}
TASKS["reconstruction"] = TASKS["regression"]._replace(
    name="reconstruction", picture="reconstructions"
)

# (task, `train.loss`) -> loss function
LOSSES: dict[tuple[str, str], Callable] = {
    ("edges", "mse"): metrics.mse,
    ("edges", "mae"): metrics.mae,
    ("edges", "f1"): metrics.f1_loss,
    ("classification", "cross_entropy"): cross_entropy,
    ("regression", "mse"): mean_squared_error,
    ("regression", "mae"): mean_absolute_error,
    ("reconstruction", "mse"): mean_squared_error,
    ("reconstruction", "mae"): mean_absolute_error,
}


def get_task(name: str, loss: str | None = None) -> Task:
    """The task `name` training with `loss` (None: the task's default loss)."""
    task = TASKS[name]
    return task._replace(loss=LOSSES[(name, loss or task.losses[0])])
