"""The static description of a model's maskable layers: what every unit owns and feeds.

Everything that shrinks a network reads this description and nothing else: masks,
per-unit freezing, candidate eligibility, the cosine unit vectors, the physically
smaller export, parameter and FLOP counts and the pictures. No other module knows
layer names or kernel layouts.

A *layer* is one maskable operation (a convolution, a transposed convolution or a
dense layer) with `units` outputs (filters or neurons). For each layer the spec says:

* `owns`: the array axes that belong to its units. Unit ``u`` owns the slice ``u``
  along `axis` of each listed leaf: the kernel's last axis and the bias in Flax's
  layout, and the scale, bias (collection 'params') and running mean and variance
  (collection 'batch_stats') of a batch norm that normalises the layer's output.
  Freezing a unit freezes exactly its 'params' slices; export keeps only the kept
  units' slices of every collection.
* `feeds`: the input axes of the next layer that read this layer's units. Input ``i``
  of such an axis reads unit ``i % units``. That covers a convolution feeding a
  convolution (kernel axis -2, one input per unit) and a convolution feeding a dense
  layer through pooling and an NHWC flatten: conv unit ``c`` of ``C`` feeds dense
  inputs ``c, c + C, c + 2C, ...`` (one per pixel left after pooling).
* `window`, `positions` and `in_features` for FLOP counts: a layer costs
  ``positions * (2 * window * inputs_alive * units_alive + units_alive)`` FLOPs per
  example (multiply-adds and the bias; activations, pooling and masking are not
  counted). `positions` is where the kernel is applied: output pixels for a
  convolution, *input* pixels for a transposed convolution (each input pixel
  scatters one k x k window), 1 for a dense layer on a vector.

`trace(module, input_shape, layers)` builds the spec of a Flax module whose named
sub-modules `layers` form a chain (each feeds the next), by tracing it once with
`jax.eval_shape`: no FLOP is spent and no parameter is allocated. An `nn.BatchNorm`
called after a layer (before the next one) over that layer's units belongs to it. A
model whose layers do not form a chain (skip connections) can state its `ModelSpec` by
hand.

*Depth.* A layer whose input and output have the same shape may be declared
`bypass`: the model then replaces its output by its input when none of its units is
alive (``where(any(masks[name]), output, input)``). The per-layer gate is thus
``any(masks[name])``, traced data like every mask, and a layer is removed or restored
by the same mask trees, rollback and checkpoints as a unit. `live_outputs` says which
channels each layer passes on (a bypassed layer passes on its input's), and
`input_keep`, `count_flops` and the export read it, so a bypassed layer costs nothing
and the export builds the network without it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

KINDS = {nn.Conv: "conv", nn.ConvTranspose: "conv_transpose", nn.Dense: "dense"}


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One axis of one array of a variable collection."""

    path: tuple[str, ...]  # key path inside the collection, e.g. ('conv_0', 'kernel')
    axis: int  # the axis whose entries belong to (or read) units
    collection: str = "params"


@dataclasses.dataclass(frozen=True)
class Layer:
    """One maskable layer (see the module docstring)."""

    name: str  # mask key: the module path joined by '/', e.g. 'conv_0' or 'enc/conv_1'
    kind: str  # 'conv', 'conv_transpose' or 'dense'
    units: int
    owns: tuple[Leaf, ...]  # the first one is the kernel
    feeds: tuple[Leaf, ...]  # input axes of later layers that read this layer's units
    candidate: bool  # may be disabled; False for the output layer
    window: int  # kernel taps per output per input unit (k*k; 1 for dense)
    positions: int  # kernel applications per example
    in_features: int  # size of the kernel's input axis with every unit alive
    bypass: bool = False  # with no unit alive, the layer passes its input on unchanged

    @property
    def kernel(self) -> Leaf:
        return self.owns[0]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The maskable layers of a model, in network order."""

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]  # one example, without the batch axis

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def candidates(self) -> list[Layer]:
        """The layers whose units may be disabled, in network order."""
        return [layer for layer in self.layers if layer.candidate]

    @property
    def bypassable(self) -> list[Layer]:
        """The layers that may be bypassed (removed from the depth), in network order."""
        return [layer for layer in self.layers if layer.bypass]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no maskable layer {name!r}; layers: {self.names}")

    def widths(self, masks: Mapping | None = None) -> dict[str, int]:
        """Units per layer: all of them, or the kept ones of `masks`."""
        if masks is None:
            return {layer.name: layer.units for layer in self.layers}
        return {name: int(np.sum(np.asarray(masks[name]))) for name in self.names}


# ------------------------------------------------------------------------ tree access


def get(collection: Mapping, leaf: Leaf):
    """The array at `leaf.path` in `collection` (e.g. the params tree)."""
    node = collection
    for key in leaf.path:
        node = node[key]
    return node


def set_path(tree: dict, path: tuple[str, ...], value) -> dict:
    """A copy of nested dict `tree` with `path` replaced (other branches shared)."""
    head, *rest = path
    out = dict(tree)
    out[head] = set_path(tree[head], tuple(rest), value) if rest else value
    return out


def _along(values: jax.Array, axis: int, ndim: int) -> jax.Array:
    """`values` (1-D) reshaped to broadcast along `axis` of an `ndim`-D array."""
    axis = axis % ndim
    return values.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))


# ---------------------------------------------------------------------- unit values


def full(spec: ModelSpec, value: bool = True) -> dict[str, jax.Array]:
    """A per-unit tree ``{layer: bool[units]}`` with every entry `value`."""
    return {layer.name: jnp.full((layer.units,), value, bool) for layer in spec.layers}


def expand(
    spec: ModelSpec, unit_tree: Mapping, params: dict, fill=False, collection: str = "params"
) -> dict:
    """Per-unit values broadcast onto the leaves the units own.

    Args:
      spec: the model's spec.
      unit_tree: ``{layer: (units,)}`` values (e.g. frozen flags).
      params: the variable collection `collection`, for structure and shapes.
      fill: the value for entries no unit owns (e.g. a layer that is not maskable).
      collection: which collection `params` is ('params' or e.g. 'batch_stats').

    Returns:
      A tree shaped like `params`; ``out[leaf][..., u, ...] = unit_tree[layer][u]``
      along each owned leaf's unit axis.
    """
    out = jax.tree.map(lambda p: jnp.full(p.shape, fill, jnp.asarray(fill).dtype), params)
    for layer in spec.layers:
        values = jnp.asarray(unit_tree[layer.name])
        for leaf in layer.owns:
            if leaf.collection != collection:
                continue
            shape = get(params, leaf).shape
            spread = jnp.broadcast_to(_along(values, leaf.axis, len(shape)), shape)
            out = set_path(out, leaf.path, spread.astype(get(out, leaf).dtype))
    return out


def gates(spec: ModelSpec, masks: Mapping) -> dict[str, jax.Array]:
    """Per layer, whether it computes (True) or is bypassed (False; `bypass` layers only)."""
    out = {}
    for layer in spec.layers:
        alive = jnp.any(jnp.asarray(masks[layer.name]))
        out[layer.name] = alive if layer.bypass else jnp.ones((), bool)
    return out


def depth(spec: ModelSpec, masks: Mapping) -> int:
    """The number of layers that compute (bypassed ones left out)."""
    return int(sum(bool(g) for g in gates(spec, masks).values()))


def live_outputs(spec: ModelSpec, masks: Mapping) -> dict[str, jax.Array]:
    """Per layer, which of its output channels carry a live unit's value.

    A computing layer passes on its own mask; a bypassed layer passes on its input,
    the live outputs of the layer before it (all True for the network's input).
    """
    out, previous = {}, None
    for layer in spec.layers:
        mask = jnp.asarray(masks[layer.name])
        if layer.bypass:
            before = jnp.ones_like(mask) if previous is None else previous
            mask = jnp.where(jnp.any(mask), mask, before)
        out[layer.name] = previous = mask
    return out


def input_keep(spec: ModelSpec, masks: Mapping) -> dict[tuple, jax.Array]:
    """For every fed input axis, which inputs read a live unit.

    Returns:
      ``{(collection, path, axis): bool[inputs]}``: input ``i`` is kept when channel
      ``i % units`` of the layer feeding it is live (`live_outputs`: through a
      bypassed layer, the live units before it). An axis fed by several layers (e.g.
      a concatenation described by hand) keeps the AND of their patterns.
    """
    out: dict[tuple, jax.Array] = {}
    sizes = _fed_sizes(spec)
    live = live_outputs(spec, masks)
    for layer in spec.layers:
        mask = live[layer.name]
        for leaf in layer.feeds:
            key = (leaf.collection, leaf.path, leaf.axis)
            size = sizes[key]
            keep = jnp.tile(mask, size // layer.units)
            out[key] = out[key] & keep if key in out else keep
    return out


def _fed_sizes(spec: ModelSpec) -> dict[tuple, int]:
    """The size of every fed axis: the reading layer's `in_features`."""
    sizes = {}
    for layer in spec.layers:
        for fed in layer.feeds:
            reader = next(r for r in spec.layers if r.kernel.path == fed.path)
            sizes[(fed.collection, fed.path, fed.axis)] = reader.in_features
    return sizes


def unit_vectors(spec: ModelSpec, params: dict, masks: Mapping, name: str) -> jax.Array:
    """(units, features) rows: everything a unit owns, flattened in `owns` order.

    For the thesis's FCN a row is the unit's k*k*C_in kernel, then its bias. Inputs
    that read a disabled unit of an earlier layer are zeroed: they multiply a
    constant zero and do not shape what the unit computes.
    """
    layer = spec.layer(name)
    keeps = input_keep(spec, masks)
    parts = []
    for leaf in layer.owns:
        if leaf.collection != "params":
            continue
        value = get(params, leaf)
        for (collection, path, axis), keep in keeps.items():
            if collection == leaf.collection and path == leaf.path:
                value = value * _along(keep, axis, value.ndim).astype(value.dtype)
        value = jnp.moveaxis(value, leaf.axis, 0)
        parts.append(value.reshape(layer.units, -1))
    return jnp.concatenate(parts, axis=1)


# ------------------------------------------------------------------------- counting


def count_flops(spec: ModelSpec, masks: Mapping | None = None) -> int:
    """Forward FLOPs per example of the network that keeps the enabled units."""
    masks = full(spec) if masks is None else masks
    keeps = input_keep(spec, masks)
    total = 0
    for layer in spec.layers:
        out_alive = int(np.sum(np.asarray(masks[layer.name])))
        fed = [keep for (_, path, _), keep in keeps.items() if path == layer.kernel.path]
        in_alive = int(np.sum(np.asarray(fed[0]))) if fed else layer.in_features
        total += layer.positions * (2 * layer.window * in_alive * out_alive + out_alive)
    return total


def count_params(tree) -> int:
    """Number of scalars in a params tree (use on the compact tree for a kept count)."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))


# ------------------------------------------------------------------------- building


def _norm_leaves(path: tuple[str, ...], params: Mapping, stats: Mapping) -> list[Leaf]:
    """The per-unit leaves of the batch norm at `path`: scale, bias, mean, var."""
    leaves = []
    for collection, tree, names in (
        ("params", params, ("scale", "bias")),
        ("batch_stats", stats, ("mean", "var")),
    ):
        node = tree
        for key in path:
            node = node.get(key, {}) if isinstance(node, Mapping) else {}
        leaves += [Leaf(path + (n,), 0, collection) for n in names if n in node]
    return leaves


def trace(
    module: nn.Module,
    input_shape: Sequence[int],
    layers: Sequence[str],
    *,
    candidates: Sequence[str] | None = None,
    call_kwargs: Mapping | None = None,
    bypassable: Sequence[str] | str = (),
) -> ModelSpec:
    """The spec of a Flax module whose sub-modules `layers` form a chain.

    The module is traced once with `jax.eval_shape` (scalar masks of 1 stand in for
    the real ones, so `masks[name]` must only be multiplied in). Each named layer
    must be an `nn.Conv`, `nn.ConvTranspose` or `nn.Dense` (Flax's kernel layout:
    units on the last axis, inputs on the one before); layer ``i`` feeds the kernel
    input axis of layer ``i + 1``, whose size must be a multiple of its units
    (``units * pixels`` after a flatten).

    Args:
      module: the model; called as ``module(x, masks, train=False)``.
      input_shape: one example's shape, e.g. (28, 28, 1).
      layers: the maskable sub-modules in network order, as '/'-joined paths.
      candidates: layers whose units may be disabled (default: all but the last).
      call_kwargs: extra keyword arguments for the call (default ``train=False``).
      bypassable: candidate layers the module bypasses when none of their units is
        alive (see the module docstring), or ``'auto'``: every candidate layer whose
        input and output shapes are equal (what `models.sequential.Sequential` with
        ``bypass=True`` does).

    Raises:
      ValueError: a layer is missing, of another type, or does not chain; a
        bypassable layer is not a candidate or changes the shape.
    """
    layers = list(layers)
    if len(layers) < 1:
        raise ValueError("a model needs at least one maskable layer")
    candidates = layers[:-1] if candidates is None else list(candidates)
    seen, norms, variables = _record_calls(module, input_shape, layers, call_kwargs)
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    built = [_layer_fields(name, seen, norms, params, stats, candidates) for name in layers]
    if bypassable == "auto":
        bypassable = [n for n in candidates if n in seen and seen[n][1] == seen[n][2]]
    _check_bypassable(bypassable, layers, candidates, seen)
    for layer in built:
        layer["bypass"] = layer["name"] in bypassable
    return ModelSpec(layers=_chain(built), input_shape=tuple(int(d) for d in input_shape))


def _record_calls(module: nn.Module, input_shape, layers: list[str], call_kwargs):
    """Traces `module` once; returns what its listed layers were called with.

    Returns:
      ``(seen, norms, variables)``: per listed layer called, ``(class, input shape,
      output shape)``; per layer, the paths of the batch norms that follow it (called
      after it and before the next listed layer, over its units); the variables'
      shapes.
    """
    seen: dict[str, tuple] = {}
    norms: dict[str, list[tuple[str, ...]]] = {}  # layer -> its batch norms' paths
    last: list[str] = []  # the latest listed layer called

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        name = "/".join(context.module.path)
        if context.method_name != "__call__":
            return out
        if name in layers:
            seen[name] = (type(context.module), tuple(args[0].shape), tuple(out.shape))
            last[:] = [name]
        elif isinstance(context.module, nn.BatchNorm) and last:
            owner = last[0]
            if out.shape[-1] == seen[owner][2][-1]:
                norms.setdefault(owner, []).append(tuple(context.module.path))
        return out

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    masks = {name: jnp.ones((), bool) for name in layers}
    kwargs = {"train": False} if call_kwargs is None else dict(call_kwargs)

    def init(x):
        with nn.intercept_methods(record):
            return module.init(jax.random.PRNGKey(0), x, masks, **kwargs)

    variables = jax.eval_shape(init, x)
    return seen, norms, variables


def _layer_fields(name: str, seen, norms, params, stats, candidates) -> dict:
    """One listed layer's `Layer` fields but its ``feeds`` and ``bypass``."""
    if name not in seen:
        raise ValueError(f"layer {name!r} was not called by the module (known: {sorted(seen)})")
    cls, in_shape, out_shape = seen[name]
    kind = next((k for c, k in KINDS.items() if issubclass(cls, c)), None)
    if kind is None:
        raise ValueError(
            f"layer {name!r} is a {cls.__name__}; maskable: Conv, ConvTranspose, Dense"
        )
    path = tuple(name.split("/"))
    node = params
    for key in path:
        node = node[key]
    kernel = node["kernel"].shape
    owns = [Leaf(path + ("kernel",), -1)]
    if "bias" in node:
        owns.append(Leaf(path + ("bias",), 0))
    for norm in norms.get(name, ()):
        owns += _norm_leaves(norm, params, stats)
    pixels = in_shape[1:-1] if kind == "conv_transpose" else out_shape[1:-1]
    return dict(
        name=name,
        kind=kind,
        units=int(kernel[-1]),
        owns=tuple(owns),
        candidate=name in candidates,
        window=math.prod(kernel[:-2]),
        positions=math.prod(pixels),
        in_features=int(kernel[-2]),
    )


def _check_bypassable(bypassable, layers, candidates, seen) -> None:
    """Raises if a bypassable layer is not a candidate or changes the shape."""
    for name in bypassable:
        if name not in layers or name not in candidates:
            raise ValueError(f"bypassable layer {name!r} is not a candidate layer {candidates}")
        _, in_shape, out_shape = seen[name]
        if in_shape != out_shape:
            raise ValueError(
                f"layer {name!r} cannot be bypassed: its input {in_shape[1:]} and output "
                f"{out_shape[1:]} shapes differ"
            )


def _chain(built: list[dict]) -> tuple[Layer, ...]:
    """The `Layer`s, each feeding the kernel input axis of the next (checked)."""
    chained = []
    for i, layer in enumerate(built):
        feeds = ()
        if i + 1 < len(built):
            nxt = built[i + 1]
            if nxt["in_features"] % layer["units"]:
                raise ValueError(
                    f"layer {nxt['name']!r} reads {nxt['in_features']} inputs, not a multiple "
                    f"of the {layer['units']} units of {layer['name']!r}: not a chain"
                )
            feeds = (Leaf(nxt["owns"][0].path, -2),)
        chained.append(Layer(feeds=feeds, **layer))
    return tuple(chained)
