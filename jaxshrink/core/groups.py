"""A plain Flax module described by its channel groups: the spec of an unmodified model.

`spec.trace` describes a module that was written for shrinking: it multiplies each
layer's output by a mask and its layers form a chain. A module as researchers write it
(a ResNet, a U-Net, a MobileNet) does neither. `describe(module, input_shape)` reads
its channel dependency graph instead (`jaxshrink.core.graph`, from the jaxpr of the
inference call) and writes each *removable group* as one `spec.Layer`, so that every
part of the search (masks, freezing, strategies, rounds, rollback, checkpoints,
pictures of masks) works on groups without knowing it:

* the layer's *units* are the group's channels, its *name* the module path of the
  group's first producer (``stage1_block1/conv1``; a residual stream is named after
  the convolution that starts it, ``stem``);
* `owns` are the group's producer slices (every kernel out-slice, bias, batch-norm
  scale and shift that makes the channels, across a residual add too) and its state
  slices (running statistics); `feeds` are its consumer slices (the input axes that
  read the channels, at their offsets after a concatenation, strided after a
  flatten). Each leaf says which entry belongs to which channel (`spec.Leaf.owner`);
* the masks are applied to the variables (`models.Model.masked_params`): a disabled
  channel's producer slices are multiplied by zero, so the channel is exactly zero
  wherever the activations between map 0 to 0, and frozen like any disabled unit;
* FLOPs are counted per kernel (`spec.Kernel`: out-features kept by the group that
  owns them, in-features by the group that feeds them), so a kernel between two
  groups costs what both leave of it;
* a group off the network's spine is a *branch* (`spec.Layer.bypass`): every one of
  its channels may go at once, because the data still reaches the output without it
  (a residual block's inner channels: the block leaves its shortcut; a U-Net's deeper
  levels: the concatenated skip remains). The spine is read from the kernels alone
  (`_branches`). An emptied branch leaves only constants behind it (a batch norm's
  shift after a kernel that reads nothing), exact in the masked network and added as
  constants in the smaller program.

Groups the graph keeps (the classes at the output, channels that meet the data) are
not layers: nothing can disable them. Unknown primitives on a channel axis are in
`Graph.notes`; `describe` prints each as one ``jaxshrink: note:`` line.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxshrink.core import graph as graph_lib
from jaxshrink.core import spec as spec_lib


def takes_train(module: nn.Module) -> bool:
    """Whether the module's ``__call__`` has a ``train`` argument."""
    return "train" in inspect.signature(type(module).__call__).parameters


def forward(module: nn.Module, train_kwarg: bool):
    """``fn(variables, x)``: the module's inference call, as the graph traces it."""
    kwargs = {"train": False} if train_kwarg else {}

    def fn(variables, x):
        with nn.intercept_methods(spec_lib.plain_products):
            return module.apply(variables, x, **kwargs)

    return fn


def equations(module: nn.Module, input_shape: Sequence[int]) -> list:
    """Every equation of the module's inference call for one example, sub-jaxprs'
    too, traced abstractly."""
    train_kwarg = takes_train(module)
    _, variables = _record(module, tuple(input_shape), train_kwarg)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    out: list = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            out.append(eqn)
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(forward(module, train_kwarg))(variables, x).jaxpr)
    return out


def describe(
    module: nn.Module, input_shape: Sequence[int], log=None
) -> tuple[spec_lib.ModelSpec, graph_lib.Graph]:
    """The spec of `module`'s removable channel groups, and its graph.

    Traced abstractly (`jax.eval_shape` and `jax.make_jaxpr`): no FLOP is spent and no
    parameter is allocated.

    Raises:
      ValueError: the module has no channel group that can be removed (the reasons of
        the groups it has, one per line).
    """
    train_kwarg = takes_train(module)
    input_shape = tuple(int(d) for d in input_shape)
    calls, variables = _record(module, input_shape, train_kwarg)
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    graph = graph_lib.channel_groups(forward(module, train_kwarg), variables, x)
    for primitive, where in graph.notes:
        print(f"jaxshrink: note: {graph_lib.note_text(primitive, where)}", file=log or sys.stderr)
    if not graph.removable:
        raise ValueError(
            f"{type(module).__name__}: no channel group can be removed:\n{graph.describe()}"
        )
    layers = _layers(graph, calls, _branches(graph, calls))
    kernels = tuple(_kernel(path, call) for path, call in calls.items())
    return spec_lib.ModelSpec(layers=layers, input_shape=input_shape, kernels=kernels), graph


def _record(module, input_shape, train_kwarg):
    """Traces `module.init` once: ``({module path: (class, in shape, out shape,
    kernel shape, bias)}, variable shapes)`` of every convolution and dense layer."""
    calls: dict[tuple[str, ...], tuple] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        kind = _kind(type(context.module))
        if context.method_name == "__call__" and kind is not None:
            calls[tuple(context.module.path)] = (kind, tuple(args[0].shape), tuple(out.shape))
        return out

    kwargs = {"train": False} if train_kwarg else {}

    def init(x):
        with nn.intercept_methods(record):
            return module.init(jax.random.PRNGKey(0), x, **kwargs)

    variables = jax.eval_shape(init, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    params = variables["params"]
    out = {}
    for path, (kind, in_shape, out_shape) in calls.items():
        node = params
        for key in path:
            node = node[key]
        out[path] = (kind, in_shape, out_shape, tuple(node["kernel"].shape), "bias" in node)
    return out, variables


def _kind(cls) -> str | None:
    return next((k for c, k in spec_lib.KINDS.items() if issubclass(cls, c)), None)


def _kernel(path: tuple[str, ...], call) -> spec_lib.Kernel:
    kind, in_shape, out_shape, kernel, bias = call
    pixels = in_shape[1:-1] if kind == "conv_transpose" else out_shape[1:-1]
    return spec_lib.Kernel(
        path=path + ("kernel",),
        out_axis=len(kernel) - 1,
        in_axis=len(kernel) - 2,
        out_features=int(kernel[-1]),
        in_features=int(kernel[-2]),
        window=math.prod(kernel[:-2]),
        positions=math.prod(pixels),
        bias=bool(bias),
    )


def _leaf(s: graph_lib.Slice) -> spec_lib.Leaf:
    collection, *path = s.path
    return spec_lib.Leaf(tuple(path), s.axis, collection, owner=tuple(s.owner().tolist()))


def _branches(graph: graph_lib.Graph, calls) -> set[int]:
    """The groups (indices in ``graph.groups``) that may all be emptied at once.

    A kernel carries the data from the groups it reads to the groups it writes; one
    that reads no group and is not grouped (a depthwise kernel reads its own
    group through its feature groups) reads the input. A group is on the *spine* when no path from
    the input reaches the output (a group nobody reads) without it. Every removable
    group off the spine is a branch, provided the spine alone still connects input
    and output; where it does not (parallel paths that are each optional, but not
    all together), no group is a branch.
    """
    reads: dict[tuple, set[int]] = {}
    writes: dict[tuple, set[int]] = {}
    for i, group in enumerate(graph.groups):
        for s in group.slices:
            module = tuple(s.path[1:-1])
            if s.path[0] != "params" or s.path[-1] != "kernel" or module not in calls:
                continue
            if graph_lib.CONSUMER in s.roles:
                reads.setdefault(module, set()).add(i)
            if graph_lib.PRODUCER in s.roles:
                writes.setdefault(module, set()).add(i)
    outputs = {i for i, g in enumerate(graph.groups) if not g.consumers}

    # (kind, in shape, out shape, kernel shape, bias): ungrouped when the kernel's
    # input features are all the input's.
    sources = [m for m, call in calls.items() if not reads.get(m) and call[1][-1] == call[3][-2]]

    def connected(allowed: set[int]) -> bool:
        seen = {i for m in sources for i in writes.get(m, set()) & allowed}
        frontier = list(seen)
        while frontier:
            i = frontier.pop()
            for m, w in writes.items():
                if i in reads.get(m, ()):
                    for j in (w & allowed) - seen:
                        seen.add(j)
                        frontier.append(j)
        return bool(seen & outputs)

    every = set(range(len(graph.groups)))
    removable = {i for i, g in enumerate(graph.groups) if g.removable}
    spine = every - removable | {i for i in removable if not connected(every - {i})}
    return removable - spine if connected(spine) else set()


def _layers(graph: graph_lib.Graph, calls, branches: set[int]) -> tuple[spec_lib.Layer, ...]:
    layers, names = [], set()
    for index, group in enumerate(graph.groups):
        if not group.removable:
            continue
        producers = group.producers
        kernels = [s for s in producers if s.path[-1] == "kernel"]
        first = (kernels or list(producers))[0]
        module_path = tuple(first.path[1:-1])
        name, n = "/".join(module_path), 1
        while name in names:  # two groups first made by one leaf (a shift after a concat)
            n += 1
            name = f"{'/'.join(module_path)}#{n}"
        names.add(name)
        owned = [
            s
            for s in group.slices
            if s is not first and (graph_lib.PRODUCER in s.roles or graph_lib.STATE in s.roles)
        ]
        kind, _, _, kernel, _ = calls.get(module_path, ("dense", (), (), (1, 1), False))
        k = _kernel(module_path, calls[module_path]) if module_path in calls else None
        layers.append(
            spec_lib.Layer(
                name=name,
                kind=kind,
                units=group.size,
                owns=tuple(_leaf(s) for s in (first, *owned)),
                feeds=tuple(_leaf(s) for s in group.consumers),
                candidate=True,
                window=k.window if k else 1,
                positions=k.positions if k else 1,
                in_features=int(kernel[-2]),
                preactivation=_preactivation(group, first),
                bypass=index in branches,
            )
        )
    return tuple(layers)


def _preactivation(group: graph_lib.Group, first: graph_lib.Slice) -> tuple[str, ...]:
    """The module whose output the first producer's activation sees: the last module
    with a producer slice (a batch norm's scale or shift) after the first kernel and
    before the group's next kernel; the kernel's own module when none."""
    module = tuple(first.path[1:-1])
    after = False
    for s in group.slices:
        if s is first:
            after = True
            continue
        if not after or graph_lib.PRODUCER not in s.roles:
            continue
        if s.path[-1] == "kernel":
            break
        if s.path[0] == "params":
            module = tuple(s.path[1:-1])
    return module
