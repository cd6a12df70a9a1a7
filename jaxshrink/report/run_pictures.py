"""The pictures of one finished run that fit its model and its task.

`draw_run` picks them from the model's spec and the task, so it works for every
registered model and for a researcher's own:

* an image FCN (every layer a 2-D convolution of at most 16 units; thesis 001, 3.2):
  its kernels after training and after minimization, and what every filter outputs for
  one eval image after a few steps, after training and after minimization (Figure 3.4);
* a classifier (thesis 004, 3.6): the confusion matrix of the test set (of the eval
  split without a validation split), normalised by predicted class as 004 did, the
  training and validation accuracy during training and, for a convolution on gray or
  RGB images, the first layer's filters of the trained network and of the minimized;
* a one-hidden-layer dense regression (the summation network): its surviving units;
* every run: the initial training's curve (and a classifier's normalised loss), the
  minimization rounds and the kept units.

Nothing here trains: the network "after a few steps" is the one the training stage
kept at `early_step` (`runtime.stages.train_stage`'s `keep_step`), `job.early`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from jaxshrink import data
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.results import RoundEntry
from jaxshrink.report import pictures, plots

# "After a few steps" (thesis Figure 3.4): the first network of the filter outputs.
EARLY_STEPS = 100

PathFn = Callable[[str], str]  # a picture's file name -> its path, recording the name


def _is_image_fcn(model_spec, task: str) -> bool:
    """Every layer a 2-D convolution with few units, mapping images to images: the
    edge FCN's pictures fit (a classifier's outputs are not images)."""
    return (
        task != "classification"
        and all(layer.kind == "conv" and layer.units <= 16 for layer in model_spec.layers)
        and len(model_spec.input_shape) == 3
    )


def early_step(config: ml_collections.ConfigDict, model_spec) -> int | None:
    """The step whose network `draw_run` draws as "after a few steps": `EARLY_STEPS`, or
    the whole initial training if shorter; None when the run's pictures need none."""
    if not _is_image_fcn(model_spec, config.task):
        return None
    return min(EARLY_STEPS, int(config.train.initial_steps))


def draw_run(job, trained, final, rounds: Sequence[RoundEntry], baseline: float) -> list[str]:
    """Writes the pictures of one run that fit its model and task into its workdir.

    Args:
      job: the run's `Job`; its `early` (the network after a few steps) and `curve`
        (the initial training's losses and scores) are drawn when set.
      trained, final: the run before and after minimization (no batch axis).
      rounds: the `RoundEntry` of every round that tested a change.
      baseline: the trained network's score, where the rounds start.

    Returns:
      The names of the files written, in the order drawn.
    """
    config, model_spec = job.config, job.model.spec
    names = []

    def path(name: str) -> str:
        names.append(name)
        return os.path.join(job.workdir, name)

    if _is_image_fcn(model_spec, job.task.name):  # thesis 001, 3.2
        _draw_filters(job, trained, final, path)
    if job.task.name == "classification":  # thesis 004, 3.6
        _draw_classifier(job, trained, final, path)
    if _is_dense_regression(job.task.name, model_spec):
        _draw_unit_weights(model_spec, final, path)
    if job.curve and job.curve["step"]:
        _draw_curves(job, path)
    if config.minimize.enabled:
        pictures.save_timeline(
            path("timeline.png"),
            [r.to_json() for r in rounds],
            baseline,
            threshold=float(config.minimize.threshold),
            score_label=job.task.score_label,
        )
    pictures.save_kept_matrix(
        path("kept.png"), masks_lib.to_rows(model_spec, final.masks), model_spec.names
    )
    return names


def _draw_filters(job, trained, final, path: PathFn) -> None:
    """The kernels after training and after minimization, and the filter outputs."""
    model = job.model
    pictures.save_masks(
        path("masks_trained.png"), model.spec, trained.params, trained.masks, "trained"
    )
    pictures.save_masks(
        path("masks_minimized.png"), model.spec, final.params, final.masks, "minimized"
    )
    stages = [
        (f"after training ({int(trained.step)} steps)", trained.params, trained.masks),
        (f"minimized ({int(final.step)} steps)", final.params, final.masks),
    ]
    if job.early is not None:  # none in a workdir trained before it was kept
        stages.insert(0, (f"after {job.early.step} steps", job.early.params, job.early.masks))
    pictures.save_filter_outputs_stages(
        path("filter_outputs.png"), model, stages, data.decode(job.dataset.eval.inputs[:1])[0]
    )


def _draw_classifier(job, trained, final, path: PathFn) -> None:
    """The confusion matrix of the minimized classifier on the test set (on the eval
    split without one), normalised as `output.confusion_normalize` says (004: by
    predicted class), and the first layer's filters of the trained network, before
    any pruning (004, Figures 4.2, 4.6), and after the minimization."""
    model_spec = job.model.spec
    split, name = (job.dataset.test, "test set") if job.dataset.test else (job.dataset.eval, "eval")
    x, labels = split.inputs, np.asarray(split.targets)
    predicted = np.argmax(job.predict(final, x), axis=-1)
    plots.save_confusion_matrix(
        path("confusion_matrix.png"),
        labels,
        predicted,
        model_spec.layers[-1].units,
        title=f"minimized network, {name}",
        normalize=job.config.output.confusion_normalize,
    )
    first = model_spec.layers[0]
    if first.kind == "conv" and first.in_features in (1, 3):
        for name, run, when in (
            ("first_layer_filters.png", trained, f"trained {int(trained.step)} steps"),
            ("first_layer_filters_minimized.png", final, "after minimization"),
        ):
            plots.save_first_layer_filters(
                path(name),
                np.asarray(spec_lib.get(run.params, first.kernel)),
                np.asarray(run.masks[first.name]),
                title=f"{first.name}, {when}",
            )


def _is_dense_regression(task: str, model_spec) -> bool:
    """A regression by one hidden dense layer (the summation network)."""
    layers = model_spec.layers
    return task == "regression" and len(layers) == 2 and all(x.kind == "dense" for x in layers)


def _draw_unit_weights(model_spec, final, path: PathFn) -> None:
    hidden, output = model_spec.layers
    layer_params = final.params[hidden.name]
    plots.save_unit_weights(
        path("unit_weights.png"),
        np.asarray(layer_params["kernel"]),
        np.asarray(layer_params.get("bias", np.zeros(hidden.units))),
        np.asarray(spec_lib.get(final.params, output.kernel)),
        np.asarray(final.masks[hidden.name]),
        title="surviving hidden units",
    )


def _draw_curves(job, path: PathFn) -> None:
    """The initial training's loss and score, and a classifier's normalised loss."""
    c, config = job.curve, job.config
    losses = [v[0] for v in c["loss"]]
    pictures.save_training_curve(
        path("training_curve.png"),
        c["step"],
        losses,
        c["eval_step"],
        [v[0] for v in c["eval_score"]],
        title=f"initial training ({config.train.loss or job.task.losses[0]} loss)",
        score_label=job.task.score_label,
    )
    if job.task.name == "classification" and losses[0] > 0:
        plots.save_normalised_loss(
            path("loss_normalised.png"), {"training loss": (c["step"], losses)}
        )
    if job.task.name == "classification" and c.get("train_score"):
        eval_label = "validation" if job.dataset.test is not None else "eval"
        plots.save_accuracy_curves(
            path("accuracy.png"),
            {"run": (c["eval_step"], [v[0] for v in c["train_score"]],
                     [v[0] for v in c["eval_score"]])},  # fmt: skip
            title="initial training: accuracy",
            eval_label=eval_label,
        )
