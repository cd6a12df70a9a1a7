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
called after a layer (before the next one) over that layer's units belongs to it.

*The chain, checked.* Sizes that divide do not make a chain: a residual add or a
concatenation passes them too, and then a disabled unit is not zero where the spec says
it is (the other summand adds it back), the networks compared are not the ones
reported and the export builds a different one. So `trace` also reads the module's
dataflow (`check_chain`): the channel dependency graph of its forward pass
(`jaxshrink.core.graph`, one more abstract trace) must hold, for every layer, exactly
the group the chain describes, and a module whose graph does not is refused in one
line naming the layer. A `ModelSpec` written by hand is not traced and not checked.

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

from jaxshrink.core import errors
from jaxshrink.core import graph as graph_lib

KINDS = {nn.Conv: "conv", nn.ConvTranspose: "conv_transpose", nn.Dense: "dense"}


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One axis of one array of a variable collection."""

    path: tuple[str, ...]  # key path inside the collection, e.g. ('conv_0', 'kernel')
    axis: int  # the axis whose entries belong to (or read) units
    collection: str = "params"
    # Per entry of the axis, the unit it belongs to (-1: another layer's or none's).
    # None: entry i is unit i (an owned axis) or unit i % units (a fed axis). A layer
    # read from the channel graph (`groups`) always says, since its channels may sit
    # at an offset (a concatenation) or share an axis with another layer's.
    owner: tuple[int, ...] | None = None


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
    # With no unit alive, a chain's layer passes its input on unchanged; a channel
    # group (`ModelSpec.grouped`) is a branch the data does not need (`groups`).
    bypass: bool = False
    # The module whose output the units' activation sees (their batch norm's, else
    # the layer's own); None: found from `owns` (`preactivation_path`).
    preactivation: tuple[str, ...] | None = None

    def preactivation_path(self) -> tuple[str, ...]:
        """The module whose output the layer's activation sees."""
        if self.preactivation is not None:
            return self.preactivation
        own = tuple(self.name.split("/"))
        norms = [leaf.path[:-1] for leaf in self.owns if leaf.path[:-1] != own]
        return norms[-1] if norms else own

    @property
    def kernel(self) -> Leaf:
        return self.owns[0]


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One convolution or dense kernel, for FLOP counts of a model whose layers are
    channel groups (`groups`): a group may hold several kernels' outputs, and a
    kernel reads one group and writes another."""

    path: tuple[str, ...]  # the kernel's path in 'params'
    out_axis: int  # its output-feature axis (the last, in Flax's layout)
    in_axis: int  # its input-feature axis
    out_features: int
    in_features: int
    window: int  # taps per output per input feature
    positions: int  # applications per example
    bias: bool  # whether a bias of out_features follows it


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The maskable layers of a model, in network order."""

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]  # one example, without the batch axis
    # Every kernel, when the layers are channel groups; () for a chain, whose layers
    # are its kernels.
    kernels: tuple[Kernel, ...] = ()

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def candidates(self) -> list[Layer]:
        """The layers whose units may be disabled, in network order."""
        return [layer for layer in self.layers if layer.candidate]

    @property
    def grouped(self) -> bool:
        """Whether the layers are channel groups (`jaxshrink.core.groups`), not a chain."""
        return bool(self.kernels)

    @property
    def bypassable(self) -> list[Layer]:
        """The layers that may be bypassed (removed from the depth), in network order."""
        return [layer for layer in self.layers if layer.bypass]

    def kernel_leaves(self) -> list[tuple[str, Leaf]]:
        """``(name, leaf)`` of every convolution and dense kernel, the leaf's axis its
        output features: a chain's layers' kernels, or a grouped model's `kernels`
        named by their module paths."""
        if self.grouped:
            return [("/".join(k.path[:-1]), Leaf(k.path, k.out_axis)) for k in self.kernels]
        return [(layer.name, layer.kernel) for layer in self.layers]

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


def per_entry(leaf: Leaf, values: jax.Array, length: int, fill) -> jax.Array:
    """Per-unit `values` spread over the `length` entries of `leaf`'s axis: entry i gets
    its owner's value (`Leaf.owner`; without one, unit ``i % units``), `fill` where no
    unit of this layer owns it."""
    values = jnp.asarray(values)
    if leaf.owner is None:
        return jnp.tile(values, length // values.shape[0])
    owner = np.asarray(leaf.owner)
    return jnp.where(owner >= 0, values[np.maximum(owner, 0)], jnp.asarray(fill, values.dtype))


def expand(
    spec: ModelSpec, unit_tree: Mapping, params: dict, fill=False, collection: str = "params"
) -> dict:
    """Per-unit flags broadcast onto the leaves the units own.

    Args:
      spec: the model's spec.
      unit_tree: ``{layer: (units,)}`` booleans (e.g. frozen flags, or masks).
      params: the variable collection `collection`, for structure and shapes.
      fill: the value for entries no unit owns (e.g. a layer that is not maskable).
      collection: which collection `params` is ('params' or e.g. 'batch_stats').

    Returns:
      A bool tree shaped like `params`; ``out[leaf][..., u, ...] = unit_tree[layer][u]``
      along each owned leaf's unit axis. An entry owned by several layers (along two
      axes, or by a layer's channels at an offset) combines their flags with OR when
      `fill` is False (frozen by any) and with AND when it is True (kept by all).
    """
    fill = bool(fill)
    combine = jnp.logical_and if fill else jnp.logical_or
    out = jax.tree.map(lambda p: jnp.full(p.shape, fill, bool), params)
    for layer in spec.layers:
        values = jnp.asarray(unit_tree[layer.name], bool)
        for leaf in layer.owns:
            if leaf.collection != collection:
                continue
            shape = get(params, leaf).shape
            axis = leaf.axis % len(shape)
            entries = per_entry(leaf, values, shape[axis], fill)
            spread = jnp.broadcast_to(_along(entries, axis, len(shape)), shape)
            out = set_path(out, leaf.path, combine(get(out, leaf), spread))
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

    A computing layer passes on its own mask; a bypassed layer of a chain passes on
    its input, the live outputs of the layer before it (all True for the network's
    input). A channel group passes on its own mask, emptied or not.
    """
    out, previous = {}, None
    for layer in spec.layers:
        mask = jnp.asarray(masks[layer.name])
        if layer.bypass and not spec.grouped:
            before = jnp.ones_like(mask) if previous is None else previous
            mask = jnp.where(jnp.any(mask), mask, before)
        out[layer.name] = previous = mask
    return out


def input_keep(spec: ModelSpec, masks: Mapping) -> dict[tuple, jax.Array]:
    """For every fed input axis, which inputs read a live unit.

    Returns:
      ``{(collection, path, axis): bool[inputs]}``: input ``i`` is kept when channel
      ``i % units`` of the layer feeding it is live (`live_outputs`: through a
      bypassed layer, the live units before it), or its `Leaf.owner` is. An axis fed
      by several layers (a concatenation) keeps the AND of their patterns.
    """
    out: dict[tuple, jax.Array] = {}
    sizes = _fed_sizes(spec)
    live = live_outputs(spec, masks)
    for layer in spec.layers:
        mask = jnp.asarray(live[layer.name])
        for leaf in layer.feeds:
            key = (leaf.collection, leaf.path, leaf.axis)
            keep = per_entry(leaf, mask, sizes.get(key, layer.units), True)
            out[key] = out[key] & keep if key in out else keep
    return out


def owned_keep(spec: ModelSpec, masks: Mapping) -> dict[tuple, jax.Array]:
    """For every owned axis, which entries belong to live units (or to no layer):
    ``{(collection, path, axis): bool[entries]}``, ANDed over the layers that own
    entries of it. An axis with no `Leaf.owner` has one entry per unit."""
    out: dict[tuple, jax.Array] = {}
    for layer in spec.layers:
        mask = jnp.asarray(masks[layer.name])
        for leaf in layer.owns:
            key = (leaf.collection, leaf.path, leaf.axis)
            length = layer.units if leaf.owner is None else len(leaf.owner)
            keep = per_entry(leaf, mask, length, True)
            out[key] = out[key] & keep if key in out else keep
    return out


def _fed_sizes(spec: ModelSpec) -> dict[tuple, int]:
    """The size of every fed axis: its owners' count, or the reading layer's
    `in_features`."""
    sizes = {}
    for layer in spec.layers:
        for fed in layer.feeds:
            key = (fed.collection, fed.path, fed.axis)
            if fed.owner is not None:
                sizes[key] = len(fed.owner)
                continue
            reader = next(r for r in spec.layers if r.kernel.path == fed.path)
            sizes[key] = reader.in_features
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
        if leaf.owner is not None:  # each unit's entries, in order
            owner = np.asarray(leaf.owner)
            rows = [np.flatnonzero(owner == u) for u in range(layer.units)]
            axis = leaf.axis % value.ndim
            value = jnp.take(value, np.stack(rows), axis=axis)  # (..., units, m, ...)
            value = jnp.moveaxis(value, (axis, axis + 1), (0, 1))
        else:
            value = jnp.moveaxis(value, leaf.axis, 0)
        parts.append(value.reshape(layer.units, -1))
    return jnp.concatenate(parts, axis=1)


# ------------------------------------------------------------------------- counting


def count_flops(spec: ModelSpec, masks: Mapping | None = None) -> int:
    """Forward FLOPs per example of the network that keeps the enabled units."""
    masks = full(spec) if masks is None else masks
    keeps = input_keep(spec, masks)
    if spec.kernels:
        return _kernel_flops(spec, masks, keeps)
    total = 0
    for layer in spec.layers:
        out_alive = int(np.sum(np.asarray(masks[layer.name])))
        fed = [keep for (_, path, _), keep in keeps.items() if path == layer.kernel.path]
        in_alive = int(np.sum(np.asarray(fed[0]))) if fed else layer.in_features
        total += layer.positions * (2 * layer.window * in_alive * out_alive + out_alive)
    return total


def _kernel_flops(spec: ModelSpec, masks: Mapping, keeps: Mapping) -> int:
    """`count_flops` of a model described by its kernels: each costs ``positions * (2 *
    window * inputs kept * outputs kept + outputs kept)`` (the last term with a bias)."""
    owned = owned_keep(spec, masks)
    total = 0
    for k in spec.kernels:
        out_keep = owned.get(("params", k.path, k.out_axis))
        in_keep = keeps.get(("params", k.path, k.in_axis))
        outs = k.out_features if out_keep is None else int(np.sum(np.asarray(out_keep)))
        ins = k.in_features if in_keep is None else int(np.sum(np.asarray(in_keep)))
        total += k.positions * (2 * k.window * ins * outs + (outs if k.bias else 0))
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
      errors.ConfigError: the sizes chain but the dataflow does not (`check_chain`).
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
    model_spec = ModelSpec(layers=_chain(built), input_shape=tuple(int(d) for d in input_shape))
    check_chain(module, model_spec, variables, call_kwargs)
    return model_spec


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


# ------------------------------------------------------------------ the chain, checked

# Why a refused model cannot be shrunk as described, after the reason.
_COUPLED = (
    "a chain of layers cannot describe coupled channels, so the model is refused rather than "
    "shrunk wrongly"
)
_UNMASKED = "multiply every maskable layer's output by its mask"
_UNREAD = "Model.create reads a model's chain from its traced forward pass"
# How `graph` words a channel that an element-wise op joins to the data or a constant.
_MEETS = "meets the data or a constant in"


def check_chain(
    module: nn.Module,
    model_spec: ModelSpec,
    variables,
    call_kwargs: Mapping | None = None,
) -> None:
    """Refuses a module whose dataflow is not the chain `model_spec` describes.

    The spec says that layer i's units are made by its own kernel, bias, batch norm and
    mask alone, and read only by the kernel input axis of layer i + 1, input ``j``
    reading unit ``j % units``. `jaxshrink.core.graph.channel_groups` follows every
    channel through the module's inference forward pass, traced once with the
    variables' and masks' shapes (no FLOP is spent): the masks are traced variables
    too, so each layer's mask shows up in the group of the channels it multiplies.
    Each layer's output channels must then be one group holding exactly the slices
    above, one channel per unit. A residual add ties the summands' producers into one
    group, a concatenation or a skip connection adds readers or offsets them, the
    input added to a layer's output meets the data, a layer whose mask multiplies
    nothing of it cannot be disabled, a channel-major flatten reads unit
    ``j // pixels`` instead of ``j % units``: each is refused, naming the first layer
    (network order) whose group is wrong. Convolutions and dense layers with their own
    product function are traced with Flax's plain one (`plain_products`), which
    computes the same function in primitives the graph can follow.

    One coupling is the spec's own: a bypassable layer (`bypass`) passes its input on
    when none of its units is alive (``where(any(mask), output, input)``), which ties
    its output channels to those of the layer before it, index for index. The spec
    describes exactly that (`live_outputs`: a bypassed layer passes on the live units
    before it; while it computes, its own mask zeroes its outputs), so such a layer
    may share the group of the layers before it, and the group is then also read by
    the layer after it. A bypassable layer that does not pass its input on keeps a
    group of its own, which is a chain link as well (the compact network of
    `Model.at_widths` declares every layer that keeps its shape at the new widths,
    whether or not its module gates it). A bypassable first layer's gate meets the
    network's input, which is what the spec says it passes on.

    Args:
      module: the model, called as ``module(x, masks, **call_kwargs)``.
      model_spec: what `trace` built from the sizes.
      variables: the module's variables or their shapes (``jax.eval_shape`` of init).
      call_kwargs: the call's keyword arguments (default ``train=False``).

    Raises:
      errors.ConfigError: one line, ``model: layer '<name>' is not a chain link: ...``.
    """
    masks_key = "masks"
    while masks_key in variables:  # beside the collections, under a name none has
        masks_key += "_"
    tree = dict(variables)
    tree[masks_key] = {
        layer.name: jax.ShapeDtypeStruct((layer.units,), jnp.bool_) for layer in model_spec.layers
    }
    kwargs = {"train": False} if call_kwargs is None else dict(call_kwargs)

    def forward(tree, x):
        tree = dict(tree)
        masks = tree.pop(masks_key)
        with nn.intercept_methods(plain_products):
            return module.apply(tree, x, masks, **kwargs)

    # Two examples: a batch axis of one would be a size-1 axis like a one-unit layer's
    # channel axis, and a reshape may hand that channel to it.
    x = jax.ShapeDtypeStruct((2, *model_spec.input_shape), jnp.float32)
    graph = graph_lib.channel_groups(forward, tree, x)
    broken = _first_break(model_spec, graph, masks_key)
    if broken is not None:
        name, reason = broken
        raise errors.ConfigError(f"model: layer {name!r} is not a chain link: {reason}")


def plain_products(next_fun, args, kwargs, context):
    """Computes a convolution or dense layer with Flax's own product.

    A layer may bring its own `conv_general_dilated` or `dot_general` (the package's
    direct, packed and Pallas convolutions): by Flax's contract each computes the
    same function, but the channel graph cannot see through a custom primitive and
    would lose the layer's channels. Its channels are those of the plain product, so
    the dataflow is read from that.
    """
    module = context.module
    if context.method_name == "__call__":
        for cls, fields in (
            (nn.Conv, ("conv_general_dilated", "conv_general_dilated_cls")),
            (nn.Dense, ("dot_general", "dot_general_cls")),
        ):
            if isinstance(module, cls) and any(getattr(module, f) is not None for f in fields):
                plain = module.clone(parent=None, **{f: None for f in fields})
                return plain.apply(dict(module.variables), *args, **kwargs)
    return next_fun(*args, **kwargs)


def _first_break(spec: ModelSpec, graph: graph_lib.Graph, masks_key: str):
    """``(layer name, reason)`` of the first layer whose group is not its chain link's,
    or None (see `check_chain`)."""
    layers = spec.layers
    shapes = {path: shape for path, shape, _ in graph.leaves}

    def key(path: tuple[str, ...], axis: int) -> tuple:
        return path, axis % len(shapes[path])

    # Every slice a layer owns (kernel out-axis first), and every kernel input axis.
    owned: dict[tuple, int] = {}
    own_keys: list[list[tuple]] = []
    reads: dict[tuple, int] = {}
    for i, layer in enumerate(layers):
        mine = [key((leaf.collection, *leaf.path), leaf.axis) for leaf in layer.owns]
        mine.append(key((masks_key, layer.name), 0))
        own_keys.append(mine)
        owned.update({k: i for k in mine})
        reads[key(("params", *layer.kernel.path), -2)] = i
    names = [layer.name for layer in layers]

    def text(k: tuple) -> str:
        path, axis = k
        if path[0] == masks_key:
            return f"masks[{path[1]!r}]"
        return "/".join(path[1:] if path[0] == "params" else path)

    done: set[int] = set()
    for i, layer in enumerate(layers):
        if i in done:
            continue
        kernel = own_keys[i][0]
        found = [g for g in graph.groups if any((s.path, s.axis) == kernel for s in g.slices)]
        if not found:
            unknown = "; ".join(f"'{p}' {w}" for p, w in graph.notes[:1])
            return layer.name, (
                "the channel graph finds no channels its kernel makes"
                + (f" (it has no rule for {unknown})" if unknown else "")
                + f"; {_UNREAD}"
            )
        if len(found) > 1:
            return layer.name, (
                f"its {layer.units} output channels fall in {len(found)} channel groups "
                f"(part of them coupled elsewhere); {_COUPLED}"
            )
        group = found[0]
        slices = {(s.path, s.axis): s for s in group.slices}
        members = sorted({owned[k] for k in slices if k in owned})
        # The run the group may hold: this layer, then the bypassable layers after it.
        first = members[0]
        for p in members[1:]:
            if not (p == first + 1 and layers[p].bypass):
                others = ", ".join(repr(names[q]) for q in members if q != p)
                return names[p], (
                    f"its output channels are tied to {others} (a residual add or "
                    f"concatenation); {_COUPLED}"
                )
            first = p
        run = list(range(members[0], members[-1] + 1))
        last = run[-1]
        # Channels that meet the data or a constant element-wise (the input added to a
        # layer's output) are not zero when disabled. A bypassable first layer meets
        # the input only in its gate (`where`, primitive 'select_n'), which the spec
        # describes: the input is what a bypassed first layer passes on.
        gate = f"{_MEETS} 'select_n'"
        for reason in group.reasons:
            gated = layers[run[0]].bypass and reason.startswith(gate)
            if reason.startswith(_MEETS) and not gated:
                return names[last], (
                    f"its output channels meet {reason[len('meets ') :]}, so a disabled unit "
                    f"is not zero (a residual add of the input); {_COUPLED}"
                )
        readers = [q for q in range(run[0] + 1, last + 2) if q < len(layers)]
        expected = {k for p in run for k in own_keys[p]}
        expected |= {key(("params", *layers[q].kernel.path), -2) for q in readers}
        for k, s in slices.items():
            if k in expected:
                continue
            if k in reads:
                after = f"the next layer {names[last + 1]!r}" if readers else "no later layer"
                return names[last], (
                    f"its output channels are read by {names[reads[k]]!r}, which is not "
                    f"{after} (a skip connection or concatenation); {_COUPLED}"
                )
            verb = "read by" if graph_lib.CONSUMER in s.roles else "tied to"
            return names[last], (
                f"its output channels are {verb} {text(k)!r}, which no maskable layer owns "
                f"(an unlisted layer or norm, a residual add or concatenation); {_COUPLED}"
            )
        units = layers[run[0]].units
        perm = slices[kernel].owner()
        if group.size != units or sorted(perm.tolist()) != list(range(units)):
            return layer.name, (
                f"its {layer.units} units make {group.size} channels in the channel graph "
                f"(units tied to each other); {_COUPLED}"
            )
        for p in run:
            for k in own_keys[p]:
                s = slices.get(k)
                if s is None:
                    what = "does not multiply" if k[0][0] == masks_key else "is not part of"
                    fix = _UNMASKED if k[0][0] == masks_key else _COUPLED
                    return names[p], f"{text(k)} {what} its output channels; {fix}"
                if s.length != units or not np.array_equal(s.owner(), perm):
                    return names[p], (
                        f"{text(k)} does not make its output channels one per unit; {_COUPLED}"
                    )
        for q in readers:
            k = key(("params", *layers[q].kernel.path), -2)
            s = slices.get(k)
            if s is None and units == 1 and _dropped(group) and not _grouped(graph, k):
                # A flatten drops a one-unit layer's size-1 channel axis, and the graph
                # loses the channel there (its reader's inputs then belong to nothing).
                # Every input reads unit 0 by the chain's rule, which is what a flatten
                # of one channel does; a tie elsewhere still shows in the producers.
                continue
            if s is None:
                return names[q - 1], (
                    f"the next layer {names[q]!r} does not read its output channels (it "
                    f"reads something else, or through an operation the channel graph "
                    f"cannot follow); {_COUPLED}"
                )
            want = perm[np.arange(s.length) % units]
            if s.length % units or not np.array_equal(s.owner(), want):
                return names[q - 1], (
                    f"the next layer {names[q]!r} reads its output channels at other "
                    f"inputs than a chain's (input j reads unit j % {units}: a "
                    f"concatenation or another flatten order); {_COUPLED}"
                )
        done.update(run)
    return None


_DROPPED = "a size-1 channel axis dropped"  # how `graph` words a flatten of one channel


def _dropped(group: graph_lib.Group) -> bool:
    return any(reason.startswith(_DROPPED) for reason in group.reasons)


def _grouped(graph: graph_lib.Graph, k: tuple) -> bool:
    """Whether any group holds the leaf axis `k` ((path, axis))."""
    return any((s.path, s.axis) == k for g in graph.groups for s in g.slices)
