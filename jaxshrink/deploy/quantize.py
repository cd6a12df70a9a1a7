"""Post-training weight quantization: "8-bit and n-bit quantization" of a trained network.

Every maskable layer's kernel is stored as integer codes on a uniform grid of ``b`` bits
(``b`` from 2 to 8) and one float32 scale (and, asymmetric, one zero point) per tensor or
per output channel. Biases, batch-norm leaves and everything else stay float32.

A `Scheme` names the grid; ``axis`` is the channel axis (the units: the last axis of a Flax
kernel). "Over the group" below means over the whole tensor (per tensor) or over every
axis but ``axis`` (per channel, one value per output channel, kept as a keepdims shape
``(1, ..., 1, C)``). ``round`` is round-half-to-even (`jnp.round`).

Symmetric, zero point 0, restricted grid (no ``-2^(b-1)``, so that it is symmetric)::

    qmax  = 2^(b-1) - 1
    scale = max|w| / qmax                     over the group; 0 (all zero) -> 1
    q     = clip(round(w / scale), -qmax, qmax)
    w'    = q * scale

Asymmetric (the range is widened to hold 0 so that 0.0 is exactly representable, as
TensorFlow Lite and qwix do)::

    lo, hi = min(min w, 0), max(max w, 0)     over the group
    qmax   = 2^b - 1
    scale  = (hi - lo) / qmax                 0 (all zero) -> 1
    zp     = clip(round(-lo / scale), 0, qmax)
    q      = clip(round(w / scale) + zp, 0, qmax)
    w'     = (q - zp) * scale

On both grids every value inside the group's range is within ``scale / 2`` of its
dequantized value ``w'``, and values already on the grid come back exactly.

Stored size (`stored_bytes`): a kernel of ``n`` values takes ``ceil(n * b / 8)`` bytes of
packed codes, 4 bytes per scale and, asymmetric, ``ceil(n_scales * b / 8)`` bytes of
packed zero points; every other leaf of the params takes 4 bytes per scalar.

`search_bits` lowers the bit width while the quantized network's score keeps to the unit
search's rule (`minimize`): a width is kept when ``score >= threshold * reference``,
where the reference is the last kept score ('last_accepted') or the trained score
('baseline'). The first width that fails ends the search.

Why not a library: qwix 0.1.8 (Google's JAX quantization library, `qwix.quantize` /
`qwix.dequantize`) was checked. Its asymmetric mode supports only int8 and int4
(`numerics.get_asymmetric_bound` raises for other widths), and its symmetric grid maps
``max|w|`` to the extended bound ``qmax + 0.5`` instead of the textbook ``qmax``, so it
cannot give the 2..8-bit asymmetric schemes asked for here. The formulas above are a
dozen lines of jax.numpy; they work on device arrays and under `jax.jit` with the
`Scheme` static.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink.core import spec as spec_lib

MIN_BITS, MAX_BITS = 2, 8
RULES = ("last_accepted", "baseline")  # the same names as `minimize.REFERENCES`


def check_bits(bits) -> int:
    """`bits` as an int; the one place where bit widths are validated.

    Raises:
      ValueError: `bits` is not an integer from 2 to 8 (a bool is not an integer here).
    """
    ok = isinstance(bits, numbers.Integral) and not isinstance(bits, (bool, np.bool_))
    if not ok or not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(
            f"quantize: bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}"
        )
    return int(bits)


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A quantization grid: bit width, symmetric or asymmetric, per channel or per tensor.

    Hashable, so it can be a static argument of `jax.jit`.
    """

    bits: int  # 2..8
    symmetric: bool = True
    per_channel: bool = True  # one scale (and zero point) per output channel, else per tensor

    def __post_init__(self):
        object.__setattr__(self, "bits", check_bits(self.bits))
        object.__setattr__(self, "symmetric", bool(self.symmetric))
        object.__setattr__(self, "per_channel", bool(self.per_channel))


@dataclasses.dataclass(frozen=True)
class Quantized:
    """A quantized tensor: ``dequantize(qt) = (q - zero_point) * scale``.

    A plain container (not a pytree). `scale` and `zero_point` have `q`'s number of axes,
    with size 1 on every axis but the channel axis (per channel) or on all (per tensor).
    """

    q: jax.Array | np.ndarray  # int32 codes in `grid(scheme)`
    scale: jax.Array | np.ndarray  # float32, keepdims shape
    zero_point: jax.Array | np.ndarray  # int32, same shape as `scale`; 0 when symmetric
    scheme: Scheme


def grid(scheme: Scheme) -> tuple[int, int]:
    """The codes ``(qmin, qmax)``: ``(-(2^(b-1) - 1), 2^(b-1) - 1)`` symmetric, else
    ``(0, 2^b - 1)``."""
    if scheme.symmetric:
        qmax = 2 ** (scheme.bits - 1) - 1
        return -qmax, qmax
    return 0, 2**scheme.bits - 1


def _reduce_axes(ndim: int, scheme: Scheme, axis: int) -> tuple[int, ...]:
    """The axes one scale covers: all of them, or all but the channel axis."""
    if not scheme.per_channel:
        return tuple(range(ndim))
    if ndim == 0:
        raise ValueError("quantize: per-channel quantization needs at least one axis")
    channel = axis % ndim
    return tuple(a for a in range(ndim) if a != channel)


def _nonzero(scale: jax.Array) -> jax.Array:
    """A scale of 0 (an all-zero group) becomes 1, so that its codes are 0."""
    return jnp.where(scale == 0, jnp.float32(1), scale)


def _quantize(w, scheme: Scheme, axis: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(q, scale, zero_point)`` of `w`. The bit width reaches the compiled code as a
    value, not a constant, so that all widths share one compilation per shape."""
    qmax = jnp.float32(grid(scheme)[1])
    return _quantize_jit(w, qmax, scheme.symmetric, _reduce_axes(np.ndim(w), scheme, axis))


@functools.partial(jax.jit, static_argnames=("symmetric", "axes"))
def _quantize_jit(w, qmax, symmetric: bool, axes: tuple[int, ...]):
    """The formulas of the module docstring; `qmax` is the grid's largest code."""
    w = jnp.asarray(w, jnp.float32)
    # Inside an outer jit `qmax` is a constant, and XLA would turn ``x / qmax`` into
    # ``x * (1 / qmax)``, one rounding more; the barrier keeps the true division, so
    # results are the same bits under jit as outside it.
    qmax = jax.lax.optimization_barrier(qmax)
    if symmetric:
        scale = _nonzero(jnp.max(jnp.abs(w), axis=axes, keepdims=True) / qmax)
        zero = jnp.zeros_like(scale)
        q = jnp.clip(jnp.round(w / scale), -qmax, qmax)
    else:
        lo = jnp.minimum(jnp.min(w, axis=axes, keepdims=True), 0.0)
        hi = jnp.maximum(jnp.max(w, axis=axes, keepdims=True), 0.0)
        scale = _nonzero((hi - lo) / qmax)
        zero = jnp.clip(jnp.round(-lo / scale), 0, qmax)
        q = jnp.clip(jnp.round(w / scale) + zero, 0, qmax)
    return q.astype(jnp.int32), scale, zero.astype(jnp.int32)


@jax.jit
def _dequantize(q, scale, zero_point) -> jax.Array:
    q = jnp.asarray(q, jnp.int32) - jnp.asarray(zero_point, jnp.int32)
    return q.astype(jnp.float32) * jnp.asarray(scale, jnp.float32)


def quantize(w, scheme: Scheme, axis: int = -1) -> Quantized:
    """`w` on the grid of `scheme` (formulas in the module docstring).

    Compiled once per shape, axis and kind of scheme (every bit width shares it); also
    callable inside `jax.jit` with `scheme` static.

    Args:
      w: the float array (e.g. a kernel), cast to float32.
      scheme: the grid.
      axis: the channel axis for per-channel scales (the units: -1 for Flax kernels).

    Returns:
      The int32 codes with their float32 scales and int32 zero points (keepdims shapes).
    """
    return Quantized(*_quantize(w, scheme, axis), scheme)


def dequantize(qt: Quantized) -> jax.Array:
    """The float32 values of `qt`: ``(q - zero_point) * scale``."""
    return _dequantize(qt.q, qt.scale, qt.zero_point)


def fake_quantize(w, scheme: Scheme, axis: int = -1) -> jax.Array:
    """`w` rounded to its grid and back: same shape, float32."""
    return dequantize(quantize(w, scheme, axis))


def _kernels(model_spec: spec_lib.ModelSpec, params: dict):
    """``(name, leaf)`` of the spec's kernels (`ModelSpec.kernel_leaves`) that hold any
    weight in `params` (an emptied branch's kernel holds none)."""
    for name, leaf in model_spec.kernel_leaves():
        if np.size(spec_lib.get(params, leaf)):
            yield name, leaf


def quantize_params(model_spec: spec_lib.ModelSpec, params: dict, scheme: Scheme) -> dict:
    """`params` with every kernel fake-quantized per `scheme`.

    Each kernel's channel axis is its output-feature axis. Biases, batch-norm leaves and
    every other leaf are the same objects as in `params`; `params` is not changed.
    """
    out = params
    for _, leaf in _kernels(model_spec, params):
        out = spec_lib.set_path(
            out, leaf.path, fake_quantize(spec_lib.get(out, leaf), scheme, leaf.axis)
        )
    return out


def codes(model_spec: spec_lib.ModelSpec, params: dict, scheme: Scheme) -> dict[str, Quantized]:
    """``{kernel name: its Quantized}`` with numpy arrays (e.g. to write int8 files)."""
    out = {}
    for name, leaf in _kernels(model_spec, params):
        qt = quantize(spec_lib.get(params, leaf), scheme, leaf.axis)
        out[name] = dataclasses.replace(
            qt, q=np.asarray(qt.q), scale=np.asarray(qt.scale), zero_point=np.asarray(qt.zero_point)
        )
    return out


def _packed(values: int, bits: int) -> int:
    """Bytes of `values` codes of `bits` bits each, packed without padding between them."""
    return math.ceil(values * bits / 8)


def kernel_bytes(shape: Sequence[int], scheme: Scheme, axis: int = -1) -> int:
    """Stored bytes of one quantized tensor of `shape`: packed codes, float32 scales and,
    asymmetric, packed zero points."""
    shape = tuple(shape)
    scales = shape[axis % len(shape)] if scheme.per_channel and shape else 1
    size = _packed(math.prod(shape), scheme.bits) + 4 * scales
    if not scheme.symmetric:
        size += _packed(scales, scheme.bits)
    return size


def stored_bytes(model_spec: spec_lib.ModelSpec, params: dict, scheme: Scheme) -> int:
    """Bytes of `params` stored with quantized kernels (`kernel_bytes`) and every other
    leaf as float32 (4 bytes per scalar). Reads only shapes."""
    leaves = [leaf for _, leaf in _kernels(model_spec, params)]
    kernels = [spec_lib.get(params, leaf) for leaf in leaves]
    quantized = sum(
        kernel_bytes(np.shape(k), scheme, leaf.axis) for k, leaf in zip(kernels, leaves)
    )
    rest = spec_lib.count_params(params) - sum(int(np.size(k)) for k in kernels)
    return quantized + 4 * rest


def float_bytes(params) -> int:
    """Bytes of `params` stored as float32: 4 per scalar."""
    return 4 * spec_lib.count_params(params)


def search_bits(
    score_of: Callable[[int], float],
    bits: Sequence[int],
    reference: float,
    threshold: float,
    rule: str = "last_accepted",
) -> tuple[int | None, list[dict]]:
    """The fewest bits whose quantized network still passes the unit search's rule.

    Widths are tried in the order given (callers pass them descending, e.g. 8 down to 2).
    A width is accepted when its score is finite and ``score >= threshold * last``, where
    ``last`` starts at `reference` and, under 'last_accepted', becomes each accepted
    score ('baseline' keeps `reference`). The first rejected width ends the search: fewer
    bits are not tried.

    Args:
      score_of: ``score_of(b)`` is the eval score (higher is better) of the network
        quantized to ``b`` bits.
      bits: the widths to try, in order; each from 2 to 8.
      reference: the score of the unquantized network.
      threshold: the fraction of the reference a width must keep (e.g. 0.95).
      rule: 'last_accepted' or 'baseline', as `minimize`'s reference.

    Returns:
      ``(chosen, trials)``: the last accepted width (None when the first one fails) and
      one ``{'bits', 'score', 'ratio', 'accepted'}`` dict per width tried, where ratio is
      ``score / last`` (inf or nan when ``last`` is 0, as in `minimize`).
    """
    if rule not in RULES:
        raise ValueError(f"search_bits: rule must be one of {RULES}, got {rule!r}")
    bits = [check_bits(b) for b in bits]  # all checked before the first (costly) score
    last = float(reference)
    chosen, trials = None, []
    for b in bits:
        score = float(score_of(b))
        accepted = math.isfinite(score) and score >= threshold * last
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(np.float64(score) / np.float64(last))
        trials.append({"bits": b, "score": score, "ratio": ratio, "accepted": accepted})
        if not accepted:
            break
        chosen = b
        if rule == "last_accepted":
            last = score
    return chosen, trials
