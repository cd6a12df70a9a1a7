"""Measured inference latency: onnxruntime on the CPU and XLA on the default backend.

Both time one call on a fixed batch: a few untimed warm-up calls (XLA compiles in the
first), then calls until `repeats` are timed or `budget_s` seconds are spent (at least
`min_repeats`), and the median is reported with the count. A measurement is of this
machine at this moment: the JSON beside it names the device, the thread count and the
batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import jax
import numpy as np


def median_seconds(
    call: Callable[[], object],
    *,
    warmup: int = 2,
    repeats: int = 20,
    min_repeats: int = 3,
    budget_s: float = 10.0,
) -> dict:
    """Median wall seconds of `call()` (which must block until its result is ready)."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (
        len(times) < min_repeats or time.perf_counter() - start < budget_s
    ):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(times)), "repeats": len(times)}


def onnxruntime_latency(path: str, x: np.ndarray, threads: int = 0, **kwargs) -> dict:
    """Median seconds of one onnxruntime CPU call of the file `path` on batch `x`."""
    from jaxshrink.deploy import onnx as onnx_export

    sess = onnx_export.session(path, threads)
    name = sess.get_inputs()[0].name
    feed = {name: np.asarray(x, np.float32)}
    out = median_seconds(lambda: sess.run(None, feed), **kwargs)
    out["threads"] = int(threads) or os.cpu_count()
    return out


def xla_latency(fn: Callable, x: np.ndarray, **kwargs) -> dict:
    """Median seconds of one call of `jax.jit(fn)` on batch `x` (compile excluded)."""
    jitted = jax.jit(fn)
    dev = jax.device_put(np.asarray(x, np.float32))
    out = median_seconds(lambda: jax.block_until_ready(jitted(dev)), **kwargs)
    out["device"] = jax.devices()[0].device_kind
    return out
