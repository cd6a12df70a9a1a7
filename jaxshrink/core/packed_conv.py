"""Block-diagonal packing: several runs' few-channel convolutions as one grouped one.

Under `vmap` over runs, XLA lowers a convolution to a grouped one with one group per
run (`feature_group_count` = runs in the forward pass and the input gradient,
`batch_group_count` in the kernel gradient). The thesis network's groups hold 1 to 5
channels, and the GPU libraries' kernels for such tiny groups are slow, the backward
passes especially. Packing puts `k` runs into one group of `k x C` channels whose
kernel is block-diagonal: run m's input channels meet only run m's output channels, the
other blocks are exact zeros. Each group then costs `k` times the multiply-adds of its
runs, spent in kernels made for channel counts of 5k rather than 5.

`conv(x, kernel, pads, precision, runs_per_group)` computes one run's convolution
(`lax.conv_general_dilated`, NHWC/HWIO, stride 1); its batching rule
(`jax.custom_batching.custom_vmap`) is the packing. Differentiation goes through the
rule of their own (a `custom_vjp` whose backward pass is packed the same way: reverse
mode cannot pass through a batching rule), so the gradients are those of the packed
convolution: its kernel gradient's off-diagonal blocks are computed and dropped (the
zeros are constants, not parameters). The runs are padded with zero runs to a multiple
of `k` and cut back.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
# Runs per group when `model.conv` is 'packed' without a count ('packed:K' sets K).
# Groups of 4 runs hold 20 channels for the thesis's 5-channel layers; the GPU check
# (`experiments/gpu_check.py`) measures 2, 4, 8 and 16.
RUNS_PER_GROUP = 4


def _xla(x, kernel, pads, precision, groups=1):
    return lax.conv_general_dilated(
        x,
        kernel,
        (1, 1),
        pads,
        dimension_numbers=_NHWC,
        precision=precision,
        feature_group_count=groups,
    )


def block_diagonal(kernels: jax.Array, k: int) -> jax.Array:
    """Kernels of R runs, (R, kh, kw, I, O) with R a multiple of `k`, as one grouped
    HWIO kernel of R / k groups: (kh, kw, k * I, R * O), group g's block of run m
    (run g * k + m) at inputs m * I ... and outputs g * k * O + m * O ..., zeros
    elsewhere."""
    r, kh, kw, i, o = kernels.shape
    g = r // k
    blocks = kernels.reshape(g, k, kh, kw, i, o)
    eye = jnp.eye(k, dtype=bool)  # (m, m')
    # (g, m, kh, kw, i, m', o): run m's kernel where m == m', exact zeros elsewhere.
    full = jnp.where(eye[None, :, None, None, None, :, None], blocks[:, :, :, :, :, None], 0)
    full = jnp.transpose(full, (2, 3, 1, 4, 0, 5, 6))  # (kh, kw, m, i, g, m', o)
    return full.reshape(kh, kw, k * i, g * k * o)


def packed(xs: jax.Array, kernels: jax.Array, pads, precision, k: int) -> jax.Array:
    """R runs' convolutions, xs (R, B, H, W, I) and kernels (R, kh, kw, I, O), as grouped
    convolutions of `k` runs per group: (R, B, H', W', O)."""
    r, b, h, w, i = xs.shape
    k = max(1, min(k, r))
    padded = -r % k
    if padded:
        xs = jnp.concatenate([xs, jnp.zeros((padded, *xs.shape[1:]), xs.dtype)])
        kernels = jnp.concatenate([kernels, jnp.zeros((padded, *kernels.shape[1:]), kernels.dtype)])
    total = r + padded
    # Runs onto the channel axis: channel m * I + c of the packed input is run m's c.
    x = jnp.transpose(xs, (1, 2, 3, 0, 4)).reshape(b, h, w, total * i)
    y = _xla(x, block_diagonal(kernels, k), pads, precision, groups=total // k)
    o = kernels.shape[-1]
    y = y.reshape(*y.shape[:3], total, o)
    return jnp.transpose(y, (3, 0, 1, 2, 4))[:r]


def _per_run(single, batched):
    """A function of (x, kernel, *rest) that is `single` for one run and `batched` (all
    arguments with a leading run axis) under `vmap`."""

    @jax.custom_batching.custom_vmap
    def fn(*args):
        return single(*args)

    @fn.def_vmap
    def _runs(axis_size, in_batched, *args):
        args = [
            a if is_batched else jnp.broadcast_to(a, (axis_size, *a.shape))
            for a, is_batched in zip(args, in_batched)
        ]
        out_shapes = jax.eval_shape(single, *(a[0] for a in args))
        return batched(*args), jax.tree.map(lambda _: True, out_shapes)

    return fn


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, pads, precision, k):
    single = functools.partial(_xla, pads=pads, precision=precision)
    return _per_run(single, functools.partial(packed, pads=pads, precision=precision, k=k))(
        x, kernel
    )


def _conv_fwd(x, kernel, pads, precision, k):
    return _conv(x, kernel, pads, precision, k), (x, kernel)


def _conv_bwd(pads, precision, k, residuals, g):
    # Reverse mode cannot pass through a batching rule (`custom_vmap`), so the
    # gradients are their own per-run function: XLA's for one run, the packed
    # convolution's under `vmap`.
    def single(x, kernel, g):
        return jax.vjp(lambda x, kernel: _xla(x, kernel, pads, precision), x, kernel)[1](g)

    def batched(xs, kernels, gs):
        fn = functools.partial(packed, pads=pads, precision=precision, k=k)
        return jax.vjp(fn, xs, kernels)[1](gs)

    return _per_run(single, batched)(*residuals, g)


_conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def conv(x: jax.Array, kernel: jax.Array, pads, precision, k: int = RUNS_PER_GROUP):
    """One run's convolution (NHWC x HWIO, stride 1, explicit `pads`); under `vmap`, the
    runs packed `k` to a group (see the module docstring)."""
    return _conv(x, kernel, pads, precision, k)
