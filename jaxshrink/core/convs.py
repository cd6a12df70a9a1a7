"""Convolutions for the CPU, where XLA's own is slow for the theses' small layers.

`model.conv` picks one per network; every choice computes the same function, and
`tests/test_convs.py` checks each against `lax.conv_general_dilated`:

- 'xla': `lax.conv_general_dilated` itself.
- 'taps': XLA's forward pass and input gradient, the kernel gradient as one matrix
  product per kernel tap. XLA's CPU backend compiles the kernel gradient inside a
  compiled loop (`lax.fori_loop` over steps, `lax.map` over runs) far slower than
  outside one: `python experiments/kernel_gradient_in_loops.py` on the 2-core CPU (jax
  0.10.2) timed MNIST's 32 -> 64 5x5 layer at batch 50 at 515 ms in a loop against 24 ms
  outside it, and 17 ms with the per-tap products.
- 'direct': for layers of few channels, a direct convolution: every output plane is the
  sum, over kernel taps and input channels, of a shifted input plane times one kernel
  scalar, in one fused elementwise loop; the input gradient is the same sum with the
  flipped kernel, the kernel gradient one matrix product per kernel row (one
  reduction per tap for a single input channel; XLA's own for large images and for
  batches of 8 or more, where it is faster). XLA hands convolutions
  with many channels to a library (YNNPACK) but runs the theses' 1 -> 5 -> 5 -> 1
  layers through a generic loop at a few GFLOP/s; on the 2-core CPU the direct form's
  forward pass and input gradient are 2 to 9 times faster at 64 to 256 px (`python
  experiments/direct_convs.py`, per layer; `python -m jaxshrink.bench
  --convs=xla,direct`, per training step).
- 'packed' (or 'packed:K'): under `vmap` over runs, K runs' channels in one group of a
  grouped convolution with a block-diagonal kernel (`jaxshrink.core.packed_conv`), for
  GPUs, whose grouped kernels are slow for groups of 1-5 channels; one run is XLA's.
- 'pallas': a Pallas kernel for few-channel layers (`jaxshrink.core.pallas_conv`): all
  output channels of a tile of rows at once, the input gradient by the same kernel and
  the kernel gradient as per-tile partial sums. On a CPU it runs in Pallas's interpret
  mode (slow: for tests).
- 'auto' (the default): 'direct' on a CPU for layers with at most `DIRECT_MAX_CHANNELS`
  input and output channels and `DIRECT_MAX_PAIRS` pairs of them, 'xla' otherwise
  (GPUs keep cuDNN).

XLA's CPU compiler fuses elementwise producers into their consumers even when that
recomputes them: a direct convolution fused into the next one would be recomputed for
each of its 25 x C reads. Each direct piece is therefore evaluated inside `_fence`, a
conditional whose predicate is always true, which the fusion passes do not cross
(`lax.optimization_barrier` does not stop them on the CPU). Only on the CPU: elsewhere
a conditional costs a copy of its predicate to the host, and the pieces are left to the
backend's fusion.

Each function has `lax.conv_general_dilated`'s signature, so a Flax `nn.Conv` takes it
as its `conv_general_dilated` attribute (`Sequential(conv=...)`, config `model.conv`).
They cover stride 1, no dilation, one feature group and NHWC/HWIO layouts (every
convolution of the theses' networks, float32 for 'direct'); anything else is passed to
`lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools
import inspect
import os

import jax
import jax.numpy as jnp
from jax import lax

IMPLEMENTATIONS = ("auto", "xla", "taps", "direct", "packed", "pallas")
# 'direct' covers layers with at most this many input and output channels, and this many
# input x output channel pairs. Measured on the 2-core CPU (`experiments/direct_convs.py`,
# 5x5 kernels): the FCN's 1x5, 5x5 and 5x1 layers at 64-256 px and the quick MNIST's 1x4
# at 28 px and 4x8 at 14 px are faster direct; MNIST's 1x32 (which XLA hands to its
# YNNPACK library) and 8x8 layers at 14 and 64 px are not.
DIRECT_MAX_CHANNELS = 8
DIRECT_MAX_PAIRS = 32
# The direct form's own kernel gradient (`_kernel_grad`) reduces over batch x height x
# width positions; beyond this many XLA's is faster on the 2-core CPU (256 px).
DIRECT_MAX_REDUCED = 1 << 16
# XLA's kernel gradient contracts over the batch: from batches of this size on it is
# faster than the direct form's own (the MNIST layers at batch 32 against the FCN's
# at batch 3; `experiments/direct_convs.py`).
DIRECT_OWN_GRAD_MAX_BATCH = 8
# What 'auto' takes on a CPU for the layers 'direct' covers: 'direct', or 'xla' through
# the environment variable JAXSHRINK_AUTO_CONV=xla. The test suite sets 'xla' for its
# hundreds of tiny programs (the direct form compiles 2-3x longer) and tests the
# default path where it matters.
AUTO_CHOICES = ("direct", "xla")
AUTO_ON_CPU = os.environ.get("JAXSHRINK_AUTO_CONV", "direct")
_NHWC = ("NHWC", "HWIO", "NHWC")


def _pads(padding, kernel_hw) -> tuple[tuple[int, int], ...]:
    """Explicit (low, high) padding per spatial axis for stride 1."""
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return tuple((0, 0) for _ in kernel_hw)
        if padding.upper() == "SAME":
            return tuple(((k - 1) // 2, k // 2) for k in kernel_hw)
        raise ValueError(f"padding {padding!r}: allowed 'SAME', 'VALID' or (low, high) pairs")
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _xla(x, kernel, pads, precision):
    return lax.conv_general_dilated(
        x, kernel, (1, 1), pads, dimension_numbers=_NHWC, precision=precision
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, pads, precision):
    return _xla(x, kernel, pads, precision)


def _conv_fwd(x, kernel, pads, precision):
    return _xla(x, kernel, pads, precision), (x, kernel)


def _conv_bwd(pads, precision, residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda v: _xla(v, kernel, pads, precision), x)
    kh, kw = kernel.shape[:2]
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    h, w = g.shape[1:3]
    taps = [
        [
            jnp.einsum("bhwc,bhwd->cd", xp[:, i : i + h, j : j + w], g, precision=precision)
            for j in range(kw)
        ]
        for i in range(kh)
    ]
    return input_vjp(g)[0], jnp.stack([jnp.stack(row) for row in taps]).astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _fence(fn, *args):
    """`fn(*args)`, evaluated inside a conditional that XLA's fusion passes do not cross.

    The predicate, ``p == p or p != p`` of one input element, is true for every value,
    NaN included, but is data the compiler does not fold, so the other branch (zeros,
    cheap to compile) is never taken. Were the predicate ever folded, the conditional
    would be inlined: the same values, only fused again. Under `vmap` a conditional
    with a batched predicate would become a select of both branches; the rule below
    keeps one conditional around the vmapped `fn` instead."""

    if jax.default_backend() != "cpu":
        return fn(*args)

    @jax.custom_batching.custom_vmap
    def fenced(*args):
        probe = jnp.ravel(args[-1])[0]
        shapes = jax.eval_shape(fn, *args)

        def zeros(*_):
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        return lax.cond((probe == probe) | (probe != probe), fn, zeros, *args)

    @fenced.def_vmap
    def _batched(axis_size, in_batched, *args):
        args = [
            a if batched else jnp.broadcast_to(a, (axis_size, *a.shape))
            for a, batched in zip(args, in_batched)
        ]
        return _fence(jax.vmap(fn), *args), True

    return fenced(*args)


def _channels_first(x, pads):
    """NHWC activations as padded channels-first planes (NCHW, each plane contiguous)."""
    return jnp.pad(jnp.transpose(x, (0, 3, 1, 2)), ((0, 0), (0, 0), *pads))


def _planes(xt, kernel, out_hw):
    """Stride-1 convolution of padded NCHW planes `xt` with an HWIO kernel: the sum of
    shifted input planes times kernel scalars, NCHW."""
    kh, kw, cin, _ = kernel.shape
    h, w = out_hw
    out = None
    for i in range(kh):
        for j in range(kw):
            for c in range(cin):
                term = xt[:, c : c + 1, i : i + h, j : j + w] * kernel[i, j, c][:, None, None]
                out = term if out is None else out + term
    return out


def _direct_planes(x, kernel, pads):
    """NHWC x HWIO -> NHWC by `_planes`, fenced. The layout changes stay outside the
    fence, where XLA materializes them once as the conditional's operand (inside it,
    they were fused into the 25 x C reads: the quick MNIST's 4 -> 8 layer at 14 px
    took 1.6 ms instead of 0.38 ms in a side measurement)."""
    kh, kw = kernel.shape[:2]
    out_hw = tuple(n + lo + hi - k + 1 for n, (lo, hi), k in zip(x.shape[1:3], pads, (kh, kw)))
    out = _fence(functools.partial(_planes_jit, out_hw=out_hw), _channels_first(x, pads), kernel)
    return jnp.transpose(out, (0, 2, 3, 1))


def _tap_sums(xt, gt, kernel_hw):
    """The kernel gradient from padded NCHW inputs `xt` and NCHW output gradients
    `gt`: for every tap, the shifted input times the output gradient, summed over
    batch and positions."""
    h, w = gt.shape[2:]
    gt = gt[:, None]  # (B, 1, D, H, W)
    taps = [
        [
            jnp.sum(xt[:, :, None, i : i + h, j : j + w] * gt, axis=(0, 3, 4))
            for j in range(kernel_hw[1])
        ]
        for i in range(kernel_hw[0])
    ]
    return jnp.stack([jnp.stack(row) for row in taps])


def _own_kernel_grad_faster(g_shape) -> bool:
    """Whether the direct form's own kernel gradient (`_kernel_grad`) beats XLA's for
    output gradients of NHWC shape `g_shape` (measured outside compiled loops, where a
    step holding XLA's runs: `batching.resolve_steps`)."""
    b, h, w = g_shape[:3]
    return b < DIRECT_OWN_GRAD_MAX_BATCH and b * h * w <= DIRECT_MAX_REDUCED


def _row_products(xt, gt, kernel_hw, precision=None):
    """The kernel gradient as one matrix product per kernel row: the output gradient
    shifted by each column offset (zero-padded to the input's width, kw copies), times
    the input rows of that row offset, contracted over batch, rows and columns. For
    layers of several input channels at batch 3 it was 1.5-2x faster than `_tap_sums`
    in a side measurement (64 and 128 px, 5 -> 5 and 5 -> 1); with one input channel
    each product is a matrix-vector one, and the per-tap sums are faster."""
    kh, kw = kernel_hw
    h, w = gt.shape[2:]
    wp = xt.shape[3]  # = w + kw - 1
    shifted = jnp.stack(
        [jnp.pad(gt, ((0, 0), (0, 0), (0, 0), (j, wp - w - j))) for j in range(kw)], axis=2
    )  # (B, D, kw, H, Wp): shifted[..., j, :, v] = gt[..., v - j]
    rows = [
        jnp.einsum("bchv,bdjhv->jcd", xt[:, :, i : i + h], shifted, precision=precision)
        for i in range(kh)
    ]
    return jnp.stack(rows)


def _kernel_grad(xt, gt, kernel_hw, precision=None):
    """The direct form's own kernel gradient (channels-first inputs): per-tap sums for
    one input channel, one matrix product per kernel row otherwise."""
    if xt.shape[1] == 1:
        return _tap_sums(xt, gt, kernel_hw)
    return _row_products(xt, gt, kernel_hw, precision)


# The fenced pieces, jitted: tracing one is about 0.1 s of Python for a 5 -> 5 layer
# (25 x C slices, products and sums); jit traces each shape once, also under `vmap`
# (the fence's batching rule vmaps the jitted piece, whose traced program is reused).
_planes_jit = jax.jit(_planes, static_argnames=("out_hw",))
_kernel_grad_jit = jax.jit(_kernel_grad, static_argnames=("kernel_hw", "precision"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _direct(x, kernel, pads, precision):
    return _direct_planes(x, kernel, pads)


def _direct_fwd(x, kernel, pads, precision):
    return _direct_planes(x, kernel, pads), (x, kernel)


def _direct_bwd(pads, precision, residuals, g):
    x, kernel = residuals
    kernel_hw = kernel.shape[:2]
    # The input gradient: the same sum over the flipped, transposed kernel, with the
    # padding that restores the input's size.
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    back = tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, kernel_hw))
    dx = _direct_planes(g, flipped, back)
    if _own_kernel_grad_faster(g.shape):
        xt, gt = _channels_first(x, pads), jnp.transpose(g, (0, 3, 1, 2))
        grad = functools.partial(_kernel_grad_jit, kernel_hw=kernel_hw, precision=precision)
        dk = _fence(grad, xt, gt)
    else:
        _, kernel_vjp = jax.vjp(lambda k: _xla(x, k, pads, precision), kernel)
        dk = kernel_vjp(g)[0]
    return dx, dk.astype(kernel.dtype)


_direct.defvjp(_direct_fwd, _direct_bwd)
# Jitted too, so that an eager call (`Model.init`, the pictures) is one compiled call
# rather than a thousand dispatched operations, and a model's trace reuses it by shape.
_direct_jit = jax.jit(_direct, static_argnums=(2, 3))


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return tuple(dimension_numbers) == _NHWC


def _covered(a: dict) -> bool:
    """Whether the custom forms apply to `lax.conv_general_dilated`'s arguments `a`
    (by name): stride 1, no dilation, one group, NHWC/HWIO."""
    ones = (1,) * (a["lhs"].ndim - 2)
    return (
        a["lhs"].ndim == 4
        and tuple(a["window_strides"]) == ones
        and tuple(a["lhs_dilation"] or ones) == ones
        and tuple(a["rhs_dilation"] or ones) == ones
        and a["feature_group_count"] == 1
        and a["batch_group_count"] == 1
        and a["preferred_element_type"] is None
        and a.get("out_sharding") is None
        and _is_nhwc(a["dimension_numbers"])
    )


def _direct_fits(lhs, rhs, pads) -> bool:
    """Whether the direct form applies: float32, few channels, padding of at most the
    kernel's size minus one on each side (so the input gradient needs no cropping)."""
    kh, kw, cin, cout = rhs.shape
    return (
        lhs.dtype == jnp.float32
        and rhs.dtype == jnp.float32
        and max(cin, cout) <= DIRECT_MAX_CHANNELS
        and cin * cout <= DIRECT_MAX_PAIRS
        and all(0 <= p <= k - 1 for pair, k in zip(pads, (kh, kw)) for p in pair)
        and all(n + lo + hi >= k for n, (lo, hi), k in zip(lhs.shape[1:3], pads, (kh, kw)))
    )


_SIGNATURE = inspect.signature(lax.conv_general_dilated)


def auto_form(backend: str | None = None) -> str:
    """What 'auto' computes on `backend` (default: JAX's): 'direct' on a CPU (where the
    layer fits it) unless JAXSHRINK_AUTO_CONV=xla (`AUTO_ON_CPU`), else 'xla'. A config's
    'auto' is recorded as this (`jaxshrink.config.resolve`), so a resume under another
    setting is refused."""
    if AUTO_ON_CPU not in AUTO_CHOICES:  # `validate` says so first for configs
        raise ValueError(f"JAXSHRINK_AUTO_CONV: got {AUTO_ON_CPU!r}; allowed: {AUTO_CHOICES}")
    on_cpu = (backend or jax.default_backend()) == "cpu"
    return "direct" if on_cpu and AUTO_ON_CPU == "direct" else "xla"


def split_name(name: str) -> tuple[str, int | None]:
    """`model.conv`'s value as (form, runs per group): 'packed:8' -> ('packed', 8), any
    other name -> (name, None). A form outside `IMPLEMENTATIONS` or a count that is not
    a positive integer raises ValueError."""
    form, sep, count = str(name).partition(":")
    if form not in IMPLEMENTATIONS or (sep and form != "packed"):
        raise ValueError(f"conv: got {name!r}; allowed: {IMPLEMENTATIONS}, or 'packed:K'")
    if not sep:
        return form, None
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"conv: got {name!r}; 'packed:K' takes K runs per group, K >= 1")
    return form, int(count)


def _dispatch(kind: str, runs_per_group: int | None = None):
    def conv_general_dilated(*args, **kwargs):
        bound = _SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        if not _covered(a):
            return lax.conv_general_dilated(*args, **kwargs)
        lhs, rhs, precision = a["lhs"], a["rhs"], a["precision"]
        pads = _pads(a["padding"], rhs.shape[:2])
        if isinstance(precision, tuple):
            precision = precision[0]
        if kind == "taps":
            return _conv(lhs, rhs, pads, precision)
        if kind == "packed":
            from jaxshrink.core import packed_conv  # noqa: PLC0415 (it imports this module)

            k = runs_per_group or packed_conv.RUNS_PER_GROUP
            return packed_conv.conv(lhs, rhs, pads, precision, k)
        if kind == "pallas":
            from jaxshrink.core import pallas_conv  # noqa: PLC0415 (it imports this module)

            if _direct_fits(lhs, rhs, pads):  # the same few-channel layers as 'direct'
                return pallas_conv.conv(lhs, rhs, pads)
            return lax.conv_general_dilated(*args, **kwargs)
        direct = kind == "direct" or auto_form() == "direct"
        if _direct_fits(lhs, rhs, pads) and direct:
            return _direct_jit(lhs, rhs, pads, precision)
        return lax.conv_general_dilated(*args, **kwargs)

    conv_general_dilated.__name__ = f"{kind}_conv_general_dilated"
    conv_general_dilated.__doc__ = (
        f"`lax.conv_general_dilated` computed the {kind!r} way (see `jaxshrink.core.convs`)."
    )
    return conv_general_dilated


conv_general_dilated = _dispatch("taps")  # the per-tap kernel gradient
direct_conv_general_dilated = _dispatch("direct")
auto_conv_general_dilated = _dispatch("auto")


@functools.cache
def conv_fn(kind: str):
    """The `conv_general_dilated` of implementation `kind` (one of `IMPLEMENTATIONS`, or
    'packed:K')."""
    form, runs_per_group = split_name(kind)
    if form in ("packed", "pallas"):
        return _dispatch(form, runs_per_group)
    return {
        "xla": lax.conv_general_dilated,
        "taps": conv_general_dilated,
        "direct": direct_conv_general_dilated,
        "auto": auto_conv_general_dilated,
    }[form]
