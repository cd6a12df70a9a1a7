"""Pallas kernels for few-channel convolutions: the theses' 1 -> 5 -> 5 -> 1 layers on GPUs.

Under `vmap` over runs XLA lowers each of the network's convolutions to a grouped one
with one group of 1-5 channels per run, and the GPU libraries' kernels for such groups
are slow (the backward passes especially). Here a convolution is computed directly, as
the sum over kernel taps and input channels of a shifted input plane times one kernel
scalar, in a kernel that `vmap` batches by adding a grid axis (Pallas's batching rule):
no grouped convolution appears, whatever the number of runs.

Layout: the NHWC activations are transposed and padded outside the kernel into planes
(B, C, H', W'), each plane contiguous and padded by the convolution's own (low, high)
pads plus the rows and columns that round the output up to whole tiles. One program
of the grid (B, row tiles) reads its image's whole padded block (blocks that overlap,
as a tile's halo rows would need, exist only on TPUs) and slices the band of rows its
tile needs for each tap; it accumulates every output channel of its TH x W' tile, adds
the bias and applies the ReLU when asked, and writes a (C_out, TH, W') planar block.

The gradients (a `jax.custom_vjp`):

- the input gradient is the same kernel on the (ReLU-masked) output gradient, with the
  flipped, in/out-transposed kernel and the complementary pads (k - 1 - low,
  k - 1 - high), which restore the input's size for pads of at most k - 1;
- the kernel gradient is a second kernel on the same grid: each program sums, for every
  tap and channel pair, its tile of the output gradient times the shifted input band,
  and writes these partial sums to its own slot of a (B, tiles, kh, kw, C_in, C_out)
  array; `jnp.sum` over (B, tiles) outside is the reduction, deterministic (no atomics);
- the bias gradient is the masked output gradient summed over batch and positions.

Public: `conv` (convolution only), `conv_bias_relu` (the fused layer) and
`pallas_conv_general_dilated` (`lax.conv_general_dilated`'s signature, for
`nn.Conv(conv_general_dilated=...)`; what it does not cover goes to XLA unchanged).
There is no whole-network kernel (the three layers on one tile, the intermediate
activations kept on chip): the Triton lowering holds values in registers as
power-of-two tiles it cannot shift, so each layer's halo would have to go through
global memory with a barrier between the layers.

The kernels compute in float32, one multiply-add per tap and channel pair, whatever the
convolution's `precision`: XLA's results at precision HIGHEST to float32 rounding (a
different order of summation). On a CPU they run in Pallas's interpret mode, which is
slow and serves the tests; on a GPU they are compiled (`GPU_COMPILER_PARAMS`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from jaxshrink.core import convs
from jaxshrink.core.convs import _pads

# The layers the kernels take are the direct form's (`convs.DIRECT_MAX_CHANNELS` input
# and output channels, `convs.DIRECT_MAX_PAIRS` pairs): each program unrolls the
# products of every channel pair and holds every output channel's tile, so wide layers
# would not fit a GPU's registers; those go to XLA.
# Tile rows: a power of two of at most TILE_ROWS_MAX rows, lowered until the tile of
# every output channel (C_out x TH x W' float32 values, W' the output width rounded up
# to a power of two) holds at most TILE_ELEMENTS: 16 rows of 64 px and 4 of 256 px for 5
# output channels, 32 rows for one. Both are guesses to be tuned on the GPU.
TILE_ROWS_MAX = 32
TILE_ELEMENTS = 8192

# GPU compilation, all of it here. The kernels are written for Pallas's Triton lowering:
# loads and stores of power-of-two rectangles at any offset of a block, the block left
# in global memory. JAX's default GPU lowering for `pl.pallas_call` is Mosaic GPU since
# jax 0.10 (`jax_pallas_use_mosaic_gpu`), which copies each block into shared memory
# first: a 256 px image's five padded planes (1.4 MB) do not fit an H100/H200's 228 KB
# per multiprocessor (and its layouts are made for aligned tiles rather than bands
# shifted by one column; untried). Triton's compiler parameters select the Triton
# lowering explicitly (deprecated since jax 0.11.0). num_warps: 4 warps (128 threads) per
# program, each holding TILE_ELEMENTS / 128 accumulators; num_stages: 1, no software
# pipelining of the loop over taps (its loads are a few rows of one block). None instead
# leaves the choice to JAX (Mosaic GPU), to try it.
GPU_COMPILER_PARAMS = {"num_warps": 4, "num_stages": 1}


def _compiler_params(interpret: bool):
    if interpret or GPU_COMPILER_PARAMS is None:
        return None
    from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415 (GPU only)

    return pl_triton.CompilerParams(**GPU_COMPILER_PARAMS)


def _interpret(interpret: bool | None) -> bool:
    """Interpret mode when asked, or (None) when JAX's default backend is the CPU, which
    has no compiled Pallas lowering."""
    return jax.default_backend() == "cpu" if interpret is None else bool(interpret)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def default_tile_rows(out_h: int, out_w: int, cout: int) -> int:
    """The tile height for an output of `out_h` x `out_w` pixels and `cout` channels:
    the power of two of at most `TILE_ROWS_MAX` rows whose tile of all channels holds at
    most `TILE_ELEMENTS` values (at least 1 row), no taller than the image needs; of
    those, the largest dividing `out_h`, unless that is under a quarter of the cap (an
    odd height), where the cap is taken and the rows padded at the bottom."""
    wb = _pow2_at_least(out_w)
    cap = TILE_ROWS_MAX
    while cap > 1 and cout * cap * wb > TILE_ELEMENTS:
        cap //= 2
    cap = min(cap, _pow2_at_least(out_h))
    rows = cap
    while out_h % rows:
        rows //= 2
    return rows if 4 * rows >= cap else cap


class _Geometry:
    """Sizes of one convolution's kernels: output `out_h` x `out_w`, computed as `tiles`
    tiles of `th` rows (`hb` rows in all) of `wb` columns (a power of two), from
    padded input planes of (hb + kh - 1) x (wb + kw - 1)."""

    def __init__(self, in_hw, kernel_hw, pads, cout, tile_rows=None):
        (h, w), (kh, kw) = in_hw, kernel_hw
        (self.top, bottom), (self.left, right) = pads
        self.kh, self.kw = kh, kw
        self.out_h = h + self.top + bottom - kh + 1
        self.out_w = w + self.left + right - kw + 1
        self.wb = _pow2_at_least(self.out_w)
        self.th = tile_rows or default_tile_rows(self.out_h, self.out_w, cout)
        if self.th & (self.th - 1):
            raise ValueError(f"tile_rows: got {self.th}; a power of two is needed")
        self.tiles = -(-self.out_h // self.th)
        self.hb = self.tiles * self.th
        # What the padded planes hold beyond the convolution's own pads: the rounding
        # of the output to whole tiles (rows) and to a power of two (columns).
        self.bottom = bottom + self.hb - self.out_h
        self.right = right + self.wb - self.out_w

    def planes(self, x):
        """NHWC `x` as zero-padded planes (B, C, hb + kh - 1, wb + kw - 1)."""
        pads = ((0, 0), (0, 0), (self.top, self.bottom), (self.left, self.right))
        return jnp.pad(jnp.transpose(x, (0, 3, 1, 2)), pads)

    def output_planes(self, g):
        """NHWC output-shaped `g` as planes (B, C, hb, wb), zeros in the rounding."""
        pads = ((0, 0), (0, 0), (0, self.hb - self.out_h), (0, self.wb - self.out_w))
        return jnp.pad(jnp.transpose(g, (0, 3, 1, 2)), pads)

    def crop(self, planes):
        """Planes (B, C, hb, wb) back to the NHWC output."""
        return jnp.transpose(planes[:, :, : self.out_h, : self.out_w], (0, 2, 3, 1))


def _squeezed():
    return pl.squeezed if hasattr(pl, "squeezed") else None


def _forward_kernel(*refs, kh, kw, cin, cout, th, wb, has_bias, relu):
    """One tile: for every output channel, the sum over taps (i, j) and input channels of
    the input band shifted by (i, j) times the kernel scalar; then bias and ReLU.

    The taps are a loop, the channels unrolled within it: unrolled taps gave XLA (interpret
    mode) 25 x the program to compile, 5.3 s for a 5 -> 5 layer's forward pass and
    gradients against 2.1 s; on a GPU the loop adds a counter and dynamic offsets."""
    if has_bias:
        x_ref, k_ref, b_ref, o_ref = refs
    else:
        (x_ref, k_ref, o_ref), b_ref = refs, None
    row0 = pl.program_id(1) * th

    def tap(t, accs):
        i, j = lax.div(t, kw), lax.rem(t, kw)
        accs = list(accs)
        for c in range(cin):
            band = x_ref[c, pl.ds(row0 + i, th), pl.ds(j, wb)]
            for d in range(cout):
                accs[d] = accs[d] + band * k_ref[i, j, c, d]
        return tuple(accs)

    zeros = tuple(jnp.zeros((th, wb), jnp.float32) for _ in range(cout))
    accs = lax.fori_loop(0, kh * kw, tap, zeros)
    for d in range(cout):
        acc = accs[d]
        if has_bias:
            acc = acc + b_ref[d]
        if relu:
            acc = jnp.maximum(acc, 0.0)
        o_ref[d] = acc


def _forward_planes(xp, kernel, bias, geo: _Geometry, relu: bool, interpret: bool):
    """The forward kernel on padded planes `xp`: planes (B, C_out, hb, wb)."""
    b, cin = xp.shape[:2]
    kh, kw, _, cout = kernel.shape
    sq = _squeezed()
    body = functools.partial(
        _forward_kernel,
        kh=kh,
        kw=kw,
        cin=cin,
        cout=cout,
        th=geo.th,
        wb=geo.wb,
        has_bias=bias is not None,
        relu=relu,
    )
    in_specs = [
        pl.BlockSpec((sq, cin, *xp.shape[2:]), lambda n, t: (n, 0, 0, 0)),
        pl.BlockSpec(kernel.shape, lambda n, t: (0, 0, 0, 0)),
    ]
    args = [xp, kernel]
    if bias is not None:
        in_specs.append(pl.BlockSpec(bias.shape, lambda n, t: (0,)))
        args.append(bias)
    return pl.pallas_call(
        body,
        out_shape=jax.ShapeDtypeStruct((b, cout, geo.hb, geo.wb), jnp.float32),
        grid=(b, geo.tiles),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((sq, cout, geo.th, geo.wb), lambda n, t: (n, 0, t, 0)),
        interpret=interpret,
        compiler_params=_compiler_params(interpret),
        name="pallas_conv_forward",
    )(*args)


def _kernel_grad_kernel(x_ref, g_ref, o_ref, *, kh, kw, cin, cout, th, wb):
    """One tile's share of the kernel gradient: for every tap (i, j) and channel pair
    (c, d), the sum of the input band shifted by (i, j) times the tile's output gradient,
    one scalar each."""
    row0 = pl.program_id(1) * th
    gs = [g_ref[d] for d in range(cout)]

    def tap(t, carry):
        i, j = lax.div(t, kw), lax.rem(t, kw)
        for c in range(cin):
            band = x_ref[c, pl.ds(row0 + i, th), pl.ds(j, wb)]
            for d in range(cout):
                o_ref[i, j, c, d] = jnp.sum(band * gs[d])
        return carry

    lax.fori_loop(0, kh * kw, tap, 0)


def _kernel_grad(xp, gp, kernel_shape, geo: _Geometry, interpret: bool):
    """The kernel gradient (kh, kw, C_in, C_out) from padded input planes `xp` and output
    gradient planes `gp` (zeros in the rounding): per-tile partial sums, summed here."""
    b, cin = xp.shape[:2]
    kh, kw, _, cout = kernel_shape
    sq = _squeezed()
    body = functools.partial(
        _kernel_grad_kernel, kh=kh, kw=kw, cin=cin, cout=cout, th=geo.th, wb=geo.wb
    )
    partial_sums = pl.pallas_call(
        body,
        out_shape=jax.ShapeDtypeStruct((b, geo.tiles, kh, kw, cin, cout), jnp.float32),
        grid=(b, geo.tiles),
        in_specs=[
            pl.BlockSpec((sq, cin, *xp.shape[2:]), lambda n, t: (n, 0, 0, 0)),
            pl.BlockSpec((sq, cout, geo.th, geo.wb), lambda n, t: (n, 0, t, 0)),
        ],
        out_specs=pl.BlockSpec((sq, sq, kh, kw, cin, cout), lambda n, t: (n, t, 0, 0, 0, 0)),
        interpret=interpret,
        compiler_params=_compiler_params(interpret),
        name="pallas_conv_kernel_grad",
    )(xp, gp)
    return jnp.sum(partial_sums, axis=(0, 1))


def _apply(x, kernel, bias, pads, relu, interpret, tile_rows):
    geo = _Geometry(x.shape[1:3], kernel.shape[:2], pads, kernel.shape[3], tile_rows)
    return geo.crop(_forward_planes(geo.planes(x), kernel, bias, geo, relu, interpret))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _layer(x, kernel, bias, pads, relu, interpret, tile_rows):
    return _apply(x, kernel, bias, pads, relu, interpret, tile_rows)


def _layer_fwd(x, kernel, bias, pads, relu, interpret, tile_rows):
    y = _apply(x, kernel, bias, pads, relu, interpret, tile_rows)
    # The ReLU's mask comes from the output (y > 0 where the pre-activation is).
    return y, (x, kernel, bias, y if relu else None)


def _layer_bwd(pads, relu, interpret, tile_rows, residuals, g):
    x, kernel, bias, y = residuals
    if relu:
        g = jnp.where(y > 0, g, jnp.zeros_like(g))
    kh, kw = kernel.shape[:2]
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    back = tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, (kh, kw)))
    dx = _apply(g, flipped, None, back, False, interpret, tile_rows)
    geo = _Geometry(x.shape[1:3], (kh, kw), pads, kernel.shape[3], tile_rows)
    dk = _kernel_grad(geo.planes(x), geo.output_planes(g), kernel.shape, geo, interpret)
    db = None if bias is None else jnp.sum(g, axis=(0, 1, 2))
    return dx, dk, db


_layer.defvjp(_layer_fwd, _layer_bwd)
# Jitted, so that an eager call is one compiled program and a model's trace reuses it.
_layer_jit = jax.jit(_layer, static_argnums=(3, 4, 5, 6))


def _check(x, kernel, bias, pads):
    kh, kw, cin, cout = kernel.shape
    if x.ndim != 4 or x.shape[3] != cin:
        raise ValueError(f"x: got shape {x.shape}; NHWC with {cin} channels expected")
    if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
        raise ValueError(f"float32 only: got x {x.dtype}, kernel {kernel.dtype}")
    if bias is not None and (bias.shape != (cout,) or bias.dtype != jnp.float32):
        raise ValueError(f"bias: got {bias.shape} {bias.dtype}; ({cout},) float32 expected")
    if not all(0 <= p <= k - 1 for pair, k in zip(pads, (kh, kw)) for p in pair):
        raise ValueError(f"pads: got {pads}; each between 0 and the kernel size - 1")
    if not all(n + lo + hi >= k for n, (lo, hi), k in zip(x.shape[1:3], pads, (kh, kw))):
        raise ValueError(f"pads {pads}: the output of {x.shape} would be empty")


def conv(x, kernel, pads, *, interpret=None, tile_rows=None):
    """The stride-1 convolution of NHWC float32 `x` with the HWIO `kernel`, `pads` (low,
    high) per spatial axis (or 'SAME'/'VALID'), each between 0 and the kernel size - 1.
    `interpret`: Pallas's interpret mode (None: on a CPU). `tile_rows`: a power of two
    (None: `default_tile_rows`)."""
    pads = _pads(pads, kernel.shape[:2])
    _check(x, kernel, None, pads)
    return _layer_jit(x, kernel, None, pads, False, _interpret(interpret), tile_rows)


def conv_bias_relu(x, kernel, bias, pads, *, relu=True, interpret=None, tile_rows=None):
    """The fused layer: `conv(x, kernel, pads)` plus `bias` (C_out,), then ReLU if
    `relu`, in one kernel; its gradient masks the output gradient once."""
    pads = _pads(pads, kernel.shape[:2])
    _check(x, kernel, bias, pads)
    return _layer_jit(x, kernel, bias, pads, bool(relu), _interpret(interpret), tile_rows)


def pallas_conv_general_dilated(*args, **kwargs):
    """`lax.conv_general_dilated` by the Pallas kernel where it applies (stride 1, no
    dilation, one group, NHWC/HWIO, float32, few channels, pads of at most k - 1), by
    `lax.conv_general_dilated` itself, unchanged, elsewhere: `convs.conv_fn('pallas')`,
    whose dispatch decides that for every form. `precision` is not used: the kernel
    computes in float32."""
    return convs.conv_fn("pallas")(*args, **kwargs)
