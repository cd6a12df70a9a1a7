"""Losses and image-similarity metrics for the edge-map mimicking task.

The thesis this package reproduces trains a small fully convolutional network to
reproduce Sobel and Canny edge maps. Section 2.3.1 of the thesis defines the
objective functions (MAE, MSE and a "soft" F1 loss) and section 3.1 adds the
Universal Image Quality Index (UIQI) of Wang & Bovik as a validation metric.

All functions take two batches of NHWC images of identical shape ``(N, H, W, C)``
(``C == 1`` in the thesis) and are written in pure ``jax.numpy`` / ``jax.lax``,
so they can be used inside ``jax.jit``, ``jax.vmap`` (over an extra leading
axis) and, for the losses, ``jax.grad``. The public functions are themselves
wrapped in ``jax.jit`` (``window`` is static for UIQI) so that eager calls, e.g.
in validation loops, compile once per input shape instead of dispatching op by op.

Every quantity is reduced *per image* first and then averaged over the batch,
exactly like the thesis's TensorFlow code (``tf.reduce_sum(..., [1, 2, 3])``
followed by ``tf.reduce_mean``). For the F1 score this differs from a global
F1 over the whole batch, which is why the per-image step matters. (The thesis's
separate NumPy validation helper sums over the whole batch instead; we follow the
TensorFlow training code throughout.)

Integer or low-precision floating inputs are promoted to at least ``float32``
before reducing, so that ``O * T`` cannot overflow and sums keep their precision.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "UIQI_WINDOW",
    "f1_loss",
    "f1_score",
    "f1_score_per_image",
    "mae",
    "mse",
    "uiqi",
    "uiqi_per_image",
]

# Reduction axes of an NHWC batch: everything but the batch axis.
_IMAGE_AXES = (1, 2, 3)

UIQI_WINDOW = 8  # Wang & Bovik's sliding window; images must be at least this large



# How a classifier's confusion matrix is normalised (`report.plots.normalised_confusion`):
# 'predicted' (thesis 004, 3.6.3), 'true' or 'none'.
CONFUSION_NORMALIZATIONS = ("predicted", "true", "none")

def _as_image_pair(output, target, name: str) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Validate and promote a pair of NHWC batches.

    Args:
        output: Network output, shape ``(N, H, W, C)``.
        target: Expected output, same shape as ``output``.
        name: Name of the calling metric, used in error messages.

    Returns:
        Both arrays as a common floating dtype of at least ``float32``.

    Raises:
        ValueError: If the shapes differ or the arrays are not 4-D.
    """
    output = jnp.asarray(output)
    target = jnp.asarray(target)
    if output.shape != target.shape:
        raise ValueError(
            f"{name}: output and target shapes differ: {output.shape} vs {target.shape}"
        )
    if output.ndim != 4:
        raise ValueError(f"{name}: expected NHWC batches of rank 4, got shape {output.shape}")
    # Promote to >= float32: uint8 images would overflow in O * T, and bf16/f16
    # sums over a 128x128 image lose too many digits.
    dtype = jnp.result_type(output.dtype, target.dtype, jnp.float32)
    return output.astype(dtype), target.astype(dtype)


@jax.jit
def mae(output, target) -> jnp.ndarray:
    """Mean absolute error (L1 loss), thesis section 2.3.1.

    ``MAE = 1/N sum_n 1/(H W C) sum_{y,x,c} |O - T|``: the per-image mean of the
    absolute difference, averaged over the batch.

    Args:
        output: Network output ``O``, shape ``(N, H, W, C)``.
        target: Expected output ``T``, same shape.

    Returns:
        Scalar loss.
    """
    output, target = _as_image_pair(output, target, "mae")
    per_image = jnp.mean(jnp.abs(output - target), axis=_IMAGE_AXES)
    return jnp.mean(per_image)


@jax.jit
def mse(output, target) -> jnp.ndarray:
    """Mean squared error (L2 loss), thesis section 2.3.1.

    ``MSE = 1/N sum_n 1/(H W C) sum_{y,x,c} (O - T)^2``.

    Args:
        output: Network output ``O``, shape ``(N, H, W, C)``.
        target: Expected output ``T``, same shape.

    Returns:
        Scalar loss.
    """
    output, target = _as_image_pair(output, target, "mse")
    per_image = jnp.mean(jnp.square(output - target), axis=_IMAGE_AXES)
    return jnp.mean(per_image)


def _f1_terms(output, target, name: str) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Per-image ``(E, 2TP, perfect)`` of the thesis's soft F1.

    ``E = sum |O - T|`` and ``TP = sum O * T`` over H, W and C. ``perfect`` marks
    images with ``E == 0`` (output identical to target); see :func:`f1_score`.
    """
    output, target = _as_image_pair(output, target, name)
    error = jnp.sum(jnp.abs(output - target), axis=_IMAGE_AXES)
    two_tp = 2.0 * jnp.sum(output * target, axis=_IMAGE_AXES)
    return error, two_tp, error == 0


@jax.jit
def f1_score_per_image(output, target) -> jnp.ndarray:
    """Soft F1 score of every image, ``2TP / (2TP + E)`` (thesis section 2.3.1).

    ``TP = sum O * T`` replaces the true-positive count and ``E = sum |O - T|``
    replaces ``FP + FN``, both summed over H, W and C of one image.

    Interpretation (not in the thesis): when ``E == 0`` the output equals the
    target, and we define the score as 1 (a perfect match). For non-negative
    images -- the thesis's ReLU outputs and edge maps -- the formula is
    undefined (0/0) exactly when both images are all zero, which is covered by
    this rule; everywhere else the rule agrees with the formula. The rule uses
    the double-``jnp.where`` trick so that gradients stay finite there. For
    signed inputs ``2TP + E`` can vanish for *different* images; the thesis's
    formula is meaningless there and we deliberately leave its inf/nan rather
    than report a perfect match.

    Args:
        output: Network output ``O``, shape ``(N, H, W, C)``.
        target: Expected output ``T``, same shape.

    Returns:
        Array of shape ``(N,)``; in ``[0, 1]`` for non-negative inputs.
    """
    error, two_tp, perfect = _f1_terms(output, target, "f1_score_per_image")
    # Inner where keeps the unused branch free of 0/0 so its gradient is finite.
    safe_denominator = jnp.where(perfect, 1.0, two_tp + error)
    return jnp.where(perfect, 1.0, two_tp / safe_denominator)


@jax.jit
def f1_score(output, target) -> jnp.ndarray:
    """Soft F1 score averaged over the batch (thesis section 2.3.1).

    See :func:`f1_score_per_image` for the definition and for the documented
    interpretation at ``E == 0`` (score 1, finite gradient).

    Args:
        output: Network output ``O``, shape ``(N, H, W, C)``.
        target: Expected output ``T``, same shape.

    Returns:
        Scalar, the mean over images of ``2TP / (2TP + E)``.
    """
    return jnp.mean(f1_score_per_image(output, target))


@jax.jit
def f1_loss(output, target) -> jnp.ndarray:
    """Soft F1 loss, ``mean_n E / (2TP + E)`` (thesis section 2.3.1).

    This is ``1 - f1_score`` computed directly, as in the thesis's TensorFlow
    code. Interpretation (not in the thesis): images with ``E == 0`` (identical
    output and target, including the all-zero pair where the formula is 0/0)
    get loss 0 and a finite (zero) gradient via the double-``jnp.where`` trick.

    Args:
        output: Network output ``O``, shape ``(N, H, W, C)``.
        target: Expected output ``T``, same shape.

    Returns:
        Scalar loss.
    """
    error, two_tp, perfect = _f1_terms(output, target, "f1_loss")
    # An image whose target has no edge (common in small crops) has loss E/E = 1
    # whatever the output, so its exact gradient is 0. Computed as E/E it is
    # rounding noise (~1e-8) that Adam, which normalises the gradient's scale,
    # turns into full-size steps; so it is set to the constant 1 here.
    no_edge = jnp.sum(jnp.abs(target), axis=_IMAGE_AXES) == 0
    constant = perfect | no_edge
    safe_denominator = jnp.where(constant, 1.0, two_tp + error)
    per_image = jnp.where(perfect, 0.0, jnp.where(no_edge, 1.0, error / safe_denominator))
    return jnp.mean(per_image)


def _window_reduce(x: jnp.ndarray, window: int, op: str) -> jnp.ndarray:
    """Reduce every ``window x window`` spatial window ('valid' positions, stride 1).

    Args:
        x: Array of shape ``(N, H, W, C)``.
        window: Side length of the square window.
        op: ``"sum"``, ``"max"`` or ``"min"``.

    Returns:
        Array of shape ``(N, H - window + 1, W - window + 1, C)``.
    """
    # Init values are NumPy scalars (concrete even under jit) so that lax
    # recognises the monoid and uses the differentiable reduce_window_sum/max/min.
    init, computation = {
        "sum": (0, lax.add),
        "max": (-np.inf, lax.max),
        "min": (np.inf, lax.min),
    }[op]
    init = np.array(init, dtype=x.dtype)
    # Separable: a window x 1 pass then a 1 x window pass costs 2w instead of w^2
    # operations per output (sum, max and min all decompose this way).
    for dims in ((1, window, 1, 1), (1, 1, window, 1)):
        x = lax.reduce_window(x, init, computation, dims, (1, 1, 1, 1), "VALID")
    return x


@functools.partial(jax.jit, static_argnames="window")
def _uiqi_statistics(x, y, window: int):
    """The window sums of `x` and `y`, and ``N (N - 1)`` times their variances and
    covariance, per ``window x window`` window.

    Variance normalisation: the paper defines ``sx^2`` and ``sxy`` with
    ``1 / (N - 1)``; the MATLAB code never normalises at all -- it works with
    ``N * sum(x y) - sum(x) sum(y)`` and friends, i.e. ``N (N - 1)`` times the
    paper's statistics. The factor cancels between numerator and denominator,
    so ``Q`` is the same for any common normalisation; we use the MATLAB
    un-normalised sums.

    Numerics (float32 rather than MATLAB's float64): second moments are taken of
    images centred on their per-image mean (variances are shift-invariant) to
    limit cancellation, and a window is declared constant exactly, by its max
    equalling its min, instead of testing a rounded variance for ``== 0``. The
    variance of a constant window and any covariance involving one are then set
    to exactly 0, which is what exact arithmetic gives and lets the MATLAB
    branches fire as intended.
    """
    n = float(window * window)

    def box(a):
        return _window_reduce(a, window, "sum")

    def is_constant(a):
        return _window_reduce(a, window, "max") == _window_reduce(a, window, "min")

    sum_x, sum_y = box(x), box(y)
    xc = x - jnp.mean(x, axis=_IMAGE_AXES, keepdims=True)
    yc = y - jnp.mean(y, axis=_IMAGE_AXES, keepdims=True)
    sum_xc, sum_yc = box(xc), box(yc)
    const_x, const_y = is_constant(x), is_constant(y)

    # N * sum(x^2) - sum(x)^2 == N (N - 1) sx^2; clamp rounding noise below 0.
    var_x = jnp.where(const_x, 0.0, jnp.maximum(n * box(xc * xc) - sum_xc * sum_xc, 0.0))
    var_y = jnp.where(const_y, 0.0, jnp.maximum(n * box(yc * yc) - sum_yc * sum_yc, 0.0))
    cov = jnp.where(const_x | const_y, 0.0, n * box(xc * yc) - sum_xc * sum_yc)
    return sum_x, sum_y, var_x, var_y, cov


def _uiqi_map(sum_x, sum_y, var_x, var_y, cov):
    """``Q`` per window, with the special cases of the authors' MATLAB code taken
    literally (it starts from a map of ones and overwrites it)::

        (sx^2 + sy^2) == 0 and (mx^2 + my^2) != 0  ->  Q = 2 mx my / (mx^2 + my^2)
        both factors != 0                          ->  Q = formula above
        otherwise, i.e. (mx^2 + my^2) == 0         ->  Q = 1

    Note that the MATLAB code has no ``2 sxy / (sx^2 + sy^2)`` branch: a window
    with zero means but non-zero variance gets ``Q = 1``. For non-negative images
    zero means imply all-zero windows, so this only matters for signed inputs.
    """
    # Names mirror img_qi.m: img12_sum_mul, img12_sq_sum_mul, denominator1.
    mean_prod = sum_x * sum_y
    mean_sq = sum_x * sum_x + sum_y * sum_y
    numerator = 4.0 * cov * mean_prod
    denominator1 = var_x + var_y
    denominator = denominator1 * mean_sq

    only_means = (denominator1 == 0) & (mean_sq != 0)
    general = denominator != 0
    # Double-where: the unused branches divide by 1, not 0, keeping grads finite.
    q_means = 2.0 * mean_prod / jnp.where(only_means, mean_sq, 1.0)
    q_general = numerator / jnp.where(general, denominator, 1.0)
    return jnp.where(general, q_general, jnp.where(only_means, q_means, 1.0))


def uiqi_per_image(output, target, window: int = UIQI_WINDOW) -> jnp.ndarray:
    """Universal Image Quality Index of every image (Wang & Bovik 2002; thesis 3.1).

    For every ``window x window`` window (stride 1, 'valid' positions only, as in
    the authors' MATLAB ``img_qi.m``) with means ``mx, my``, variances
    ``sx^2, sy^2`` and covariance ``sxy``::

        Q = 4 sxy mx my / ((sx^2 + sy^2) (mx^2 + my^2))

    and the image's index is the mean of ``Q`` over windows (and channels,
    which are treated independently; the thesis has ``C == 1``). The MATLAB
    code's special cases are `_uiqi_map`'s; its normalisation and the float32
    numerics are `_uiqi_statistics`'s.

    Args:
        output: Network output, shape ``(N, H, W, C)``.
        target: Expected output, same shape.
        window: Side of the square sliding window (the MATLAB default is 8).
            A static Python int: pass it as a constant or mark it static when
            wrapping this function in your own ``jax.jit``.

    Returns:
        Array of shape ``(N,)``, values in ``[-1, 1]``.

    Raises:
        ValueError: If shapes differ, are not NHWC, or the window does not fit.
    """
    x, y = _as_image_pair(output, target, "uiqi")
    window = int(window)
    _, height, width, _ = x.shape
    if window < 1 or window > height or window > width:
        raise ValueError(
            f"uiqi: window must be in [1, min(H, W)] = [1, {min(height, width)}], got {window}"
        )
    q = _uiqi_map(*_uiqi_statistics(x, y, window))
    return jnp.mean(q, axis=_IMAGE_AXES)


@functools.partial(jax.jit, static_argnames="window")
def uiqi(output, target, window: int = UIQI_WINDOW) -> jnp.ndarray:
    """Universal Image Quality Index averaged over the batch.

    See :func:`uiqi_per_image` for the definition, the MATLAB special cases and
    the variance-normalisation note.

    Args:
        output: Network output, shape ``(N, H, W, C)``.
        target: Expected output, same shape.
        window: Side of the square sliding window (default 8, as in MATLAB).

    Returns:
        Scalar in ``[-1, 1]``.
    """
    return jnp.mean(uiqi_per_image(output, target, window))
