"""The physically smaller network: "leaving out the said masks" (thesis 2.4).

`compact(model_spec, params, masks)` drops what every disabled unit owns (its kernel
slice, its bias, its batch norm's scale and bias; `compact_state` drops its running
statistics) and the inputs of later layers that read it (`spec.input_keep`: through
a flatten, every pixel's copy). The result is the
params of the same network built at the kept widths (`Model.at_widths`), run with
all-true masks. Because a disabled unit outputs exactly zero, the weights that read
it contribute nothing, so the compact network computes the same function as the
masked one; `export` checks that on real inputs before writing anything. A bypassed
layer (a bypassable layer with no live unit, `spec` module docstring) is left out
whole: its variables are dropped, and the layer after it reads the live channels
before it.

Counts: parameters are counted on the compact tree itself (every leaf, exact);
FLOPs by `spec.count_flops` (multiply-adds and biases of the maskable layers).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink.core import files
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.results import ExportReport


def _take(value: np.ndarray, keep: np.ndarray, axis: int) -> np.ndarray:
    return np.take(value, np.flatnonzero(keep), axis=axis)


def compact(
    model_spec: spec_lib.ModelSpec, params: dict, masks: dict, collection: str = "params"
) -> dict:
    """The variable collection `collection` of the smaller network without the
    disabled units (numpy arrays): its params, or e.g. its 'batch_stats'."""
    out = jax.tree.map(np.asarray, params)
    keeps = spec_lib.input_keep(model_spec, masks)
    for layer in model_spec.layers:
        keep = np.asarray(masks[layer.name])
        for leaf in layer.owns:
            if leaf.collection == collection:
                value = _take(spec_lib.get(out, leaf), keep, leaf.axis)
                out = spec_lib.set_path(out, leaf.path, value)
    for (fed_collection, path, axis), keep in keeps.items():
        if fed_collection == collection:
            leaf = spec_lib.Leaf(path, axis, collection)
            out = spec_lib.set_path(
                out, path, _take(spec_lib.get(out, leaf), np.asarray(keep), axis)
            )
    for layer in model_spec.layers:
        if layer.bypass and not np.any(np.asarray(masks[layer.name])):
            for leaf in layer.owns:
                if leaf.collection == collection:
                    out = _drop(out, leaf.path)
    return out


def _drop(tree: dict, path: tuple[str, ...]) -> dict:
    """A copy of nested dict `tree` without `path`, and without the branches it empties."""
    head, *rest = path
    out = dict(tree)
    if rest:
        out[head] = _drop(tree[head], tuple(rest))
        if out[head]:
            return out
    del out[head]
    return out


def compact_state(model_spec: spec_lib.ModelSpec, state: dict, masks: dict) -> dict:
    """The model state (batch-norm statistics) of the smaller network."""
    return {name: compact(model_spec, tree, masks, name) for name, tree in state.items()}


def time_inference(fn, x, repeats: int = 20) -> float:
    """Median seconds per call of a jitted `fn(x)` (compile excluded)."""
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "/"))
        else:
            out[name] = np.asarray(value)
    return out


def _save(path: str, params: dict, state: dict) -> None:
    """`params.npz` and (when the model has any) `state.npz` in folder `path`."""
    os.makedirs(path, exist_ok=True)
    with files.atomic_path(os.path.join(path, "params.npz")) as tmp:
        np.savez(tmp, **_flat(params))
    if state:
        with files.atomic_path(os.path.join(path, "state.npz")) as tmp:
            np.savez(tmp, **_flat(state))


def _check_same(want: np.ndarray, got: np.ndarray) -> float:
    """The largest |difference| of the masked (`want`) and compact (`got`) outputs.

    Raises:
      AssertionError: they differ beyond float32 rounding (rtol 1e-4, atol 1e-5).
    """
    max_diff = float(np.max(np.abs(want - got))) if want.size else 0.0
    if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise AssertionError(
            f"exported network differs from the masked one (max |diff| {max_diff})"
        )
    return max_diff


def export(path: str, model, params: dict, masks: dict, x, state: dict | None = None) -> dict:
    """Writes the compact network to `path` and checks it against the masked one.

    Args:
      path: folder; gets `params.npz` ('/'-joined parameter paths), `state.npz` (the
        other collections, '/'-joined from the collection name, when the model has
        any) and `model.json`.
      model: the `models.Model` the params belong to.
      params, masks: the masked network.
      x: a batch of inputs for the check and the timing.
      state: the model's state (`Model.init_variables`), e.g. batch-norm statistics.

    Returns:
      The `ExportReport`: widths, parameter and FLOP counts, max abs difference,
      timings.

    Raises:
      AssertionError: if the compact network's outputs differ from the masked one's.
    """
    model_spec = model.spec
    state = dict(state or {})
    small, small_state, small_call = _smaller(model, params, state, masks, x)
    widths = model_spec.widths(masks)
    full_masks = spec_lib.full(model_spec)
    full_apply = jax.jit(lambda p, s, m, v: model.apply(p, m, v, state=s))
    want = np.asarray(full_apply(params, state, masks, x))
    max_diff = _check_same(want, np.asarray(small_call(x)))
    _save(path, small, small_state)
    report = ExportReport(
        layers=tuple(model_spec.names),
        widths=tuple(widths[n] for n in model_spec.names),
        full_widths=tuple(layer.units for layer in model_spec.layers),
        depth=spec_lib.depth(model_spec, masks),
        full_depth=len(model_spec.layers),
        params=spec_lib.count_params(small),
        full_params=spec_lib.count_params(params),
        flops=spec_lib.count_flops(model_spec, masks),
        full_flops=spec_lib.count_flops(model_spec, full_masks),
        max_abs_diff=max_diff,
        inference_seconds=time_inference(small_call, x),
        full_inference_seconds=time_inference(
            lambda v: full_apply(params, state, full_masks, v), x
        ),
        timing_batch=tuple(x.shape),
    )
    files.write_json(
        os.path.join(path, "model.json"),
        {"input_shape": list(model_spec.input_shape), **report.to_json()},
    )
    return report


def _smaller(model, params: dict, state: dict, masks: dict, x):
    """``(params, state, call)`` of the smaller network: its variables (numpy) and a
    jitted ``call(x)`` for inputs of the shape of `x`.

    A module that takes masks is built at the kept widths (`Model.at_widths`) and run
    with all-true masks; a wrapped module's own program is rewritten at the kept
    widths (`Model.small_program`), whose variables are those `compact` keeps.
    """
    if model.wrapped:
        fn, small_vars = model.small_program({"params": params, **state}, masks)
        small_vars = jax.tree.map(np.asarray, dict(small_vars))
        small = small_vars.pop("params")
        device_vars = jax.tree.map(jnp.asarray, {"params": small, **small_vars})
        call = jax.jit(fn)
        return small, small_vars, lambda v: call(device_vars, v)
    small = compact(model.spec, params, masks)
    small_state = compact_state(model.spec, state, masks)
    small_model = model.at_widths(model.spec.widths(masks))
    ones = spec_lib.full(small_model.spec)
    small_apply = jax.jit(lambda p, s, v: small_model.apply(p, ones, v, state=s))
    small_dev = jax.tree.map(jnp.asarray, small)
    small_state_dev = jax.tree.map(jnp.asarray, small_state)
    return small, small_state, lambda v: small_apply(small_dev, small_state_dev, v)


def load(path: str, name: str = "params") -> dict:
    """Reads the params tree written by `export` (``name='state'``: its state, {}
    when the model has none)."""
    if name == "state" and not os.path.exists(os.path.join(path, "state.npz")):
        return {}
    with np.load(os.path.join(path, f"{name}.npz")) as z:
        out: dict = {}
        for key in z.files:
            *parents, leaf = key.split("/")
            node = out
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = jnp.asarray(z[key])
    return out
