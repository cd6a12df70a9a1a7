"""Why `model.conv='auto'` takes the direct form on a CPU: each layer's convolution,
XLA's against `jaxshrink.core.convs`'s direct one, and what the fence around it is for.

    python experiments/direct_convs.py [--repeats=20] [--out=experiments/results/...json]

For every layer of the thesis FCN (1 -> 5 -> 5 -> 1, 5x5, batch 3) at 64, 128 and 256
px, the MNIST classifiers' first layers and two 8 -> 8 layers, it times, per call and
jitted on their own: the forward pass, the input gradient and the kernel gradient
(each a `jax.vjp` pull of a random output gradient), with `lax.conv_general_dilated`
('xla') and with `convs.direct_conv_general_dilated` ('direct', here on every layer,
whatever 'auto' would pick), and checks they agree; and the direct form's own kernel
gradient wherever it could be ('own': row products, or per-tap sums for one input
channel; 'direct' takes XLA's where that is faster, `convs._own_kernel_grad_faster`).
Then two stacked 5 -> 5 layers (forward and both gradients) with the direct form
fenced, as shipped, and unfenced (`convs._fence` replaced by a plain call): XLA's CPU
fusion then recomputes the first layer inside the second. Prints tables and writes
JSON with the device, date and command; medians of `--repeats` calls.
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxshrink.core import convs, files

NHWC = ("NHWC", "HWIO", "NHWC")
FCN = [(1, 5), (5, 5), (5, 1)]
SIZES = (64, 128, 256)
LAYERS = [
    *[(f"fcn {i}->{o} {s}px b3", (3, s, s, i), (5, 5, i, o)) for s in SIZES for i, o in FCN],
    ("mnist quick 1->4 28px b32", (32, 28, 28, 1), (5, 5, 1, 4)),
    ("mnist quick 4->8 14px b32", (32, 14, 14, 4), (5, 5, 4, 8)),
    ("mnist 004 1->32 28px b50", (50, 28, 28, 1), (5, 5, 1, 32)),
    # Beyond what 'auto' covers (DIRECT_MAX_PAIRS = 32), in the theses' shapes.
    ("edge 8->8 64px b3", (3, 64, 64, 8), (5, 5, 8, 8)),
    ("edge 8->8 14px b32", (32, 14, 14, 8), (5, 5, 8, 8)),
]  # fmt: skip
QUICK_LAYERS = [("fcn 5->5 16px b3", (3, 16, 16, 5), (5, 5, 5, 5))]
# What each form is timed as: the convolution, and the settings of `jaxshrink.core.convs`
# it runs under ('direct' on every layer, whatever 'auto' would pick; 'own' is the
# direct form with its own kernel gradient wherever it applies).
IMPLEMENTATIONS = {
    "xla": (lax.conv_general_dilated, {"DIRECT_MAX_CHANNELS": convs.DIRECT_MAX_CHANNELS}),
    "direct": (
        convs.direct_conv_general_dilated,
        {"DIRECT_MAX_CHANNELS": 1 << 30, "DIRECT_MAX_PAIRS": 1 << 30},
    ),
    "own": (
        convs.direct_conv_general_dilated,
        {
            "DIRECT_MAX_CHANNELS": 1 << 30,
            "DIRECT_MAX_PAIRS": 1 << 30,
            "_own_kernel_grad_faster": lambda shape: True,
        },
    ),
}


def _ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def _arrays(x_shape, k_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=k_shape) * 0.1, jnp.float32)
    g = jnp.asarray(rng.normal(size=x_shape[:3] + k_shape[3:]), jnp.float32)
    return x, k, g


def layer(x_shape, k_shape, repeats: int) -> dict:
    """Forward, input gradient and kernel gradient per implementation (ms), and the
    largest difference of each from XLA's."""
    x, k, g = _arrays(x_shape, k_shape)
    out, ref = {}, {}
    for name, (conv, settings) in IMPLEMENTATIONS.items():

        def forward(x, k, conv=conv):
            return conv(x, k, (1, 1), "SAME", dimension_numbers=NHWC, precision="highest")

        pieces = {
            "forward": jax.jit(forward),
            "input_grad": jax.jit(lambda x, k, g, f=forward: jax.vjp(f, x, k)[1](g)[0]),
            "kernel_grad": jax.jit(lambda x, k, g, f=forward: jax.vjp(f, x, k)[1](g)[1]),
        }
        if name == "own":  # the same forward pass and input gradient as 'direct'
            pieces = {"kernel_grad": pieces["kernel_grad"]}
        with mock.patch.multiple(convs, **settings):
            for piece, fn in pieces.items():
                args = (x, k) if piece == "forward" else (x, k, g)
                out[f"{name}_{piece}_ms"] = _ms(fn, args, repeats)
                value = fn(*args)
                if name == "xla":
                    ref[piece] = value
                else:
                    diff = float(jnp.max(jnp.abs(value - ref[piece])))
                    out[f"{name}_{piece}_max_abs_diff"] = diff
    return out


def stacked(size: int, repeats: int) -> dict:
    """Two 5 -> 5 layers with a ReLU between, forward and both gradients (ms): XLA's,
    the direct form fenced, and unfenced."""
    x, k, _ = _arrays((3, size, size, 5), (5, 5, 5, 5))

    def loss(x, k, conv):
        def layer(h):
            return conv(h, k, (1, 1), "SAME", dimension_numbers=NHWC, precision="highest")

        return jnp.sum(jnp.sin(layer(jax.nn.relu(layer(x)))))

    def grads(conv):
        return jax.jit(jax.grad(lambda x, k: loss(x, k, conv), argnums=(0, 1)))

    out = {
        "xla_ms": _ms(grads(lax.conv_general_dilated), (x, k), repeats),
        "direct_fenced_ms": _ms(grads(convs.direct_conv_general_dilated), (x, k), repeats),
    }
    with mock.patch.object(convs, "_fence", lambda fn, *args: fn(*args)):
        out["direct_unfenced_ms"] = _ms(grads(convs.direct_conv_general_dilated), (x, k), repeats)
    return {"size": size, **out}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="direct_convs.json")
    parser.add_argument("--quick", action="store_true", help="one 16x16 layer (tests)")
    args = parser.parse_args(argv)
    layers = QUICK_LAYERS if args.quick else LAYERS
    rows = {name: layer(xs, ks, args.repeats) for name, xs, ks in layers}
    head = f"{'layer':<27}" + "".join(
        f" {p + ' xla/direct':>20}" for p in ("forward", "input_grad", "kernel_grad")
    )
    print(head + f" {'own kernel_grad':>20}  (ms per call)")
    for name, r in rows.items():
        cells = "".join(
            f" {r[f'xla_{p}_ms']:>9.2f}/{r[f'direct_{p}_ms']:<10.2f}"
            for p in ("forward", "input_grad", "kernel_grad")
        )
        print(f"{name:<27}{cells} {r['own_kernel_grad_ms']:>20.2f}")
    stacks = [stacked(s, max(1, args.repeats // 4)) for s in ((16,) if args.quick else (64,))]
    print(f"\n{'two 5->5 layers':<16} {'xla':>8} {'direct':>8} {'unfenced':>9}  (ms, fwd + grads)")
    for r in stacks:
        print(f"{r['size']:>4}px{'':<10} {r['xla_ms']:>8.2f} {r['direct_fenced_ms']:>8.2f} "
              f"{r['direct_unfenced_ms']:>9.2f}")  # fmt: skip
    report = {
        **files.provenance("python experiments/direct_convs.py", argv),
        "layers": rows,
        "stacked": stacks,
    }
    files.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
