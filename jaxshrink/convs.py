"""A convolution whose kernel gradient XLA's CPU backend computes fast inside loops.

Every training step of jaxshrink runs inside a compiled loop (`lax.fori_loop` over
steps, `lax.map` over runs). On the CPU, XLA compiles the kernel gradient of a
convolution inside such a loop far slower than the same operation outside one:
`python experiments/kernel_gradient_in_loops.py` on the 2-core CPU (jax 0.10.2) times a
forward pass and kernel gradient: MNIST's 32 -> 64 5x5 layer at batch 50 took 515 ms in
a loop against 24 ms outside it, the FCN's 5 -> 5 layer at 64x64 6.8 ms against 3.0 ms.
Matrix products do not have this problem.

`conv_general_dilated` keeps XLA's forward convolution and input gradient and writes the
kernel gradient as one matrix product per kernel tap,

    dk[i, j] = einsum('bhwc,bhwd->cd', xp[:, i:i+H, j:j+W], g),

with ``xp`` the padded input and ``g`` the output gradient: 17 ms for the MNIST layer
in the loop (2.8 ms for the FCN's). The forward pass is XLA's own, bit for bit;
gradients equal XLA's to float rounding (the sums run in another order), which
`tests/test_convs.py` checks.

It has `lax.conv_general_dilated`'s signature, so a Flax `nn.Conv` takes it as its
`conv_general_dilated` attribute (`Sequential(conv='taps')`, config `model.conv`). The
custom gradient covers stride 1, no dilation, one feature group and NHWC/HWIO layouts
(every convolution of the theses' networks); anything else is passed to
`lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

IMPLEMENTATIONS = ("xla", "taps")
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


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return tuple(dimension_numbers) == _NHWC


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated` with the kernel gradient as per-tap products."""
    ones = (1,) * (lhs.ndim - 2)
    covered = (
        lhs.ndim == 4
        and tuple(window_strides) == ones
        and tuple(lhs_dilation or ones) == ones
        and tuple(rhs_dilation or ones) == ones
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and _is_nhwc(dimension_numbers)
    )
    if not covered:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    if isinstance(precision, tuple):
        precision = precision[0]
    return _conv(lhs, rhs, _pads(padding, rhs.shape[:2]), precision)
