"""The physically smaller network: any traced function rewritten at the kept widths.

`graph.Graph.masks_to_variables` disables channels by zeroing their producers: the
*masked* network, still at full width. A plain Flax module fixes its layer sizes in its
code, so it cannot be rebuilt at other widths; its jaxpr can.
`smaller(fn, variables, example_args, graph, group_keep)` re-traces ``fn`` (the same
trace `graph.trace` makes, with the same record of which axis of every intermediate
value carries which group's channels), removes the disabled entries of every variable
leaf along every member axis (producers, consumers and state alike; a flattened feed
loses the strided entries ``c, c + C, ...`` of a removed channel ``c``), and evaluates
the jaxpr with an interpreter that re-binds each equation on the smaller operands.

*Exact, not approximate.* ``small_fn(small_variables, *args)`` equals
``fn(masked_variables, *args)`` on the kept entries of every value, to float rounding.
Element-wise ops and views of the kept entries need only their shape parameters
rewritten (a reshape's sizes, a broadcast's shape, a slice's bounds mapped through the
kept indices, a split's sizes, a depthwise convolution's group count). What does not
follow from the kept entries alone is a *mixing* equation: a contraction (convolution,
dot) or a reduction over an axis that lost entries. Most of the time the removed
entries are zero there (a producer's zeroed slices after ReLU), but not always:
``sigmoid(0) = 0.5`` reaches the next layer, and the masked network computes with it.

So the build evaluates the masked network once, at the example's shapes (one compiled
call; the data's values do not matter), as a *ghost*: each value, on the host, with a
per-entry flag saying whether it is known without the data (a variable, a constant, or
anything computed from known entries only; a product with a known zero is known). The
data is unknown. At a mixing equation the removed entries'
share of each kept output is then computed from the ghost, and added to the small
equation's result as a constant (for a maximum, combined by a maximum). Where that
share depends on the data (a variance taken as the mean of ``(x - mean)**2``, whose
removed entries are ``mean**2``), no constant exists and `ShrinkError` names the
equation. It also names every primitive on a shrunk axis that no rule covers: the
rewrite never guesses.

*Axes that are one value all along* (a per-pixel statistic broadcast back over the
channels) keep their full size in the small program and are cut to the kept count
where they meet a shrunk axis: every entry is the same, so any cut is exact.

Limits: the small program is tied to the shapes of `example_args`, the batch size
included (every shape in the jaxpr is; make another for other shapes). Custom derivative
rules (``custom_jvp`` / ``custom_vjp``) on shrunk values are replaced by their primal
computation, so gradients of ``small_fn`` follow the primitives. A group whose
channels are *mixed* (`graph.Group.mixed`: a layer norm's statistics) stays exact
here because the statistic's divisor is the full width in the traced program; the
small program computes the masked network's statistic, not that of a network trained
at the small width.

`count(graph, variables, group_keep)` gives the number of entries before and after,
from the group slices alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex

from jaxshrink.core import graph as graph_lib


class ShrinkError(ValueError):
    """An equation that cannot be rewritten exactly at the kept widths."""


# ---------------------------------------------------------------------- the API


def smaller(
    fn: Callable,
    variables,
    example_args: Sequence,
    graph: graph_lib.Graph,
    group_keep: Sequence,
    *,
    state_collections: Sequence[str] = ("batch_stats",),
) -> tuple[Callable, Any]:
    """``(small_fn, small_variables)``: ``small_fn(small_variables, *args)`` equals
    ``fn(variables * graph.masks_to_variables(group_keep), *args)`` for arguments of
    the shapes of `example_args`. `group_keep` holds one boolean vector per group of
    `graph` (None: keep all; a group that is not removable keeps all). `small_fn` is a
    plain function of arrays, closed over the rewritten program: jit it as you like.
    With every channel kept, `small_variables` are the original leaves themselves."""
    if not isinstance(example_args, (tuple, list)):
        example_args = (example_args,)
    example_args = tuple(example_args)
    keep = _keep_vectors(graph, group_keep)
    traced = graph_lib.trace(fn, variables, *example_args, state_collections=state_collections)
    if traced.graph.groups != graph.groups:
        raise ValueError("the graph was not made from this function and these variables")
    builder = _Builder(traced, keep)

    closed = traced.closed
    jaxpr = closed.jaxpr
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    data = jax.tree_util.tree_leaves(example_args)
    masked = _masked_leaves(graph, traced.ids.paths, leaves, keep)
    zeros = [np.zeros(np.shape(x), jnp.result_type(x)) for x in data]
    trail = _values(closed, traced.record, masked, zeros)
    in_ghosts = [_Ghost(np.asarray(v)) for v in masked]
    in_ghosts += [_Ghost(z, np.ones(z.shape, bool)) for z in zeros]
    program, _ = builder.build(jaxpr, list(closed.consts), traced.record, trail, in_ghosts)

    small_leaves = []
    for var, leaf, path in zip(jaxpr.invars, leaves, traced.ids.paths):
        kept = builder.kept_axes(traced.record, var)
        small = leaf
        if any(idx is not None for idx in kept):
            small = jnp.asarray(_take(np.asarray(leaf), kept))
        _check_leaf(graph, keep, path, np.shape(leaf), np.shape(small))
        small_leaves.append(small)
    small_variables = jax.tree_util.tree_unflatten(treedef, small_leaves)
    in_shapes = [builder.small_shape(traced.record, v) for v in jaxpr.invars]
    out_tree = traced.out_tree

    def small_fn(small_variables, *args):
        flat = jax.tree_util.tree_leaves((small_variables, *args))
        if len(flat) != len(in_shapes):
            raise ValueError(f"{len(flat)} input arrays, not {len(in_shapes)}")
        for x, shape in zip(flat, in_shapes):
            if tuple(np.shape(x)) != shape:
                raise ValueError(
                    f"an input of shape {np.shape(x)}, not {shape}: the small program is "
                    "tied to the shapes of the example it was made from"
                )
        return jax.tree_util.tree_unflatten(out_tree, _execute(program, flat, expand=True))

    jax.eval_shape(small_fn, small_variables, *example_args)  # fail now, not at first use
    return small_fn, small_variables


def count(graph: graph_lib.Graph, variables, group_keep: Sequence) -> tuple[int, int]:
    """``(before, after)``: the number of entries of the leaves of `variables` at full
    width and once the disabled channels' entries are removed, read from the group
    slices. `variables` may leave collections out but keeps the graph's paths: the
    parameters alone are ``{'params': variables['params']}``."""
    keep = _keep_vectors(graph, group_keep)
    removed: dict[tuple, set[int]] = {}
    for mask, group in zip(keep, graph.groups):
        for s in group.slices:
            lost = removed.setdefault((s.path, s.axis), set())
            for k, entries in enumerate(s.indices):
                if not mask[k]:
                    lost.update(entries)
    before = after = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        key = tuple(graph_lib._key_text(k) for k in path)
        shape = np.shape(leaf)
        before += math.prod(shape)
        after += math.prod(n - len(removed.get((key, a), ())) for a, n in enumerate(shape))
    return before, after


def _keep_vectors(graph: graph_lib.Graph, group_keep: Sequence) -> list[np.ndarray]:
    if len(group_keep) != len(graph.groups):
        raise ValueError(f"{len(group_keep)} keep vectors for {len(graph.groups)} groups")
    out = []
    for i, (group, mask) in enumerate(zip(graph.groups, group_keep)):
        if mask is None:
            out.append(np.ones(group.size, bool))
            continue
        mask = np.asarray(mask, bool)
        if mask.shape != (group.size,):
            raise ValueError(f"group {i}: keep vector of shape {mask.shape}, not ({group.size},)")
        if not group.removable and not mask.all():
            raise ValueError(f"group {i} is not removable ({'; '.join(group.reasons)})")
        out.append(mask)
    return out


def _masked_leaves(graph, paths, leaves, keep) -> list:
    """The leaves times `Graph.masks_to_variables`: the producer slices of disabled
    channels zeroed (on the host, at build time)."""
    out = {}
    for mask, group in zip(keep, graph.groups):
        if mask.all():
            continue
        for s in group.producers:
            i = paths.index(s.path)
            leaf = out.setdefault(i, np.array(leaves[i]))
            lost = [e for k, entries in enumerate(s.indices) if not mask[k] for e in entries]
            view = [slice(None)] * leaf.ndim
            view[s.axis] = lost
            leaf[tuple(view)] = leaf[tuple(view)] * 0  # a product, as the masked network's
    return [out.get(i, leaf) for i, leaf in enumerate(leaves)]


def _check_leaf(graph, keep, path, shape, small_shape) -> None:
    """The trace's labels and the group slices must agree on every leaf."""
    expected = list(shape)
    for mask, group in zip(keep, graph.groups):
        for s in group.slices:
            if s.path == path:
                expected[s.axis] -= sum(len(e) for k, e in enumerate(s.indices) if not mask[k])
    if tuple(expected) != tuple(small_shape):
        raise ShrinkError(
            f"{'/'.join(path)}: the trace keeps {tuple(small_shape)}, the groups {tuple(expected)}"
        )


# ------------------------------------------------------------------ the ghost


@dataclasses.dataclass
class _Ghost:
    """A value of the masked network at full shape, on the host, and where it depends
    on the data (`unknown`: a boolean array, or None when every entry is known).
    Unknown entries hold zeros, so that arithmetic on them makes no NaN elsewhere."""

    value: np.ndarray
    unknown: np.ndarray | None = None


def _ghost(value, unknown) -> _Ghost:
    value = np.asarray(value)
    if unknown is None or not unknown.any():
        return _Ghost(value, None)
    return _Ghost(np.where(unknown, np.zeros((), value.dtype), value), unknown)


def _flags(g: _Ghost, shape=None) -> np.ndarray:
    flags = np.zeros(np.shape(g.value), bool) if g.unknown is None else g.unknown
    return flags if shape is None else np.broadcast_to(flags, shape)


def _bind(prim, params, operands):
    if prim.name in _TILED and tiles(params, np.shape(operands[0])):
        return [_tiled(prim, params, operands[0])]
    out = prim.bind(*operands, **params)
    return list(out) if prim.multiple_results else [out]


_TILED = {"reduce_window_max": jnp.max, "reduce_window_min": jnp.min, "reduce_window_sum": jnp.sum}


def tiles(params, shape) -> bool:
    """Whether a windowed reduction cuts its operand into disjoint tiles: windows as
    long as their strides, dividing each axis, with no padding or dilation."""
    window, strides = params["window_dimensions"], params["window_strides"]
    return (
        tuple(window) == tuple(strides)
        and all(n % w == 0 for n, w in zip(shape, window))
        and all(tuple(p) == (0, 0) for p in params["padding"])
        and all(d == 1 for d in (*params["base_dilation"], *params["window_dilation"]))
    )


def _tiled(prim, params, x):
    """A tiling windowed reduction (a 2 x 2 max pooling) as a reshape and a reduction:
    the same numbers, in a form every exporter writes plainly (a vmapped pooling of
    one example would be a window with a fifth axis, which onnxruntime refuses)."""
    window = params["window_dimensions"]
    split = [d for n, w in zip(np.shape(x), window) for d in (n // w, w)]
    axes = tuple(2 * i + 1 for i in range(len(window)))
    return _TILED[prim.name](jnp.reshape(x, split), axis=axes)


def _values(closed, record, leaves, data):
    """Every intermediate value of the masked network, computed in one compiled call:
    per equation (in order, sub-jaxprs inlined) its outputs and the values inside its
    sub-jaxprs, mirroring `record`. The data's values do not matter: only the entries
    that do not depend on them are ever read."""

    def run(jaxpr, consts, record, args):
        env = dict(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))

        def read(var):
            return var.val if isinstance(var, jex.Literal) else env[var]

        trail = []
        for index, eqn in enumerate(jaxpr.eqns):
            ins = [read(v) for v in eqn.invars]
            call = graph_lib.CALLS.get(eqn.primitive.name)
            subs = None
            if call is not None and call in eqn.params:
                sub = eqn.params[call]
                inner, inner_consts = (
                    (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, ())
                )
                outs, subs = run(inner, inner_consts, record.calls[index], ins)
            elif eqn.primitive.name == "cond":
                # Every branch, for the values inside each; the outputs by the index.
                branches = eqn.params["branches"]
                results = [
                    run(b.jaxpr, b.consts, r, ins[1:])
                    for b, r in zip(branches, record.calls[index])
                ]
                subs = [trail for _, trail in results]
                which = jnp.clip(ins[0], 0, len(branches) - 1).astype(jnp.int32)
                outs = [lax.select_n(which, *cases) for cases in zip(*(o for o, _ in results))]
            else:
                params = eqn.primitive.get_bind_params(eqn.params)
                outs = _bind(eqn.primitive, params, ins)
            env.update(zip(eqn.outvars, outs))
            trail.append(([_hostable(o) for o in outs], subs))
        return [read(v) for v in jaxpr.outvars], trail

    def evaluate(leaves, data, consts):
        return run(closed.jaxpr, consts, record, list(leaves) + list(data))[1]

    return jax.device_get(jax.jit(evaluate)(leaves, data, list(closed.consts)))


def _hostable(value):
    """A value the host can hold: a PRNG key (an extended dtype) is replaced by flags
    of its shape, and is never known (see `_Builder.build`)."""
    if jax.dtypes.issubdtype(jnp.result_type(value), jax.dtypes.extended):
        return jnp.zeros(jnp.shape(value), bool)
    return value


UNARY_VIEWS = frozenset("reshape broadcast_in_dim transpose squeeze rev slice".split())
REDUCTIONS = {
    "reduce_sum": (lambda dtype: np.zeros((), dtype), jnp.add),
    "reduce_prod": (lambda dtype: np.ones((), dtype), jnp.multiply),
    "reduce_max": (lambda dtype: _extreme(dtype, low=True), jnp.maximum),
    "reduce_min": (lambda dtype: _extreme(dtype, low=False), jnp.minimum),
    "reduce_or": (lambda dtype: np.zeros((), dtype), jnp.logical_or),
    "reduce_and": (lambda dtype: np.ones((), dtype), jnp.logical_and),
}


def _extreme(dtype, low: bool):
    if jnp.issubdtype(dtype, jnp.floating):
        return np.asarray(-np.inf if low else np.inf, dtype)
    if dtype == np.bool_:
        return np.asarray(not low)
    info = jnp.iinfo(dtype)
    return np.asarray(info.min if low else info.max, dtype)


def _view(name, params, flags: np.ndarray, out_shape) -> np.ndarray:
    """The view `name` of a flag array, on the host."""
    if name == "reshape":
        return flags.reshape(out_shape)
    if name == "broadcast_in_dim":
        expanded = [1] * len(out_shape)
        for axis, target in enumerate(params["broadcast_dimensions"]):
            expanded[target] = flags.shape[axis]
        return np.broadcast_to(flags.reshape(expanded), out_shape)
    if name == "transpose":
        return np.transpose(flags, params["permutation"])
    if name == "squeeze":
        return flags.reshape(out_shape)
    if name == "rev":
        return np.flip(flags, tuple(params["dimensions"]))
    strides = params["strides"] or (1,) * flags.ndim
    bounds = zip(params["start_indices"], params["limit_indices"], strides)
    return flags[tuple(slice(a, b, c) for a, b, c in bounds)]


def _known(name, prim, params, ins: list[_Ghost], outs: list, shapes) -> list:
    """Where the outputs of one equation of the masked network depend on the data,
    from where its inputs do (None: nowhere)."""
    if all(g.unknown is None for g in ins):
        return [None] * len(outs)
    if name in graph_lib.ELEMENTWISE:
        shape = shapes[0]
        flags = np.zeros(shape, bool)
        for g in ins:
            flags = flags | _flags(g, shape)
        if name == "mul":  # a known zero times anything is a known zero
            for g in ins:
                zero = (g.value == 0) & ~_flags(g)
                flags = flags & ~np.broadcast_to(zero, shape)
        return [flags] * len(outs)
    if name in graph_lib.IDENTITY:
        return [g.unknown for g in ins[: len(outs)]]
    if name in UNARY_VIEWS and len(ins) == 1:
        return [_view(name, params, ins[0].unknown, shapes[0])]
    if name == "split":
        cuts = np.cumsum([int(n) for n in params["sizes"]])[:-1]
        return np.split(ins[0].unknown, cuts, axis=params["axis"])
    if name == "concatenate":
        return [np.concatenate([_flags(g) for g in ins], axis=params["dimension"])]
    if name == "pad":
        flags = _bind(prim, params, [_flags(ins[0]), _flags(ins[1])])[0]
        return [np.asarray(flags)]
    if name == "dynamic_slice" and all(g.unknown is None for g in ins[1:]):
        flags, view = ins[0].unknown, []
        for axis, size in enumerate(params["slice_sizes"]):
            start = min(max(int(ins[1 + axis].value), 0), flags.shape[axis] - size)
            view.append(slice(start, start + size))
        return [flags[tuple(view)]]
    if name in ("dot_general", "conv_general_dilated"):
        return [_contract_flags(prim, params, ins[0], ins[1], 1, 1, 1, 1) > 0]
    if name in REDUCTIONS or name in ("argmax", "argmin"):
        axes = tuple(params["axes"])
        return [np.any(ins[0].unknown, axis=axes)] * len(outs)
    if name in ("reduce_window_sum", "reduce_window_max", "reduce_window_min"):
        # A pooled entry is unknown where its window holds an unknown entry.
        counts = lax.reduce_window_sum_p.bind(ins[0].unknown.astype(np.float32), **params)
        return [np.asarray(counts) > 0]
    # No finer rule: anything read from an unknown entry is unknown.
    return [np.ones(shape, bool) for shape in shapes]


def _contract_flags(prim, params, a: _Ghost, b: _Ghost, wa, wb, va, vb) -> np.ndarray:
    """How many terms of each output entry of a contraction pair an unknown entry with
    a possibly nonzero one, counting only lhs terms weighted by `wa` / `va` and rhs
    terms by `wb` / `vb` (0/1 arrays): terms ``wa * unknown_a x vb * nonzero_b`` and
    ``va * nonzero_a x wb * unknown_b``."""
    params = dict(params, preferred_element_type=jnp.float32)
    total = 0.0
    for g, h, w, v, first in ((a, b, wa, vb, True), (b, a, wb, va, False)):
        if g.unknown is None:
            continue
        unknown = g.unknown.astype(np.float32) * w
        nonzero = ((h.value != 0) | _flags(h)).astype(np.float32) * v
        pair = (unknown, nonzero) if first else (nonzero, unknown)
        total = total + np.asarray(prim.bind(*pair, **params))
    return np.asarray(total)


# ------------------------------------------------------------------ the program


@dataclasses.dataclass
class _Program:
    """An open jaxpr with one step per equation: ``step(inputs) -> outputs`` on the
    small values, and the small shapes each step must give."""

    jaxpr: Any
    consts: list
    steps: list
    shapes: list  # per equation: small shape per output (None: a dropped output)
    names: list
    in_shapes: list  # small shape per input
    compact: list  # per equation: whether its step takes compact values (`_COMPACT`)


# Equations that take a *compact* value: one that does not depend on the data, kept
# with size 1 on the axes it does not vary on (what a contraction over an emptied
# group gives, and what follows from it by a bias or a batch norm). It then stays an
# operation on a few numbers, broadcast where it meets the data, instead of a
# constant the size of an activation (ONNX converters inline broadcast constants).
# Any other equation gets it broadcast to its full small shape first.
_COMPACT = (graph_lib.ELEMENTWISE - {"select_n", "clamp"}) | graph_lib.IDENTITY


def _fits(shape, full) -> bool:
    """`shape` is `full` or a compact form of it (size 1 where it differs)."""
    return len(shape) == len(full) and all(a in (b, 1) for a, b in zip(shape, full))


def _execute(program: _Program, args, expand: bool = False) -> list:
    """Runs `program` on the small `args`; values may stay compact (`_COMPACT`)
    inside it, and are broadcast to their small shapes at the end when `expand`."""
    env: dict = {}
    full: dict = {}
    for var, value in zip(program.jaxpr.constvars, program.consts):
        env[var], full[var] = value, tuple(np.shape(value))
    for var, value, shape in zip(program.jaxpr.invars, args, program.in_shapes):
        env[var], full[var] = value, tuple(shape)

    def read(var, whole: bool = False):
        if isinstance(var, jex.Literal):
            return var.val
        value = env[var]
        if whole and tuple(np.shape(value)) != full[var]:
            value = jnp.broadcast_to(value, full[var])
        return value

    for eqn, step, shapes, name, compact in zip(
        program.jaxpr.eqns, program.steps, program.shapes, program.names, program.compact
    ):
        ins = [read(v, whole=not compact) for v in eqn.invars]
        if shapes and all(s is None or 0 in s for s in shapes):
            # An emptied group's values: nothing to compute (their shape is all of
            # them), so the program holds no empty operation.
            outs = [
                None if s is None else np.zeros(s, v.aval.dtype)
                for s, v in zip(shapes, eqn.outvars)
            ]
        elif name == "broadcast_in_dim" and tuple(np.shape(ins[0])) != full[eqn.invars[0]]:
            outs = [_compact_broadcast(eqn, ins[0], shapes[0])]
        else:
            outs = step(ins)
        for var, value, shape in zip(eqn.outvars, outs, shapes):
            if shape is None:
                continue
            if not _fits(tuple(np.shape(value)), shape):
                raise ShrinkError(f"'{name}' gave shape {np.shape(value)}, not {shape}")
            env[var], full[var] = value, tuple(shape)
    return [read(v, whole=expand) for v in program.jaxpr.outvars]


def _compact_broadcast(eqn, x, shape) -> jax.Array:
    """A broadcast of a compact value that keeps it compact: size 1 on every new axis
    and wherever `x` has size 1."""
    dims = eqn.params["broadcast_dimensions"]
    out = [1] * len(shape)
    for src, d in enumerate(dims):
        out[d] = shape[d] if np.shape(x)[src] != 1 else 1
    return lax.broadcast_in_dim(x, tuple(out), dims)


@dataclasses.dataclass
class _Eqn:
    """What a rule sees of one equation."""

    name: str
    prim: Any
    params: dict  # bind parameters
    invars: list
    labels: list  # per input, one entry per axis
    kept: list  # per input, per axis: kept indices, None for all
    shapes: list  # per input, full
    small: list  # per input, small
    out_kept: list
    out_shapes: list
    out_small: list
    ghosts: list  # per input
    where: str

    def fail(self, why: str) -> ShrinkError:
        where = f" {self.where}" if self.where else ""
        return ShrinkError(f"cannot shrink '{self.name}'{where}: {why}")


class _Builder:
    """Walks the trace's jaxpr with its record: evaluates the ghost and writes the
    small program's steps."""

    def __init__(self, traced: graph_lib.Trace, keep: list[np.ndarray]):
        self.traced = traced
        self.keep = keep
        self.cache: dict[int, tuple] = {}

    # -- kept indices

    def kept_entry(self, entry, size: int):
        """The kept indices of one axis (None: all)."""
        if not graph_lib._labeled(entry):
            return None
        hit = self.cache.get(id(entry))
        if hit is None:
            owners = self.traced.owners(entry)
            keep = np.array([g < 0 or self.keep[g][k] for g, k in owners.tolist()], bool)
            kept = None if keep.all() else np.flatnonzero(keep)
            hit = self.cache[id(entry)] = (entry, kept)
        return hit[1]

    def labels(self, record, var):
        if isinstance(var, jex.Literal):
            return graph_lib._plain(np.shape(var.val))
        if var not in record.labels:
            return graph_lib._plain(tuple(var.aval.shape))
        return record.labels[var]

    def kept_axes(self, record, var) -> tuple:
        shape = np.shape(var.val) if isinstance(var, jex.Literal) else tuple(var.aval.shape)
        return tuple(self.kept_entry(e, n) for e, n in zip(self.labels(record, var), shape))

    def small_shape(self, record, var) -> tuple:
        shape = np.shape(var.val) if isinstance(var, jex.Literal) else tuple(var.aval.shape)
        return _small(shape, self.kept_axes(record, var))

    # -- the walk

    def build(self, jaxpr, consts, record, trail, in_ghosts, prefix="", outer=""):
        """The program of one run of `jaxpr` (its `record` of labels, its `trail` of
        values), and the ghosts of its outputs."""
        const_ghosts = [_Ghost(np.asarray(c)) for c in consts]
        ghosts: dict = {}
        for var, g in zip(jaxpr.constvars, const_ghosts):
            ghosts[var] = g
        for var, g in zip(jaxpr.invars, in_ghosts):
            ghosts[var] = g

        def ghost(var):
            if isinstance(var, jex.Literal):
                return _Ghost(np.asarray(var.val))
            return ghosts[var]

        steps, shapes, names, compact = [], [], [], []
        for index, eqn in enumerate(jaxpr.eqns):
            name = eqn.primitive.name
            stack, frame = graph_lib._name_stack(eqn, prefix), graph_lib._frame(eqn, outer)
            params = eqn.primitive.get_bind_params(eqn.params)
            e = _Eqn(
                name=name,
                prim=eqn.primitive,
                params=params,
                invars=list(eqn.invars),
                labels=[self.labels(record, v) for v in eqn.invars],
                kept=[self.kept_axes(record, v) for v in eqn.invars],
                shapes=[_shape(v) for v in eqn.invars],
                small=[self.small_shape(record, v) for v in eqn.invars],
                out_kept=[self.kept_axes(record, v) for v in eqn.outvars],
                out_shapes=[_shape(v) for v in eqn.outvars],
                out_small=[self.small_shape(record, v) for v in eqn.outvars],
                ghosts=[ghost(v) for v in eqn.invars],
                where=graph_lib._place(stack, frame),
            )
            shrunk = any(k is not None for kept in e.kept for k in kept)
            call = graph_lib.CALLS.get(name)
            values, subs = trail[index]
            if call is not None and call in eqn.params:
                sub = (eqn.params[call], record.calls[index], subs)
                step, outs = self.call(e, *sub, stack, frame)
            elif name == "cond":
                sub = (eqn.params["branches"], record.calls[index], subs)
                step, outs = self.cond(e, *sub, stack, frame)
            else:
                flags = _known(name, e.prim, params, e.ghosts, values, e.out_shapes)
                flags = [
                    np.ones(v.aval.shape, bool) if _is_key(v) else f
                    for v, f in zip(eqn.outvars, flags)
                ]
                outs = [_ghost(v, f) for v, f in zip(values, flags)]
                step = _rewrite(e) if shrunk else None
            nested = shrunk and (name == "cond" or (call is not None and call in eqn.params))
            compact.append(name in _COMPACT or name == "broadcast_in_dim" or nested)
            if not shrunk:
                step = _as_is(eqn)
            e.ghosts = None  # the steps keep what they need, not the full-width values
            for var, g in zip(eqn.outvars, outs):
                if not isinstance(var, jex.DropVar):
                    ghosts[var] = g
            steps.append(step)
            shapes.append(
                [
                    None if isinstance(v, jex.DropVar) else s
                    for v, s in zip(eqn.outvars, e.out_small)
                ]
            )
            names.append(name)
        outs = [ghost(v) for v in jaxpr.outvars]
        in_shapes = [self.small_shape(record, v) for v in jaxpr.invars]
        return _Program(jaxpr, list(consts), steps, shapes, names, in_shapes, compact), outs

    def call(self, e: _Eqn, sub, record, trail, stack, frame):
        """A sub-jaxpr is rewritten in place of the call (never re-bound at the old
        shapes); a custom derivative's primal computation stands for it."""
        inner, consts = (sub.jaxpr, list(sub.consts)) if hasattr(sub, "consts") else (sub, [])
        program, outs = self.build(inner, consts, record, trail, e.ghosts, stack, frame)
        return (lambda ins: _execute(program, ins)), outs

    def cond(self, e: _Eqn, branches, records, trails, stack, frame):
        programs, results = [], []
        for branch, record, trail in zip(branches, records, trails):
            consts = list(branch.consts)
            program, outs = self.build(
                branch.jaxpr, consts, record, trail, e.ghosts[1:], stack, frame
            )
            programs.append(program)
            results.append(outs)
        index = e.ghosts[0]
        if index.unknown is None:
            outs = results[int(np.clip(int(index.value), 0, len(branches) - 1))]
        else:  # known where every branch gives the same known value
            outs = []
            for k, first in enumerate(results[0]):
                flags = _flags(first)
                for other in results[1:]:
                    flags = flags | _flags(other[k]) | (other[k].value != first.value)
                outs.append(_ghost(first.value, flags))

        def step(ins):
            fns = [lambda *ops, p=p: _execute(p, list(ops), expand=True) for p in programs]
            return list(lax.switch(ins[0], fns, *ins[1:]))

        return step, outs


def _is_key(var) -> bool:
    return not isinstance(var, jex.Literal) and jax.dtypes.issubdtype(
        var.aval.dtype, jax.dtypes.extended
    )


def _shape(var) -> tuple:
    return tuple(np.shape(var.val)) if isinstance(var, jex.Literal) else tuple(var.aval.shape)


def _small(shape, kept) -> tuple:
    return tuple(n if k is None else len(k) for n, k in zip(shape, kept))


def _as_is(eqn) -> Callable:
    """Re-binds an equation none of whose inputs lost entries, exactly as traced."""
    params = eqn.primitive.get_bind_params(eqn.params)

    def step(ins):
        with eqn.ctx.manager:
            return _bind(eqn.primitive, params, ins)

    return step


# ------------------------------------------------------------------ the rules


def _rewrite(e: _Eqn) -> Callable:
    name = e.name
    if name in graph_lib.ELEMENTWISE:
        return _elementwise(e)
    if name in graph_lib.IDENTITY or name in ("transpose", "squeeze", "rev", "pad"):
        return _rebind(e, e.params)
    rule = RULES.get(name)
    if rule is None:
        raise e.fail("no rule rewrites it on an axis that lost channels")
    return rule(e)


def _rebind(e: _Eqn, params, cuts=None, after=None) -> Callable:
    """A step that cuts one-value axes to size (`cuts`: per input, {axis: size}), binds
    the primitive with `params` and post-processes (`after`)."""
    cuts = cuts or {}

    def step(ins):
        ins = list(ins)
        for i, axes in cuts.items():
            for axis, size in axes.items():
                if np.shape(ins[i])[axis] != 1:  # a compact value broadcasts as it is
                    ins[i] = lax.slice_in_dim(ins[i], 0, size, axis=axis)
        outs = _bind(e.prim, params, ins)
        return after(outs) if after is not None else outs

    return step


def _cut_to(e: _Eqn, i: int, axis: int, size: int, cuts: dict) -> None:
    """Input `i` meets `size` entries on `axis`: cut it there if it is one value all
    along (any other mismatch is a channel axis the trace did not tie)."""
    if e.small[i][axis] == size:
        return
    if e.labels[i][axis] is not graph_lib.SAME or e.small[i][axis] < size:
        raise e.fail(f"input {i} has {e.small[i][axis]} entries on axis {axis}, not {size}")
    cuts.setdefault(i, {})[axis] = size


def _elementwise(e: _Eqn) -> Callable:
    out_shape, out_small = e.out_shapes[0], e.out_small[0]
    cuts: dict = {}
    for i, shape in enumerate(e.shapes):
        if len(shape) != len(out_shape):
            continue
        for axis, (n, m) in enumerate(zip(shape, out_shape)):
            if n == m:
                _cut_to(e, i, axis, out_small[axis], cuts)
    return _rebind(e, e.params, cuts)


def _reshape(e: _Eqn) -> Callable:
    if e.params.get("dimensions") is not None:
        raise e.fail("a reshape with a transposition")
    if len(e.invars) != 1:
        raise e.fail("a reshape to a traced shape")
    small, out = e.small[0], e.out_small[0]
    if math.prod(small) != math.prod(out):
        raise e.fail(f"{small} cannot become {out}")
    return _rebind(e, dict(e.params, new_sizes=tuple(out)))


def _broadcast_in_dim(e: _Eqn) -> Callable:
    if len(e.invars) != 1:
        raise e.fail("a broadcast to a traced shape")
    return _rebind(e, dict(e.params, shape=tuple(e.out_small[0])))


def _positions(e: _Eqn, axis: int, sources: np.ndarray) -> np.ndarray:
    """Where the full-width entries `sources` of input 0's `axis` lie among its kept
    entries (each must be kept)."""
    kept = e.kept[0][axis]
    if kept is None:
        return sources
    pos = np.searchsorted(kept, sources)
    if np.any(pos >= len(kept)) or np.any(kept[np.minimum(pos, len(kept) - 1)] != sources):
        raise e.fail(f"an output entry on axis {axis} reads a removed entry")
    return pos


def _slice(e: _Eqn) -> Callable:
    p = e.params
    rank = len(e.shapes[0])
    strides = list(p["strides"] or (1,) * rank)
    start, limit = list(p["start_indices"]), list(p["limit_indices"])
    takes = {}
    for axis in range(rank):
        if e.kept[0][axis] is None:
            continue
        out = e.out_kept[0][axis]
        out = np.arange(e.out_shapes[0][axis]) if out is None else out
        pos = _positions(e, axis, p["start_indices"][axis] + out * strides[axis])
        step = int(pos[1] - pos[0]) if len(pos) > 1 else 1
        if len(pos) == 0:
            start[axis], limit[axis], strides[axis] = 0, 0, 1
        elif step >= 1 and np.all(np.diff(pos) == step):
            start[axis], limit[axis], strides[axis] = int(pos[0]), int(pos[-1]) + 1, step
        else:  # the kept entries are not evenly spaced: pick them
            start[axis], limit[axis], strides[axis] = 0, e.small[0][axis], 1
            takes[axis] = pos
    params = dict(p, start_indices=tuple(start), limit_indices=tuple(limit), strides=tuple(strides))

    def after(outs):
        out = outs[0]
        for axis, pos in takes.items():
            out = jnp.take(out, pos, axis=axis)
        return [out]

    return _rebind(e, params, after=after)


def _split(e: _Eqn) -> Callable:
    axis = e.params["axis"]
    sizes = tuple(s[axis] for s in e.out_small)
    if sum(sizes) != e.small[0][axis]:
        raise e.fail(f"pieces of {sizes} from {e.small[0][axis]} entries")
    return _rebind(e, dict(e.params, sizes=sizes))


def _concatenate(e: _Eqn) -> Callable:
    dim, cuts = e.params["dimension"], {}
    for i in range(len(e.invars)):
        for axis, size in enumerate(e.out_small[0]):
            if axis != dim:
                _cut_to(e, i, axis, size, cuts)
    empty = {i for i, shape in enumerate(e.small) if shape[dim] == 0}
    if not empty or len(empty) == len(e.small):
        return _rebind(e, e.params, cuts)
    # An emptied group's part adds nothing: leave it out, so no empty value is kept.
    kept = [i for i in range(len(e.small)) if i not in empty]
    inner = _rebind(e, e.params, {kept.index(i): c for i, c in cuts.items() if i in kept})
    return lambda ins: inner([ins[i] for i in kept])


def _dynamic_slice(e: _Eqn) -> Callable:
    sizes = list(e.params["slice_sizes"])
    starts: dict[int, int] = {}
    for axis, kept in enumerate(e.kept[0]):
        if kept is None:
            continue
        length = e.shapes[0][axis]
        if sizes[axis] == length:
            sizes[axis] = e.small[0][axis]
            continue
        var = e.invars[1 + axis]
        if not isinstance(var, jex.Literal):
            raise e.fail(f"a traced offset on axis {axis}, which lost channels")
        first = min(max(int(var.val), 0), length - sizes[axis])
        out = e.out_kept[0][axis]
        out = np.arange(sizes[axis]) if out is None else out
        pos = _positions(e, axis, first + out)
        if len(pos) and np.any(np.diff(pos) != 1):
            raise e.fail(f"the kept entries of axis {axis} are not contiguous")
        starts[axis] = int(pos[0]) if len(pos) else 0
        sizes[axis] = len(pos)
    params = dict(e.params, slice_sizes=tuple(sizes))

    def step(ins):
        ins = list(ins)
        for axis, start in starts.items():
            ins[1 + axis] = jnp.asarray(start, jnp.result_type(ins[1 + axis]))
        return _bind(e.prim, params, ins)

    return step


def _gather(e: _Eqn) -> Callable:
    dn = e.params["dimension_numbers"]
    if any(k is not None for entries in e.kept[1:] for k in entries):
        raise e.fail("indices that lost entries")
    sizes = list(e.params["slice_sizes"])
    for axis, kept in enumerate(e.kept[0]):
        if kept is None:
            continue
        if axis in dn.collapsed_slice_dims or axis in dn.start_index_map:
            raise e.fail(f"a lookup along axis {axis}, which lost channels")
        sizes[axis] = e.small[0][axis]
    return _rebind(e, dict(e.params, slice_sizes=tuple(sizes)))


def _cumulative(e: _Eqn) -> Callable:
    if e.kept[0][e.params["axis"]] is not None:
        raise e.fail("a running total along an axis that lost channels")
    return _rebind(e, e.params)


def _reduce_window(e: _Eqn) -> Callable:
    for axis, kept in enumerate(e.kept[0]):
        if kept is not None and e.params["window_dimensions"][axis] != 1:
            raise e.fail(f"a window along axis {axis}, which lost channels")
    return _rebind(e, e.params)


def _arg(e: _Eqn) -> Callable:
    if any(e.kept[0][a] is not None for a in e.params["axes"]):
        raise e.fail("an index along an axis that lost channels")
    return _rebind(e, e.params)


# -- mixing equations: the removed entries' share comes from the ghost


def _indicator(kept, shape, dtype=np.float32) -> np.ndarray:
    """1 on the kept box, 0 elsewhere."""
    out = np.ones(shape, dtype)
    for axis, idx in enumerate(kept):
        if idx is not None:
            line = np.zeros(shape[axis], dtype)
            line[idx] = 1
            out = out * line.reshape((1,) * axis + (-1,) + (1,) * (len(shape) - axis - 1))
    return out


def _take(x, kept):
    """The kept box of a host array."""
    x = np.asarray(x)
    for axis, idx in enumerate(kept):
        if idx is not None:
            x = np.take(x, idx, axis=axis)
    return x


def _corrected(e: _Eqn, step: Callable, share, unknown, combine, identity) -> Callable:
    """`step`, with the removed entries' share of each kept output combined in; an
    output whose share depends on the data cannot be made. The share is stored once
    along every axis it does not vary on (the batch, usually), and not at all when it
    is the combination's identity everywhere (removed entries that are zero)."""
    kept = e.out_kept[0]
    if unknown is not None and bool(np.any(_take(unknown, kept))):
        raise e.fail(
            "the entries it reads from removed channels depend on the data, so the "
            "masked network's result cannot be computed without them"
        )
    share = _take(share, kept)
    if np.all(share == np.asarray(identity)):
        return step
    for axis in range(share.ndim):
        first = np.take(share, [0], axis=axis)
        if np.all(share == first):
            share = first
    return lambda ins: [combine(step(ins)[0], share)]


def _contraction(e: _Eqn, pairs, params, cuts) -> Callable:
    """A convolution or dot whose contracted axis `pairs` (lhs axis, rhs axis) may
    have lost entries. A kept output misses two kinds of terms: those whose lhs entry
    was removed on a contracted axis, and those whose lhs entry is kept there but the
    rhs entry is not (only where the two sides' kept entries differ: a one-value side
    cut to size). Entries removed on the other axes reach removed outputs only."""
    step = _rebind(e, params, cuts)
    if all(e.kept[0][x] is None and e.kept[1][y] is None for x, y in pairs):
        return step
    a, b = e.ghosts
    if any(e.small[0][x] == 0 for x, _ in pairs):  # it reads an emptied group only
        dtype = e.params.get("preferred_element_type") or np.result_type(a.value, b.value)
        shape = (1,) * len(e.out_small[0])  # a sum of nothing, compact (`_COMPACT`)
        step = lambda ins: [lax.full(shape, 0, dtype)]  # noqa: E731
    dtype = a.value.dtype
    only = lambda kept, axes: [k if i in axes else None for i, k in enumerate(kept)]  # noqa: E731
    ka = _indicator(only(e.kept[0], [x for x, _ in pairs]), e.shapes[0])
    kb = _indicator(only(e.kept[1], [y for _, y in pairs]), e.shapes[1])
    share = np.zeros((), dtype)
    counts = 0.0
    removed = a.value * (1 - ka).astype(dtype)
    if np.any(removed != 0) or (a.unknown is not None and np.any(a.unknown & (ka == 0))):
        share = share + e.prim.bind(jnp.asarray(removed), jnp.asarray(b.value), **e.params)
        if a.unknown is not None or b.unknown is not None:
            counts = counts + _contract_flags(e.prim, e.params, a, b, 1 - ka, 1, 1 - ka, 1)
    if not all(_same(e.kept[0][x], e.kept[1][y]) for x, y in pairs):
        kept_a, removed_b = a.value * ka.astype(dtype), b.value * (1 - kb).astype(dtype)
        share = share + e.prim.bind(jnp.asarray(kept_a), jnp.asarray(removed_b), **e.params)
        if a.unknown is not None or b.unknown is not None:
            counts = counts + _contract_flags(e.prim, e.params, a, b, ka, 1 - kb, ka, 1 - kb)
    share = np.broadcast_to(np.asarray(share), e.out_shapes[0])
    unknown = None if np.ndim(counts) == 0 else np.asarray(counts) > 0
    return _corrected(e, step, share, unknown, jnp.add, np.zeros((), share.dtype))


def _same(k1, k2) -> bool:
    if k1 is None or k2 is None:
        return k1 is None and k2 is None
    return np.array_equal(k1, k2)


def _dot_general(e: _Eqn) -> Callable:
    (lc, rc), (lb, rb) = e.params["dimension_numbers"]
    cuts: dict = {}
    for x, y in list(zip(lc, rc)) + list(zip(lb, rb)):
        n, m = e.small[0][x], e.small[1][y]
        if n > m:
            _cut_to(e, 0, x, m, cuts)
        elif m > n:
            _cut_to(e, 1, y, n, cuts)
    return _contraction(e, list(zip(lc, rc)), e.params, cuts)


def _conv(e: _Eqn) -> Callable:
    p = e.params
    if p["batch_group_count"] != 1:
        raise e.fail("a batch-grouped convolution")
    lhs_spec, rhs_spec, _ = p["dimension_numbers"]
    feature, out_axis, in_axis = lhs_spec[1], rhs_spec[0], rhs_spec[1]
    groups = p["feature_group_count"]
    per_in = e.shapes[0][feature] // groups
    c_in, c_out = e.small[0][feature], e.small[1][out_axis]
    cuts: dict = {}
    params = dict(p)
    if groups == 1:
        n, m = c_in, e.small[1][in_axis]
        if n > m:
            _cut_to(e, 0, feature, m, cuts)
        elif m > n:
            _cut_to(e, 1, in_axis, n, cuts)
    else:
        # Depthwise: one group per kept input channel. Grouped: the trace removes the
        # same index from every group, so the count of groups stays.
        new = c_in if per_in == 1 else groups
        if c_in == 0 and c_out == 0:  # an emptied group: `_execute` computes nothing
            return lambda ins: [np.zeros(e.out_small[0], e.ghosts[0].value.dtype)]
        if new == 0 or c_in % new or c_out % new:
            raise e.fail(f"{c_in} inputs and {c_out} outputs in {new} groups")
        params["feature_group_count"] = new
    for key, i in (("lhs_shape", 0), ("rhs_shape", 1)):
        if key in params:
            params[key] = tuple(e.small[i])
    # A depthwise input channel feeds its own outputs only: nothing removed reaches
    # a kept output across the feature axis.
    pairs = list(zip(lhs_spec[2:], rhs_spec[2:]))
    if groups == 1 or per_in > 1:
        pairs.append((feature, in_axis))
    return _contraction(e, pairs, params, cuts)


def _reduce(e: _Eqn) -> Callable:
    axes = tuple(e.params["axes"])
    step = _rebind(e, e.params)
    if all(e.kept[0][a] is None for a in axes):
        return step
    a = e.ghosts[0]
    identity, combine = REDUCTIONS[e.name]
    removed = _indicator(e.kept[0], e.shapes[0], bool) == 0
    fill = identity(a.value.dtype)
    entries = np.where(removed, a.value, fill)
    unknown = None if a.unknown is None else np.any(a.unknown & removed, axis=axes)
    if np.all(entries == fill) and (unknown is None or not unknown.any()):
        return step  # nothing removed but the identity
    share = np.asarray(e.prim.bind(jnp.asarray(entries), **e.params))
    return _corrected(e, step, share, unknown, combine, identity(share.dtype))


RULES: dict[str, Callable[[_Eqn], Callable]] = {
    "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim,
    "slice": _slice,
    "split": _split,
    "concatenate": _concatenate,
    "dynamic_slice": _dynamic_slice,
    "gather": _gather,
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    **{name: _reduce for name in REDUCTIONS},
    "argmax": _arg,
    "argmin": _arg,
    **{name: _cumulative for name in ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")},
    **{f"reduce_window_{op}": _reduce_window for op in ("sum", "max", "min")},
}
