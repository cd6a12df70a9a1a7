"""The physically smaller network: "leaving out the said masks" (thesis 2.4).

`compact(params, masks)` drops every disabled unit (its kernel slice and bias) and
the matching input channels of the next layer. The result is an ordinary FCN whose
layer widths are the numbers of kept units, run with all-true masks. Because a
disabled unit outputs exactly zero, the weights that read it contribute nothing,
so the compact network computes the same function as the masked one.

Counting (`count_params`, `count_flops`) follows the same rule: a layer's
parameters are k*k*C_in_alive*C_out_alive + C_out_alive, and a forward pass costs
2*k*k*C_in*C_out multiply-add FLOPs plus C_out bias additions per pixel (ReLU and
masking not counted).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink import files, models
from jaxshrink import masks as masks_lib


def compact(params: dict, masks: dict) -> dict:
    """Params of the smaller network without the disabled units."""
    out, keep_in = {}, None
    for name in masks_lib.layer_names(masks):
        keep = np.asarray(masks[name])
        kernel = np.asarray(params[name]["kernel"])
        if keep_in is not None:
            kernel = kernel[..., keep_in, :]
        out[name] = {
            "kernel": jnp.asarray(kernel[..., keep]),
            "bias": jnp.asarray(np.asarray(params[name]["bias"])[keep]),
        }
        keep_in = keep
    return out


def widths(params: dict) -> tuple[int, ...]:
    """Output units per layer of a params tree."""
    return tuple(int(params[n]["bias"].shape[0]) for n in masks_lib.layer_names(params))


def make_compact_apply(model_cfg, compact_params: dict):
    """`apply(params, x)` of the compact network (all units enabled)."""
    module = models.FCN(
        features=widths(compact_params),
        kernel_size=int(model_cfg.kernel_size),
        init_std=float(model_cfg.init_std),
        precision=model_cfg.get("precision", "highest"),
    )
    ones = masks_lib.full(compact_params, True)

    def apply(params, x):
        return module.apply({"params": params}, x, ones)

    return apply


def _layer_sizes(masks: dict, in_channels: int):
    c_in = in_channels
    for name in masks_lib.layer_names(masks):
        c_out = int(np.sum(np.asarray(masks[name])))
        yield c_in, c_out
        c_in = c_out


def count_params(masks: dict, kernel_size: int, in_channels: int = 1) -> int:
    """Parameters of the network that keeps exactly the enabled units."""
    k2 = kernel_size * kernel_size
    return sum(k2 * c_in * c_out + c_out for c_in, c_out in _layer_sizes(masks, in_channels))


def count_flops(
    masks: dict, kernel_size: int, height: int, width: int, in_channels: int = 1
) -> int:
    """Forward FLOPs for one image of `height` x `width`."""
    k2 = kernel_size * kernel_size
    per_pixel = sum(
        2 * k2 * c_in * c_out + c_out for c_in, c_out in _layer_sizes(masks, in_channels)
    )
    return per_pixel * height * width


def time_inference(fn, x, repeats: int = 20) -> float:
    """Median seconds per call of a jitted `fn(x)` (compile excluded)."""
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def export(path: str, model_cfg, params: dict, masks: dict, apply, x) -> dict:
    """Writes the compact network to `path` and checks it against the masked one.

    Args:
      path: folder; gets `params.npz` (flat 'layer/leaf' arrays) and `model.json`.
      model_cfg: `config.model`.
      params, masks: the masked network.
      apply: the masked network's `apply(params, masks, x)`.
      x: a batch of inputs for the check and the timing.

    Returns:
      A report: widths, parameter counts, max abs difference, inference times.

    Raises:
      AssertionError: if the compact network's outputs differ from the masked one's.
    """
    small = compact(params, masks)
    small_apply = jax.jit(make_compact_apply(model_cfg, small))
    full_apply = jax.jit(apply)
    want = np.asarray(full_apply(params, masks, x))
    got = np.asarray(small_apply(small, x))
    max_diff = float(np.max(np.abs(want - got)))
    if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise AssertionError(
            f"exported network differs from the masked one (max |diff| {max_diff})"
        )

    os.makedirs(path, exist_ok=True)
    flat = {
        f"{layer}/{leaf}": np.asarray(v)
        for layer, leaves in small.items()
        for leaf, v in leaves.items()
    }
    with files.atomic_path(os.path.join(path, "params.npz")) as tmp:
        np.savez(tmp, **flat)
    full_masks = masks_lib.full(params, True)
    k, c_in = int(model_cfg.kernel_size), int(model_cfg.in_channels)
    report = {
        "widths": list(widths(small)),
        "full_widths": list(widths(params)),
        "params": count_params(masks, k, c_in),
        "full_params": count_params(full_masks, k, c_in),
        "max_abs_diff": max_diff,
        "inference_seconds": time_inference(lambda v: small_apply(small, v), x),
        "full_inference_seconds": time_inference(lambda v: full_apply(params, full_masks, v), x),
        "timing_batch": list(x.shape),
    }
    files.write_json(
        os.path.join(path, "model.json"), {"kernel_size": k, "in_channels": c_in, **report}
    )
    return report


def load(path: str) -> dict:
    """Reads the params tree written by `export`."""
    with np.load(os.path.join(path, "params.npz")) as z:
        out: dict = {}
        for key in z.files:
            layer, leaf = key.split("/")
            out.setdefault(layer, {})[leaf] = jnp.asarray(z[key])
    return out
