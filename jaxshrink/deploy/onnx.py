"""ONNX files of a network, written by jax2onnx and checked with onnxruntime.

`to_onnx(fn, input_shape, path)` converts any pure JAX function of one batch of inputs
(the compact network, its quantized or factorized form: the weights are constants
closed over by `fn`) into an ONNX model whose batch axis is symbolic ('B'). Passing
``spatial=True`` makes the height and width of an image input symbolic too, so a fully
convolutional network exported from 64x64 crops also runs on 256x256 images.

Integer constants stay integers: a quantized kernel written as
``codes.astype(float32) * scale`` is stored as an int8 (or uint8) initializer with a
Cast and a Mul after it, so the file holds one byte per weight, and onnxruntime folds
the dequantization into a float kernel when it loads the model.

`check(path, fn, x)` runs the file with onnxruntime's CPU provider and compares its
outputs with ``fn(x)``: the export is only trusted after this check. jax2onnx, onnx and
onnxruntime are the ``deploy`` extra (``pip install -e ".[deploy]"``); without them
`require()` raises one line that says so.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence

import numpy as np

from jaxshrink.core import errors, files

OPSET = 21  # ONNX opset the files target (onnxruntime 1.2x runs it on every provider)
PACKAGES = ("jax2onnx", "onnx", "onnxruntime")


def missing() -> list[str]:
    """The deploy extra's packages that are not installed."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def require() -> None:
    """Raises a one-line `errors.ConfigError` when the deploy extra is missing."""
    absent = missing()
    if absent:
        raise errors.ConfigError(
            f"deploy.onnx: needs {', '.join(absent)}; install the deploy extra: "
            'pip install -e ".[deploy]"'
        )


def input_dims(input_shape: Sequence[int], spatial: bool = False) -> tuple:
    """jax2onnx's input description: symbolic batch, and symbolic H, W if `spatial`."""
    dims = tuple(int(d) for d in input_shape)
    if spatial and len(dims) == 3:
        return ("B", "H", "W", dims[-1])
    return ("B", *dims)


def to_onnx(
    fn: Callable,
    input_shape: Sequence[int],
    path: str,
    *,
    spatial: bool = False,
    opset: int = OPSET,
    name: str = "jaxshrink",
) -> dict:
    """Writes `fn` (one batch of inputs -> outputs) as an ONNX file at `path`.

    Returns:
      ``{'path', 'opset', 'input_shape' (with 'B', 'H', 'W' for symbolic axes),
      'bytes'}``.
    """
    require()
    import jax2onnx

    dims = input_dims(input_shape, spatial)
    proto = jax2onnx.to_onnx(fn, [dims], model_name=name, opset=opset)
    with files.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
    return {
        "path": os.path.basename(path),
        "opset": opset,
        "input_shape": list(dims),
        "bytes": os.path.getsize(path),
    }


def session(path: str, threads: int = 0):
    """An onnxruntime CPU session of `path` (`threads` 0: onnxruntime's default)."""
    require()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no optimizer chatter per session
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray) -> np.ndarray:
    """The session's single output for the batch `x` (float32)."""
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: np.asarray(x, np.float32)})[0]


def check(path: str, fn: Callable, x: np.ndarray, atol: float = 1e-5) -> float:
    """Max |onnxruntime(x) - fn(x)|; raises AssertionError above `atol`.

    The tolerance is absolute on the outputs (the issue's 1e-5): both sides compute in
    float32, so they differ by accumulation order only.
    """
    got = run(session(path), x)
    want = np.asarray(fn(x))
    if got.shape != want.shape:
        raise AssertionError(f"{path}: ONNX output shape {got.shape}, JAX {want.shape}")
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not diff <= atol:
        raise AssertionError(f"{path}: ONNX output differs from JAX by {diff:.3g} > {atol}")
    return diff
