"""Pictures for classifiers and for the fully connected summation network (thesis 3.6).

Seed thesis "004" (section 3.6) judges a shrunk classifier by three pictures, and its
section 4.2 compares runs of different sizes by their loss curves; the summation
experiment (a 2-1000-1 dense network that learns ``x1 + x2``) is judged by which
hidden units survive and what they compute. This module draws those pictures from
plain NumPy arrays (no model code):

* `save_confusion_matrix`: every cell shows its count and is coloured by
  `normalised_confusion`. 004's way (3.6.3, `normalize='predicted'`): rows are the
  predicted classes, columns the true ones ("a one is added to the matrix at
  M(y_hat, y_i)"), each row divided by its total, so the diagonal is each class's
  precision. `'true'`: rows are the true classes, each divided by its total, the
  diagonal the recall; `'none'`: rows true, colour the count over the largest. The
  title gives the overall accuracy. `confusion_matrix` computes the counts.
* `save_first_layer_filters`: one cell per first-layer unit on a near-square grid,
  the unit index above it. Colour images (3 input channels) are drawn as RGB after
  normalising each filter on its own, ``w' = (w - min) / (max - min)`` (004, 3.6),
  so the picture shows the *relative* differences inside a filter (edges, colour
  blobs) whatever its overall magnitude. Grayscale filters (1 input channel) use
  the signed red/green code of `visualize.signed_rgb` (negative red, positive
  green, black zero), scaled per filter by its largest |weight|. Removed units are
  faded to grey and crossed, as in `visualize.save_masks`.
* `save_accuracy_curves`: the training and validation accuracy of one run or of
  several overlaid (004's Figures 4.1b, 4.5, 4.9, 4.13).
* `save_normalised_loss`: two panels, (a) the raw training loss of every run and
  (b) each curve divided by its own first value (004, 4.2: "dividing each data
  point by the first loss value"). Networks of different size start from
  different losses; after the division every curve starts at 1, so panel (b)
  compares how fast and how far each one learns. `normalise_curve` is the division.
* `save_unit_weights`: the surviving hidden units of a one-hidden-layer dense
  network. Left, one dot per kept unit: its two input weights (x = w1, y = w2,
  with the diagonal w1 = w2 that summation favours), or for a network with other
  than two inputs its input-weight L2 norm against its bias; the dot's colour is
  its output weight on a diverging scale centred on zero. Right, the kept units'
  output-weight magnitudes sorted from largest to smallest, which shows how many
  units actually carry the result. Removed units are not drawn.

As in `visualize`, everything is drawn on a `matplotlib.figure.Figure` with the Agg
canvas, never through pyplot, so the same inputs give the same bytes; every file is
written through `files.atomic_path`, so an error leaves no file behind, and every
function returns the path it wrote.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import Normalize

from jaxshrink.core import metrics
from jaxshrink.report.pictures import (
    _OFF_COLOR,
    _bare,
    _cross,
    _grey_out,
    _new_figure,
    _save,
    signed_rgb,
)

__all__ = [
    "confusion_matrix",
    "normalise_curve",
    "normalised_confusion",
    "save_accuracy_curves",
    "save_confusion_matrix",
    "save_first_layer_filters",
    "save_normalised_loss",
    "save_unit_weights",
]

_MAX_CELL_TEXT = 40  # confusion matrices with more classes omit the per-cell counts


# -------------------------------------------------------------------- confusion matrix


def _class_ids(name: str, values, num_classes: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class ids, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name}: class ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"{name}: class id {int(arr[bad][0])} outside [0, {num_classes}) "
            f"({int(bad.sum())} such values)"
        )
    return arr


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
      labels: (N,) integer true classes in ``[0, num_classes)``.
      predictions: (N,) integer predicted classes in ``[0, num_classes)``.
      num_classes: the number of classes (classes that never occur get zero rows
        and columns).

    Returns:
      ``(num_classes, num_classes)`` int64 array; ``[i, j]`` is the number of
      examples of true class ``i`` predicted as ``j``, so row ``i`` sums to the
      number of examples of class ``i`` and the trace is the number correct.

    Example:
      >>> confusion_matrix([0, 1, 1], [0, 1, 0], 3).tolist()
      [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    """
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    labels = _class_ids("labels", labels, num_classes)
    predictions = _class_ids("predictions", predictions, num_classes)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels {labels.shape} and predictions {predictions.shape} differ in length"
        )
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


NORMALIZATIONS = metrics.CONFUSION_NORMALIZATIONS
_AXES = {  # normalize -> (rows, columns, what the colour is)
    "predicted": ("predicted", "true", "fraction of the predicted class (diagonal = precision)"),
    "true": ("true", "predicted", "fraction of the true class (diagonal = recall)"),
    "none": ("true", "predicted", "count / largest count"),
}


def normalised_confusion(counts: np.ndarray, normalize: str = "predicted"):
    """The matrix as drawn from `confusion_matrix`'s counts (rows true, columns predicted).

    Returns ``(cells, colour)``: `cells` the counts in the drawn orientation and
    `colour` their fractions. 'predicted' (thesis 004, 3.6.3): rows are the predicted
    classes, each row divided by its total (a class never predicted has a zero row);
    'true': rows the true classes, each divided by its total; 'none': the counts over
    the largest one.

    Example:
      >>> counts = np.array([[3, 1], [2, 2]])  # true 0: 3 right, 1 taken for a 1
      >>> normalised_confusion(counts, "predicted")[1].tolist()  # rows: predicted 0, 1
      [[0.6, 0.4], [0.3333333333333333, 0.6666666666666666]]
    """
    if normalize not in _AXES:
        raise ValueError(f"normalize: {normalize!r}; one of {NORMALIZATIONS}")
    counts = np.asarray(counts)
    cells = counts.T if normalize == "predicted" else counts
    if normalize == "none":
        top = cells.max()
        return cells, cells / top if top else np.zeros(cells.shape)
    totals = cells.sum(axis=1, keepdims=True)
    return cells, np.divide(cells, totals, out=np.zeros(cells.shape), where=totals > 0)


def save_confusion_matrix(
    path: str | os.PathLike[str],
    labels,
    predictions,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    title: str = "",
    normalize: str = "predicted",
) -> str:
    """Draws the confusion matrix: counts in the cells, colour = their fraction.

    `normalize` (see `normalised_confusion`): 'predicted' (004's: rows predicted,
    columns true, each row divided by its total), 'true' (rows true, divided by
    their totals) or 'none'. First class top left; colour white 0 to dark blue 1;
    the count is written in every cell (for at most 40 classes). The title ends with
    the overall accuracy.

    Args:
      path: the image file to write (PNG unless the suffix says otherwise).
      labels, predictions: (N,) integer classes, see `confusion_matrix`.
      num_classes: the number of classes.
      class_names: ``num_classes`` tick labels; defaults to the class indices.
      title: first line of the title.
      normalize: 'predicted', 'true' or 'none'.

    Returns:
      `path`, as a string.
    """
    counts, fraction = normalised_confusion(
        confusion_matrix(labels, predictions, num_classes), normalize
    )
    rows, columns, colour_label = _AXES[normalize]
    n = counts.shape[0]
    names = _class_names(class_names, n)
    longest = max(len(name) for name in names)
    side = float(np.clip(0.42 * n + 0.1 * min(longest, 20) + 2.2, 4.0, 20.0))
    fig = _new_figure(side + 1.2, side, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label(colour_label)
    if n <= _MAX_CELL_TEXT:
        _write_counts(ax, counts, fraction)
    _class_ticks(ax, names, rows, columns)
    accuracy = _accuracy_text(counts)
    ax.set_title(f"{title}\n{accuracy}" if title else accuracy)
    return _save(fig, path)


def _class_names(class_names: Sequence[str] | None, n: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    names = [str(name) for name in class_names]
    if len(names) != n:
        raise ValueError(f"{len(names)} class_names for {n} classes")
    return names


def _accuracy_text(counts: np.ndarray) -> str:
    total, correct = int(counts.sum()), int(np.trace(counts))
    if not total:
        return "accuracy n/a (0 examples)"
    return f"accuracy {correct / total:.1%} ({correct}/{total})"


def _write_counts(ax, counts: np.ndarray, fraction: np.ndarray) -> None:
    """Every cell's count, white on the dark cells."""
    n = counts.shape[0]
    fontsize = float(np.clip(12.0 - 0.25 * n, 6.0, 10.0))
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(counts[i, j])),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if fraction[i, j] > 0.5 else "black",
            )


def _class_ticks(ax, names: list[str], rows: str = "true", columns: str = "predicted") -> None:
    """The class names on both axes (rotated when many or long), and the axis labels."""
    n, longest = len(names), max(len(name) for name in names)
    tick_size = float(np.clip(11.0 - 0.1 * n, 5.0, 10.0))
    rotate = n > 10 or longest > 3
    ax.set_xticks(
        range(n),
        names,
        rotation=45 if rotate else 0,
        ha="right" if rotate else "center",
        rotation_mode="anchor",
        fontsize=tick_size,
    )
    ax.set_yticks(range(n), names, fontsize=tick_size)
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    ax.tick_params(length=0)


# ------------------------------------------------------------------ first-layer filters


def _filter_cell(weights: np.ndarray) -> np.ndarray:
    """One (k, k, c_in) filter as an RGB image in [0, 1] (see the module docstring)."""
    weights = np.where(np.isfinite(weights), weights, 0.0)  # non-finite drawn as zero
    if weights.shape[-1] == 1:
        return signed_rgb(weights[..., 0])  # per-filter scale: its max |w|
    low, high = float(weights.min()), float(weights.max())
    if high > low:
        return (weights - low) / (high - low)
    return np.full(weights.shape, 0.5)  # a constant filter: no relative differences


def save_first_layer_filters(
    path: str | os.PathLike[str], kernel, keep=None, title: str = ""
) -> str:
    """Draws the first layer's filters, one cell per unit (004, section 3.6).

    Cells lie on a near-square grid, row by row in unit order, with the unit index
    above each. With 3 input channels a cell is the filter as an RGB image, each
    filter min-max normalised on its own, ``w' = (w - min) / (max - min)`` (a
    constant filter is mid-grey). With 1 input channel a cell uses
    `visualize.signed_rgb` (negative red, positive green, black zero) scaled by that
    filter's largest |weight|. Units with ``keep`` False are faded to grey, crossed
    and labelled "off". Non-finite weights are drawn as zero.

    Args:
      path: the image file to write (PNG unless the suffix says otherwise).
      kernel: (k, k, c_in, units) first-layer weights (HWIO), ``c_in`` 1 or 3.
      keep: (units,) booleans, True = the unit survives; None keeps all.
      title: first line of the title (the colour code follows it).

    Returns:
      `path`, as a string.
    """
    kernel, keep = _filters_and_keep(kernel, keep)
    kh, kw, c_in, units = kernel.shape
    cols = math.ceil(math.sqrt(units))
    rows = math.ceil(units / cols)
    cell = float(np.clip(9.0 / cols, 0.55, 1.1))  # inches per cell, labels included
    code = (
        "RGB, each filter min-max normalised"
        if c_in == 3
        else "red < 0 < green, each filter scaled by its max |w|"
    )
    head = f"{title}\n" if title else ""
    kept = int(keep.sum())
    fig = _new_figure(
        max(cols * cell * kw / max(kh, kw) + 0.3, 4.5),
        rows * cell + (0.9 if title else 0.7),
        layout="constrained",
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    label_size = float(np.clip(4.0 + 5.0 * cell, 6.0, 9.0))
    for index, ax in enumerate(axes.flat):
        if index >= units:
            ax.set_axis_off()
        else:
            _draw_filter(ax, kernel[..., index], index, bool(keep[index]), label_size)
    fig.suptitle(f"{head}{kept} of {units} units kept\n{code}", fontsize=9)
    return _save(fig, path)


def _filters_and_keep(kernel, keep) -> tuple[np.ndarray, np.ndarray]:
    """`save_first_layer_filters`'s arguments checked, as float64 and bool arrays."""
    kernel = np.asarray(kernel, np.float64)
    if kernel.ndim != 4 or kernel.shape[2] not in (1, 3) or kernel.shape[3] < 1:
        raise ValueError(
            f"kernel shape {kernel.shape}: expected (k, k, c_in, units) with c_in 1 or 3 "
            "and at least one unit"
        )
    kh, kw, _, units = kernel.shape
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel shape {kernel.shape}: empty filters")
    keep = np.ones(units, bool) if keep is None else np.asarray(keep, bool)
    if keep.shape != (units,):
        raise ValueError(f"keep shape {keep.shape}, expected ({units},) for kernel {kernel.shape}")
    return kernel, keep


def _draw_filter(ax, weights: np.ndarray, index: int, on: bool, label_size: float) -> None:
    """One unit's cell: its filter, or the faded, crossed filter of a removed unit."""
    rgb = _filter_cell(weights)
    ax.imshow(rgb if on else _grey_out(rgb), interpolation="nearest")
    _bare(ax)
    if on:
        ax.set_title(str(index), fontsize=label_size, pad=2)
    else:
        _cross(ax)
        ax.set_title(f"{index} off", fontsize=label_size, pad=2, color=_OFF_COLOR)
        for spine in ax.spines.values():
            spine.set_color(_OFF_COLOR)


# ------------------------------------------------------------------------ loss curves


def save_accuracy_curves(
    path: str | os.PathLike[str],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float] | None, Sequence[float]]],
    title: str = "",
    eval_label: str = "validation",
) -> str:
    """Train and validation accuracy against step (004, 3.6.2 and Figures 4.1b, 4.5),
    one colour per run: solid the training accuracy, dashed the validation one.

    Args:
      path: the image file to write.
      curves: ``{name: (steps, train_accuracy or None, eval_accuracy)}``.
      title: figure title.
      eval_label: what the second curve is scored on ('validation', or 'eval' for a
        run without a validation split).

    Returns:
      `path`, as a string.
    """
    if not curves:
        raise ValueError("no accuracy curve to draw")
    fig = _new_figure(7.0, 4.2, layout="constrained")
    ax = fig.add_subplot()
    for i, (name, (steps, train_acc, eval_acc)) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        steps = np.asarray(steps, float)
        prefix = f"{name}: " if len(curves) > 1 else ""
        for values, style, what in ((train_acc, "-", "train"), (eval_acc, "--", eval_label)):
            if values is None:
                continue
            values = np.asarray(values, float)
            if values.shape != steps.shape:
                raise ValueError(f"{name}: {what} accuracy {values.shape} vs steps {steps.shape}")
            ax.plot(steps, values, style, color=colour, lw=1.3, marker="o", ms=3,
                    label=f"{prefix}{what}")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def normalise_curve(losses) -> np.ndarray:
    """The loss curve divided by its first value (004, section 4.2), as float64.

    Raises:
      ValueError: if the curve is not 1-D, is empty, or its first value is 0 or
        not finite.

    Example:
      >>> normalise_curve([4.0, 2.0, 1.0]).tolist()
      [1.0, 0.5, 0.25]
    """
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 1:
        raise ValueError(f"a loss curve must be 1-D, got shape {losses.shape}")
    if losses.size == 0:
        raise ValueError("cannot normalise an empty loss curve")
    first = float(losses[0])
    if not math.isfinite(first) or first == 0.0:
        raise ValueError(f"cannot normalise a loss curve whose first value is {first!r}")
    return losses / first


def save_normalised_loss(
    path: str | os.PathLike[str],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str = "",
) -> str:
    """Plots the raw loss curves (a) and the same curves divided by their first value (b).

    Both panels share the step axis and the legend (the curve names, in the order
    of `curves`); a loss axis is logarithmic when all its values are positive.
    Panel (b) has a dotted line at 1, where every normalised curve starts.

    Args:
      path: the image file to write (PNG unless the suffix says otherwise).
      curves: ``{name: (steps, losses)}``, equally long 1-D sequences per curve.
      title: figure title.

    Returns:
      `path`, as a string.

    Raises:
      ValueError: if there is no curve, a curve is empty, its steps and losses
        differ in shape, or its first loss is 0 or not finite (nothing is written).
    """
    data = _loss_curves(curves)
    fig = _new_figure(11.0, 4.4, layout="constrained")
    raw_ax, norm_ax = fig.subplots(1, 2, sharex=True)
    for name, steps, losses, normalised in data:
        raw_ax.plot(steps, losses, lw=1.2, label=name)
        norm_ax.plot(steps, normalised, lw=1.2, label=name)
    norm_ax.axhline(1.0, color="0.5", ls=":", lw=1.0)
    for ax, values, label, panel in (
        (raw_ax, [d[2] for d in data], "loss", "(a) loss"),
        (norm_ax, [d[3] for d in data], "loss / first loss", "(b) loss divided by its first value"),
    ):
        finite = np.concatenate(values)
        finite = finite[np.isfinite(finite)]
        if finite.size and np.all(finite > 0):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(panel, fontsize=10)
        ax.grid(True, alpha=0.3)
    handles, names = raw_ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _loss_curves(curves) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``[(name, steps, losses, normalised losses)]``, checked (see `save_normalised_loss`)."""
    if not curves:
        raise ValueError("save_normalised_loss: no curves given")
    data = []
    for name, pair in curves.items():
        steps, losses = (np.asarray(a, np.float64) for a in pair)
        if steps.shape != losses.shape or losses.ndim != 1:
            raise ValueError(
                f"curve {name!r}: steps {steps.shape} and losses {losses.shape} "
                "must be equally long 1-D sequences"
            )
        try:
            normalised = normalise_curve(losses)
        except ValueError as error:
            raise ValueError(f"curve {name!r}: {error}") from None
        data.append((str(name), steps, losses, normalised))
    return data


# ------------------------------------------------------------------------ unit weights


def save_unit_weights(
    path: str | os.PathLike[str], w_in, bias, w_out, keep, title: str = ""
) -> str:
    """Draws the surviving hidden units of a one-hidden-layer dense network.

    Left: one dot per kept unit. With two inputs (the 2-1000-1 summation network)
    x and y are the unit's two input weights, on the same range with the origin
    (+) in view, and the dashed diagonal w1 = w2 marks units that weigh both
    inputs equally, as ``x1 + x2`` needs; with any
    other number of inputs x is the L2 norm of the unit's input weights and y its
    bias. The colour is the unit's output weight (for several outputs, the one of
    largest magnitude, sign kept) on a blue (negative) to red (positive) scale
    centred on zero. With at most 12 kept units each dot is labelled with its index.
    Right: the magnitudes of the kept units' output weights (L2 norm over the
    outputs), largest first. The title line says "k of N units kept". Removed
    units are not drawn; if none is kept, the figure holds only that text.

    Args:
      path: the image file to write (PNG unless the suffix says otherwise).
      w_in: (n_in, units) input weights.
      bias: (units,) hidden biases.
      w_out: (units, n_out) output weights, or (units,) for one output.
      keep: (units,) booleans, True = the unit survives.
      title: first line of the title.

    Returns:
      `path`, as a string.
    """
    w_in, bias, w_out, keep = _dense_arrays(w_in, bias, w_out, keep)
    n_in, units = w_in.shape
    kept = np.flatnonzero(keep)
    k = int(kept.size)
    summary = f"{k} of {units} units kept"
    heading = f"{title}\n{summary}" if title else summary
    if k == 0:
        fig = _new_figure(6.0, 1.6)
        fig.text(0.5, 0.5, heading, ha="center", va="center", fontsize=12)
        return _save(fig, path)

    out = w_out[kept]
    if out.shape[1] == 1:
        colour, colour_label = out[:, 0], "output weight"
    else:
        strongest = np.argmax(np.abs(out), axis=1)
        colour = out[np.arange(k), strongest]
        colour_label = "largest-magnitude output weight"
    if n_in == 2:
        x, y = w_in[0, kept], w_in[1, kept]
        x_label, y_label = "input weight 1 (w1)", "input weight 2 (w2)"
    else:
        x, y = np.linalg.norm(w_in[:, kept], axis=0), bias[kept]
        x_label, y_label = "input-weight L2 norm", "bias"

    fig = _new_figure(11.0, 4.8, layout="constrained")
    fig.get_layout_engine().set(wspace=0.08)  # the colorbar's label apart from the bars'
    scatter_ax, bar_ax = fig.subplots(1, 2, width_ratios=(1.15, 1.0))
    _draw_unit_scatter(fig, scatter_ax, kept, x, y, colour, colour_label, square=n_in == 2)
    scatter_ax.set_xlabel(x_label)
    scatter_ax.set_ylabel(y_label)
    scatter_ax.grid(True, alpha=0.3)
    scatter_ax.set_title("kept units", fontsize=10)
    _draw_output_bars(bar_ax, kept, np.linalg.norm(out, axis=1), single=out.shape[1] == 1)
    fig.suptitle(heading)
    return _save(fig, path)


def _dense_arrays(w_in, bias, w_out, keep) -> tuple[np.ndarray, ...]:
    """`save_unit_weights`'s arguments checked, as float64 arrays and a bool mask;
    `w_out` always (units, n_out)."""
    w_in = np.asarray(w_in, np.float64)
    bias = np.asarray(bias, np.float64)
    w_out = np.asarray(w_out, np.float64)
    if w_in.ndim != 2:
        raise ValueError(f"w_in shape {w_in.shape}, expected (n_in, units)")
    units = w_in.shape[1]
    if w_out.ndim == 1:
        w_out = w_out[:, None]
    if bias.shape != (units,):
        raise ValueError(f"bias shape {bias.shape}, expected ({units},) for w_in {w_in.shape}")
    if w_out.ndim != 2 or w_out.shape[0] != units or w_out.shape[1] < 1:
        raise ValueError(f"w_out shape {w_out.shape}, expected ({units}, n_out)")
    keep = np.asarray(keep, bool)
    if keep.shape != (units,):
        raise ValueError(f"keep shape {keep.shape}, expected ({units},)")
    return w_in, bias, w_out, keep


def _draw_unit_scatter(fig, ax, kept, x, y, colour, colour_label: str, square: bool) -> None:
    """One dot per kept unit coloured by its output weight; with `square` (two inputs)
    the same range on both axes, the diagonal w1 = w2 and the origin."""
    k = int(kept.size)
    finite = colour[np.isfinite(colour)]
    limit = float(np.max(np.abs(finite))) if finite.size else 0.0
    limit = limit if limit > 0 else 1.0
    points = ax.scatter(
        x,
        y,
        c=colour,
        cmap="RdBu_r",
        norm=Normalize(-limit, limit),
        s=36 if k <= 200 else 14,
        edgecolors="0.2",
        linewidths=0.5,
        zorder=3,
    )
    fig.colorbar(points, ax=ax, label=colour_label)
    if square:
        # Same square range on both axes, origin included: the diagonal runs at 45
        # degrees and a lone unit is not drawn in a corner.
        ax.axline((0.0, 0.0), slope=1.0, color="0.5", ls="--", lw=1.0, zorder=1)
        ax.plot([0.0], [0.0], "+", color="0.5", ms=8, zorder=2)
        both = np.concatenate([x, y, [0.0]])
        both = both[np.isfinite(both)]
        low, high = float(both.min()), float(both.max())
        pad = 0.12 * (high - low) if high > low else 1.0
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.margins(0.12)
    if k <= 12:
        for unit, xi, yi in zip(kept, x, y):
            if np.isfinite(xi) and np.isfinite(yi):
                ax.annotate(
                    str(int(unit)), (xi, yi), xytext=(5, 5), textcoords="offset points", fontsize=8
                )


def _draw_output_bars(ax, kept, magnitude, single: bool) -> None:
    """The kept units' output-weight magnitudes, largest first."""
    k = int(kept.size)
    order = np.argsort(-np.where(np.isfinite(magnitude), magnitude, -np.inf), kind="stable")
    ax.bar(np.arange(k), magnitude[order], width=0.8, color="0.35")
    if k <= 30:
        ax.set_xticks(
            np.arange(k),
            [str(int(u)) for u in kept[order]],
            fontsize=8,
            rotation=90 if k > 15 else 0,
        )
        ax.set_xlabel("unit")
    else:
        ax.set_xlabel("rank among kept units")
    ax.set_xlim(-0.7, k - 0.3)
    ax.set_ylabel("|output weight|" if single else "output-weight L2 norm")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("output-weight magnitude, largest first", fontsize=10)
