"""Pictures a person can open: triptychs, masks, intermediate outputs, curves (thesis 3.2).

Thesis section 3.2 prints "the masks and snapshots of the inputs at each stage as they
travel through the network" to image files; values that can be negative (kernels) are
drawn "red, positive values ... green and color intensity represents absolute value".
This module draws those pictures and the plots that summarise a run:

* `save_triptychs`: input / target / output per example (Figures 3.2 and 3.3); with
  `save_labelled`, `save_regression` and `save_reconstructions` one of the pictures a
  task names (`TASK_PICTURES`, looked up by `task_picture`).
* `save_masks`: every kernel of every layer in the red/green code (Figure 3.1).
* `save_filter_outputs`, `save_filter_outputs_stages`: what every filter outputs for
  one image, e.g. after a few steps and after convergence (Figure 3.4).
* `save_training_curve`, `save_timeline`, `save_kept_matrix`: the training loss and
  eval F1, the minimization rounds (kept or rolled back), and which filters survive.

Everything is drawn on a `matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so no global state or display is involved and the same inputs give the same
bytes. Every file goes through `files.atomic_path`: a failing draw leaves nothing
behind, and a reader never sees half a PNG. Grayscale images are shown on the
target's scale, [0, 1] clipped, so a resemblance between target and output is a real
one, not an artefact of rescaling each picture; intermediate outputs, which have no
natural scale, are stretched per panel instead (the panel's maximum is printed).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Rectangle

from jaxshrink.core import files
from jaxshrink.core import spec as spec_lib

__all__ = [
    "TASK_PICTURES",
    "layer_outputs",
    "save_filter_outputs",
    "save_filter_outputs_stages",
    "save_kept_matrix",
    "save_labelled",
    "save_masks",
    "save_reconstructions",
    "save_regression",
    "save_timeline",
    "save_training_curve",
    "save_triptychs",
    "signed_rgb",
    "task_picture",
]

_DPI = 100
_OFF_COLOR = "0.45"  # labels and crosses of disabled filters
_GAP_RGB = (1.0, 1.0, 1.0)  # separator between input channels inside a mask cell
_STRIP_MAX = 8  # input channels drawn in one line; more are tiled on a grid


# ---------------------------------------------------------------------------- helpers


def _new_figure(width: float, height: float, **kwargs) -> Figure:
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)  # headless, and independent of the pyplot backend
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> str:
    """Writes `fig` to `path` atomically; the format follows the suffix (PNG if none)."""
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=_DPI, format=_format(path))
    return os.fspath(path)


def _format(path: str | os.PathLike[str]) -> str:
    return os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _cross(ax) -> None:
    """Two diagonals over the whole axes: the mark of a disabled filter."""
    for ys in ((0, 1), (1, 0)):
        ax.plot((0, 1), ys, transform=ax.transAxes, color=_OFF_COLOR, lw=1.0)


def _mask_of(masks: Mapping | None, name: str, units: int) -> np.ndarray:
    if masks is None:
        return np.ones(units, bool)
    mask = np.asarray(masks[name], bool)
    if mask.shape != (units,):
        raise ValueError(f"masks[{name!r}]: shape {mask.shape}, expected ({units},)")
    return mask


def _row_label(layer, mask: np.ndarray, grouped: bool = False) -> str:
    """A layer's name, and "bypassed" where the layer passes its input on unchanged
    (a `bypass` layer with no unit alive: its crossed-out units are not zeros), or
    "branch removed" for an emptied branch of a plain module (`spec.ModelSpec.grouped`)."""
    if not layer.bypass or mask.any():
        return layer.name
    return f"{layer.name}\n{'branch removed' if grouped else 'bypassed'}"


def signed_rgb(values, scale: float | None = None) -> np.ndarray:
    """The thesis's colour code: negative red, positive green, intensity = |value|.

    Args:
      values: any real array.
      scale: the magnitude drawn at full intensity (larger ones saturate); defaults to
        ``max |values|``. A zero or non-finite scale draws everything black.

    Returns:
      ``values.shape + (3,)`` float array in [0, 1]: R = negative magnitude,
      G = positive magnitude, B = 0, so zero is black.

    Example:
      >>> signed_rgb(np.array([-1.0, 0.0, 0.5]), scale=1.0).tolist()
      [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]]
    """
    values = np.asarray(values, np.float64)
    if scale is None:
        scale = float(np.max(np.abs(values))) if values.size else 0.0
    scale = float(scale)
    rgb = np.zeros(values.shape + (3,))
    if scale > 0 and np.isfinite(scale):
        rgb[..., 0] = np.clip(-values / scale, 0.0, 1.0)
        rgb[..., 1] = np.clip(values / scale, 0.0, 1.0)
    return rgb


# ------------------------------------------------------------------ the forward pass


def _module_path(name: str) -> tuple[str, ...]:
    """The module a layer's name points to ('stem' for a group named 'stem#2')."""
    return tuple(name.split("#")[0].split("/"))


@functools.partial(jax.jit, static_argnums=0)
def _intermediates(model, params, state, x, masks):
    """The maskable layers' captured outputs for the batch `x`: one compiled program
    per model and shape, as the pictures call it for several networks."""
    return model.capture(params, state, masks, x, {_module_path(n) for n in model.spec.names})


def layer_outputs(
    model, params: dict, masks: dict | None, x, model_state: dict | None = None
) -> list[tuple[str, np.ndarray]]:
    """Every maskable layer's signed output before its activation, for one example.

    Read with Flax's `capture_intermediates` (the output of each layer's `__call__`),
    so it works for any `models.Model` and needs no second implementation of the
    forward pass. A disabled unit's values are zeroed, since that is what it passes
    on. The thesis draws these values (3.2, Figure 3.4), "the final output before
    activation" included.

    Args:
      model: the `models.Model`.
      params, masks: the network (masks None = all enabled).
      x: one example, e.g. (H, W, C) (an (H, W) image gets a channel axis).
      model_state: the model's batch-norm statistics, if it has any.

    Returns:
      ``[(layer name, (..., units) array)]`` in network order.
    """
    h = jnp.asarray(x, jnp.float32)
    if h.ndim == len(model.spec.input_shape) - 1:
        h = h[..., None]
    if h.shape != model.spec.input_shape:
        raise ValueError(
            f"x: expected one example of shape {model.spec.input_shape}, got {h.shape}"
        )
    masks = (
        masks
        if masks is not None
        else {layer.name: np.ones(layer.units, bool) for layer in model.spec.layers}
    )
    captured = _intermediates(model, params, dict(model_state or {}), h[None], masks)
    outputs = []
    for layer in model.spec.layers:
        value = np.asarray(captured[_module_path(layer.name)][0], np.float32)
        outputs.append((layer.name, value * _mask_of(masks, layer.name, layer.units)))
    return outputs


# ------------------------------------------------------------------------ triptychs


def save_triptychs(path: str, images, targets, outputs, title: str = "") -> str:
    """Writes a grid with one row per example: input, target, network output.

    Args:
      path: the PNG file to write (its folder is created).
      images, targets, outputs: (N, H, W, 1) arrays with values in [0, 1].
      title: figure title, e.g. the F1 score.

    Returns:
      `path`.
    """
    images, targets, outputs = (np.asarray(a)[..., 0] for a in (images, targets, outputs))
    n = images.shape[0]
    if targets.shape[0] != n or outputs.shape[0] != n:
        raise ValueError(
            f"triptychs: {n} images, {targets.shape[0]} targets, {outputs.shape[0]} outputs"
        )
    fig = _new_figure(7.5, 2.6 * n, layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for row in range(n):
        for col, (name, pic) in enumerate(
            (("input", images), ("target", targets), ("output", outputs))
        ):
            ax = axes[row, col]
            ax.imshow(np.clip(pic[row], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
            _bare(ax)
            if row == 0:
                ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def save_reconstructions(path: str, inputs, targets, outputs, title: str = "") -> str:
    """One row per example: input, reconstruction, and their signed difference.

    Args:
      path: the PNG file to write.
      inputs: unused (the targets are the images to reconstruct; kept for the
        tasks' common picture signature).
      targets, outputs: (N, H, W, 1) images, values in [0, 1].
      title: figure title, e.g. the MSE.
    """
    del inputs
    targets, outputs = (np.asarray(a, np.float32)[..., 0] for a in (targets, outputs))
    n = targets.shape[0]
    if outputs.shape != targets.shape:
        raise ValueError(f"reconstructions: targets {targets.shape}, outputs {outputs.shape}")
    diff = outputs - targets
    scale = max(float(np.max(np.abs(diff))), 1e-12)
    fig = _new_figure(7.5, 2.6 * n, layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for row in range(n):
        cells = (
            ("input", targets[row], dict(cmap="gray", vmin=0.0, vmax=1.0)),
            ("output", np.clip(outputs[row], 0.0, 1.0), dict(cmap="gray", vmin=0.0, vmax=1.0)),
            (
                f"output - input (±{scale:.2g})",
                diff[row],
                dict(cmap="RdBu_r", vmin=-scale, vmax=scale),
            ),
        )
        for col, (name, pic, style) in enumerate(cells):
            ax = axes[row, col]
            ax.imshow(pic, **style)
            _bare(ax)
            if row == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------- masks


def _mask_cell(kernel: np.ndarray, scale: float) -> np.ndarray:
    """One filter's (k, k, c_in) kernel as RGB, input channels side by side.

    Up to `_STRIP_MAX` input channels make one strip; more are tiled row by row on a
    near-square grid, so a wide network still gives a figure of readable width.
    """
    k, _, c_in = kernel.shape
    rgb = signed_rgb(kernel, scale)  # (k, k, c_in, 3)
    cols = c_in if c_in <= _STRIP_MAX else math.ceil(math.sqrt(c_in))
    rows = math.ceil(c_in / cols)
    cell = np.ones((rows * (k + 1) - 1, cols * (k + 1) - 1, 3)) * np.asarray(_GAP_RGB)
    for c in range(c_in):
        r, q = divmod(c, cols)
        cell[r * (k + 1) : r * (k + 1) + k, q * (k + 1) : q * (k + 1) + k] = rgb[:, :, c]
    return cell


def _grey_out(rgb: np.ndarray) -> np.ndarray:
    """A faded, colourless version of a cell: still readable, clearly not in use."""
    return 0.65 + 0.3 * rgb.mean(axis=-1, keepdims=True) * np.ones(3)


def save_masks(
    path: str, model_spec, params: dict, masks: dict | None = None, title: str | None = None
):
    """Draws every kernel of the network (thesis Figure 3.1).

    One row per layer, one cell per filter (output unit). A cell shows the filter's
    k x k kernel for each of its input channels *side by side* (left to right =
    input channel 0, 1, ..., separated by a white line), so a first-layer cell is
    one square and a later layer's cell is a strip (beyond 8 input channels they
    are tiled row by row on a near-square grid instead). Colours follow `signed_rgb`:
    negative red, positive green, black zero, intensity scaled by the largest
    |weight| of the layer (printed under the layer name), so cells of one row
    compare directly. Disabled filters (mask False) are faded to grey, crossed and
    labelled "off"; a layer bypassed with none alive (it passes its input on) is
    labelled "bypassed". Biases are not drawn. Pixels have the same size in every row.

    Args:
      path: the image file to write (PNG unless the suffix says otherwise).
      model_spec: the model's `spec.ModelSpec`; its convolutions with square
        kernels are drawn, other layers are left out.
      params: the params tree.
      masks: ``{layer: bool (units,)}``; None = all enabled.
      title: figure title.

    Returns:
      `path`.
    """
    rows = _mask_rows(model_spec, params, masks)
    if not rows:
        raise ValueError("save_masks: the model has no square 2-D convolution to draw")
    layout = _mask_layout(rows, title)
    fig = _new_figure(max(layout.width, 3.0), layout.height)
    fw, fh = fig.get_size_inches()
    y = fh - layout.top
    for row, row_h in zip(rows, layout.heights, strict=True):
        y -= row_h
        _draw_mask_row(fig, row, layout, y)
    if title:
        fig.suptitle(title, y=1 - 0.08 / fh, va="top")
    return _save(fig, path)


class _MaskRow(NamedTuple):
    """One layer's row of `save_masks`: its label, weight scale, cells and mask."""

    label: str
    scale: float
    cells: list[np.ndarray]
    mask: np.ndarray


def _mask_rows(model_spec, params: dict, masks: dict | None) -> list[_MaskRow]:
    """The rows of `save_masks`: the convolutions with square kernels, in network order."""
    rows = []
    for layer in model_spec.layers:
        kernel = np.asarray(spec_lib.get(params, layer.kernel), np.float64)
        if layer.kind != "conv" or kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
            continue
        scale = float(np.max(np.abs(kernel))) if kernel.size else 0.0
        cells = [_mask_cell(kernel[..., j], scale) for j in range(kernel.shape[-1])]
        mask = _mask_of(masks, layer.name, kernel.shape[-1])
        rows.append(_MaskRow(_row_label(layer, mask, model_spec.grouped), scale, cells, mask))
    return rows


class _MaskLayout(NamedTuple):
    """`save_masks`'s manual layout in inches: one kernel pixel has the same size everywhere."""

    left: float
    pad: float
    top: float
    gap: float  # between cells
    px: float  # one kernel pixel
    heights: list[float]  # per row
    width: float
    height: float


def _mask_layout(rows: list[_MaskRow], title: str | None) -> _MaskLayout:
    left, right, label_h, pad = 1.1, 0.2, 0.22, 0.12
    top = 0.3 if title else 0.05
    widest = max(sum(c.shape[1] for c in row.cells) for row in rows)
    most_cells = max(len(row.cells) for row in rows)
    gap = 0.25 if most_cells <= 8 else 0.15
    px = float(np.clip((9.0 - (most_cells - 1) * gap) / widest, 0.02, 0.09))
    heights = [max(c.shape[0] for c in row.cells) * px + label_h + pad for row in rows]
    width = (
        left
        + right
        + max(sum(c.shape[1] for c in row.cells) * px + (len(row.cells) - 1) * gap for row in rows)
    )
    height = top + sum(heights) + 0.1
    return _MaskLayout(left, pad, top, gap, px, heights, width, height)


def _draw_mask_row(fig: Figure, row: _MaskRow, layout: _MaskLayout, y: float) -> None:
    """Draws one layer's label and cells with their bottom edge `y` inches up."""
    fw, fh = fig.get_size_inches()
    px, pad = layout.px, layout.pad
    cell_h = max(c.shape[0] for c in row.cells) * px
    fig.text(
        0.1 / fw,
        (y + pad + cell_h / 2) / fh,
        f"{row.label}\nmax |w| {row.scale:.2g}",
        va="center",
        ha="left",
        fontsize=9,
    )
    x = layout.left
    for j, (cell, on) in enumerate(zip(row.cells, row.mask, strict=True)):
        w, h = cell.shape[1] * px, cell.shape[0] * px
        ax = fig.add_axes((x / fw, (y + pad) / fh, w / fw, h / fh))
        ax.imshow(cell if on else _grey_out(cell), interpolation="nearest", aspect="auto")
        _bare(ax)
        if on:
            ax.set_title(str(j), fontsize=8, pad=2)
        else:
            _cross(ax)
            ax.set_title(f"{j} off", fontsize=8, pad=2, color=_OFF_COLOR)
            for spine in ax.spines.values():
                spine.set_color(_OFF_COLOR)
        x += w + layout.gap


# ------------------------------------------------------------------- filter outputs


def _draw_filter_outputs(fig: Figure | SubFigure, model, params, masks, image, title) -> None:
    """Rows: the input, then one row per layer; columns: that layer's filters."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    outputs = layer_outputs(model, params, masks, image)
    cols = max(out.shape[-1] for _, out in outputs)
    axes = fig.subplots(len(outputs) + 1, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()

    ax = axes[0, 0]
    ax.set_axis_on()
    ax.imshow(image.mean(axis=-1), cmap="gray", interpolation="nearest")
    _bare(ax)
    ax.set_ylabel("input", fontsize=9)
    for row, ((name, out), layer) in enumerate(zip(outputs, model.spec.layers, strict=True), 1):
        mask = _mask_of(masks, name, out.shape[-1])
        for j in range(out.shape[-1]):
            ax = axes[row, j]
            ax.set_axis_on()
            _bare(ax)
            panel = out[..., j]
            peak = float(np.max(np.abs(panel)))
            ax.imshow(signed_rgb(panel, peak if peak > 0 else 1.0), interpolation="nearest")
            if mask[j]:
                ax.set_title(f"{j}: max |v| {peak:.2g}", fontsize=7, pad=2)
            else:
                _cross(ax)
                ax.set_title(f"{j} off", fontsize=7, pad=2, color=_OFF_COLOR)
            if j == 0:
                ax.set_ylabel(_row_label(layer, mask, model.spec.grouped), fontsize=9)
    if title:
        fig.suptitle(title)


def _outputs_size(model) -> tuple[float, float]:
    cols = max(layer.units for layer in model.spec.layers)
    return 1.25 * cols + 0.3, 1.3 * (len(model.spec.layers) + 1) + 0.4


def save_filter_outputs(
    path: str, model, params: dict, masks: dict | None, image, title: str | None = None
) -> str:
    """Draws what every filter of every layer outputs for one image (thesis Fig. 3.4).

    The first row holds the input; then one row per layer, one panel per filter:
    its signed output before the activation (`layer_outputs`), negative red and
    positive green, scaled by the panel's own largest magnitude (printed above the
    panel), so weak filters stay visible. The last row is the network's output
    before its activation. Disabled filters are crossed and labelled "off".

    Args:
      path: the image file to write.
      model: the `models.Model` (a network of 2-D convolutions).
      params, masks: the network (masks None = all enabled).
      image: one (H, W, 1) or (H, W) input.
      title: figure title.

    Returns:
      `path`.
    """
    fig = _new_figure(*_outputs_size(model), layout="constrained")
    _draw_filter_outputs(fig, model, params, masks, image, title)
    return _save(fig, path)


def save_filter_outputs_stages(path: str, model, stages, image) -> str:
    """`save_filter_outputs` for several networks side by side (thesis Figure 3.4).

    The thesis shows the signed outputs "after a few steps" and "after convergence";
    a run draws those two and its minimized network.

    Args:
      path: the image file to write.
      model: the `models.Model` every network is an instance of.
      stages: ``[(title, params, masks)]``, left to right.
      image: one (H, W, 1) or (H, W) input, fed to every network.

    Returns:
      `path`.
    """
    w, h = _outputs_size(model)
    fig = _new_figure(len(stages) * w + 0.2, h + 0.2, layout="constrained")
    parts = fig.subfigures(1, len(stages), wspace=0.02, squeeze=False)[0]
    for part, (title, params, masks) in zip(parts, stages, strict=True):
        _draw_filter_outputs(part, model, params, masks, image, title)
    return _save(fig, path)


def save_labelled(path: str, inputs, labels, logits, title: str = "") -> str:
    """A row of input images, each titled with its true and predicted class.

    Args:
      path: the image file to write.
      inputs: (N, H, W, C) images (any scale: each is stretched to its own range).
      labels: (N,) integer classes; logits: (N, classes).
      title: figure title.
    """
    inputs, labels = np.asarray(inputs, np.float32), np.asarray(labels)
    predicted = np.argmax(np.asarray(logits), axis=-1)
    n = inputs.shape[0]
    fig = _new_figure(1.6 * n + 0.2, 2.2, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, image, true, pred in zip(axes, inputs, labels, predicted, strict=True):
        shown = image.mean(axis=-1) if image.shape[-1] != 3 else image
        lo, hi = float(shown.min()), float(shown.max())
        ax.imshow((shown - lo) / (hi - lo if hi > lo else 1.0), cmap="gray")
        _bare(ax)
        color = "black" if true == pred else "tab:red"
        ax.set_title(f"true {int(true)}\npredicted {int(pred)}", fontsize=9, color=color)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def save_regression(path: str, inputs, targets, outputs, title: str = "") -> str:
    """Predicted against expected values, one point per example, with the diagonal.

    Args:
      path: the image file to write.
      inputs: unused (kept for the tasks' common picture signature).
      targets, outputs: (N, ...) arrays of the same shape.
      title: figure title.
    """
    del inputs
    y = np.asarray(targets, np.float64).ravel()
    out = np.asarray(outputs, np.float64).ravel()
    fig = _new_figure(4.2, 4.0, layout="constrained")
    ax = fig.subplots()
    ax.scatter(y, out, s=8, alpha=0.6)
    lo, hi = float(min(y.min(), out.min())), float(max(y.max(), out.max()))
    ax.plot((lo, hi), (lo, hi), color="0.4", lw=1, ls="--", label="perfect")
    ax.set_xlabel("expected")
    ax.set_ylabel("predicted")
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


# -------------------------------------------------------------------------- curves


def save_training_curve(
    path: str,
    steps,
    losses,
    eval_steps=None,
    eval_f1=None,
    title: str | None = None,
    score_label: str = "F1",
) -> str:
    """Plots the training loss (left axis) and the eval F1 (right axis) against step.

    The loss axis is logarithmic when every loss is positive. The F1 curve is drawn
    only when both `eval_steps` and `eval_f1` are given.

    Args:
      path: the image file to write.
      steps, losses: equally long sequences.
      eval_steps, eval_f1: equally long sequences, or both None.
      title: figure title.
      score_label: what the eval score is (the task's, e.g. 'F1' or 'accuracy').

    Returns:
      `path`.
    """
    steps, losses = np.asarray(steps, float), np.asarray(losses, float)
    if steps.shape != losses.shape or steps.ndim != 1:
        raise ValueError(f"steps {steps.shape} and losses {losses.shape} must be equal 1-D")
    if (eval_steps is None) != (eval_f1 is None):
        raise ValueError("eval_steps and eval_f1 go together")
    fig = _new_figure(7.0, 4.0, layout="constrained")
    ax = fig.add_subplot()
    lines = ax.plot(steps, losses, color="tab:blue", lw=1.0, label="train loss")
    if losses.size and np.all(losses > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    ax.grid(True, alpha=0.3)
    if eval_steps is not None:
        eval_steps, eval_f1 = np.asarray(eval_steps, float), np.asarray(eval_f1, float)
        if eval_steps.shape != eval_f1.shape or eval_steps.ndim != 1:
            raise ValueError(f"eval_steps {eval_steps.shape} and eval_f1 {eval_f1.shape}")
        ax2 = ax.twinx()
        lines += ax2.plot(
            eval_steps, eval_f1, "o-", color="tab:orange", ms=4, label=f"eval {score_label}"
        )
        ax2.set_ylabel(f"eval {score_label}", color="tab:orange")
    ax.legend(lines, [line.get_label() for line in lines], loc="best", fontsize=9)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def save_timeline(
    path: str,
    rounds: Sequence[Mapping],
    baseline: float,
    threshold: float | None = None,
    title: str | None = None,
    score_label: str = "F1",
) -> str:
    """Plots the minimization rounds: each tested filter's score, kept or rolled back.

    X is the round (0 = the trained network before minimization, at `baseline`),
    y the eval F1 after the round. Accepted rounds are green dots, rolled-back
    rounds red crosses, each labelled with its candidate. The solid black step line
    is the last accepted score (starting at `baseline`); with `threshold`, the
    dashed step line is ``threshold * reference``, the score each round had to
    reach (drawn over the interval leading to that round's point).

    Args:
      path: the image file to write.
      rounds: one mapping per round with keys ``candidate`` (str, e.g. 'conv_1/3'),
        ``score``, ``reference``, ``ratio`` and ``accepted``; may be empty.
      baseline: the score before the first round.
      threshold: the acceptance ratio, or None to leave the band out.
      title: figure title.

    Returns:
      `path`.
    """
    n = len(rounds)
    scores = np.array([float(r["score"]) for r in rounds])
    accepted = np.array([bool(r["accepted"]) for r in rounds], bool)
    fig = _new_figure(max(6.0, 0.45 * n + 2.5), 4.2, layout="constrained")
    ax = fig.add_subplot()
    handles = _timeline_lines(ax, rounds, scores, accepted, baseline, threshold)
    handles += _timeline_points(ax, rounds, scores, accepted)
    ax.set_xlim(-0.5, n + 0.8)
    ax.set_xticks(np.arange(n + 1) if n <= 30 else np.linspace(0, n, 11).round())
    ax.set_xlabel("round")
    ax.set_ylabel(f"eval {score_label}")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_title(title or f"minimization: {int(accepted.sum())} of {n} rounds kept")
    return _save(fig, path)


def _timeline_lines(ax, rounds, scores, accepted, baseline: float, threshold) -> list:
    """The last accepted score, the threshold band and the baseline; their legend handles."""
    n = len(rounds)
    running = [float(baseline)]
    for score, ok in zip(scores, accepted, strict=True):
        running.append(score if ok else running[-1])
    line = ax.plot(
        np.arange(n + 1), running, drawstyle="steps-post", color="k", lw=1.2, label="last accepted"
    )
    handles = list(line) if n else []  # legend entries only for what is drawn
    if threshold is not None and n:
        band = [float(threshold) * float(r["reference"]) for r in rounds]
        handles += ax.plot(
            np.arange(n + 1),
            band + band[-1:],
            drawstyle="steps-post",
            color="0.4",
            ls="--",
            lw=1.0,
            label=f"threshold x{float(threshold):g}",
        )
    handles += ax.plot([0], [float(baseline)], "D", color="k", ms=6, label="baseline")
    return handles


def _timeline_points(ax, rounds, scores, accepted) -> list:
    """Each round's score, kept or rolled back, labelled with its candidate; legend handles."""
    n = len(rounds)
    x = np.arange(1, n + 1)
    handles = []
    for pick, style, color, label in (
        (accepted, "o", "tab:green", "kept"),
        (~accepted, "x", "tab:red", "rolled back"),
    ):
        if pick.any():
            handles += ax.plot(x[pick], scores[pick], style, color=color, ms=7, mew=2, label=label)
    for i, r in enumerate(rounds):
        if np.isfinite(scores[i]):
            ax.annotate(
                str(r.get("candidate", "")),
                (x[i], scores[i]),
                xytext=(0, 6),
                textcoords="offset points",
                ha="left" if n > 10 else "center",
                rotation=45 if n > 10 else 0,
                fontsize=7,
            )
    return handles


# ----------------------------------------------------------------------- kept matrix


def save_kept_matrix(
    path: str,
    kept_rows: Sequence[Sequence[bool]],
    layer_names: Sequence[str],
    title: str | None = None,
) -> str:
    """Draws which filters survive: one row per layer, one square per filter.

    Kept filters are filled squares, removed ones empty outlines; rows may differ
    in length, and each ends with its "kept/total" count.

    Args:
      path: the image file to write.
      kept_rows: one sequence of booleans (True = kept) per layer, e.g.
        `masks.to_rows(final_masks)`.
      layer_names: the row labels, as many as `kept_rows`.
      title: figure title; defaults to the overall count.

    Returns:
      `path`.
    """
    rows = [np.asarray(r, bool).reshape(-1) for r in kept_rows]
    if len(rows) != len(layer_names):
        raise ValueError(f"{len(rows)} rows of kept flags but {len(layer_names)} layer names")
    cols = max((r.size for r in rows), default=0)
    fig = _new_figure(max(4.0, 0.45 * cols + 2.6), 0.5 * len(rows) + 1.4, layout="constrained")
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        for j, kept in enumerate(row):
            ax.add_patch(
                Rectangle(
                    (j - 0.4, i - 0.4),
                    0.8,
                    0.8,
                    facecolor="tab:green" if kept else "white",
                    edgecolor="0.3",
                    lw=1.0,
                )
            )
        ax.text(cols - 0.2, i, f"{int(row.sum())}/{row.size}", va="center", fontsize=9)
    ax.set_xlim(-0.6, cols + 0.8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first layer on top
    ax.set_aspect("equal")
    ax.set_yticks(range(len(rows)), [str(n) for n in layer_names])
    ax.set_xticks(range(cols))
    ax.set_xlabel("filter")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    kept_total = int(sum(r.sum() for r in rows))
    total = int(sum(r.size for r in rows))
    ax.set_title(title or f"kept filters: {kept_total} of {total}")
    return _save(fig, path)


# ------------------------------------------------------------------- task pictures

# `tasks.Task.picture` -> the drawing of a few eval examples and a network's outputs,
# each called as ``(path, inputs, targets, outputs, title) -> path``.
TASK_PICTURES: dict[str, Callable[..., str]] = {
    "triptychs": save_triptychs,
    "labelled": save_labelled,
    "scatter": save_regression,
    "reconstructions": save_reconstructions,
}


def task_picture(name: str) -> Callable[..., str]:
    """The drawing a task names in `tasks.Task.picture`.

    Raises:
      KeyError: `name` is not in `TASK_PICTURES` (the message lists the names).
    """
    try:
        return TASK_PICTURES[name]
    except KeyError:
        raise KeyError(
            f"task picture: got {name!r}; allowed: {sorted(TASK_PICTURES)}"
        ) from None
