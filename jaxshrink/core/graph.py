"""The channel dependency graph of any JAX function, read from its jaxpr.

`spec.trace` describes a model as a chain of layers, which a residual network is not.
Removing a channel couples arrays that a chain cannot see: the output channel of a
convolution is also an entry of the bias, of the batch norm after it, of the next
layer's input axis and, across a residual add, of the other summand's producer. Such a
coupled set is a *group* (Torch-Pruning's DepGraph); its channels are removed together,
one index in every member.

`channel_groups(fn, variables, *example_args)` traces ``fn(variables, *example_args)``
once with `jax.make_jaxpr` (no FLOP is spent) and follows a symbolic *channel id* along
every array axis through the equations:

* Every axis of every variable leaf starts with fresh ids, one per index. The data
  (`example_args`) and the constants carry none: an axis without ids is *untracked*.
* Each rule below says how an equation's output axes take their inputs' ids and which
  ids it *ties* (a union-find over ids: tied ids must be removed together). A
  convolution passes its kernel's out-feature ids to its output's feature axis and ties
  the input's feature axis to the kernel's in-feature axis; an element-wise op ties the
  same axis of its operands, which is where a residual add merges its summands'
  producers; a flatten of (H, W, C) gives feature ``f`` the id of channel ``f % C``.
* An id is *pinned* (kept) when it cannot be removed exactly: it reaches the function's
  output (the classes must stay), it meets untracked values on the same axis (the data,
  a constant), or an equation mixes entries along its axis in a way no rule describes.
  Pinning is the answer to every case the rules do not cover: the graph never guesses,
  and each unknown primitive on a channel axis is recorded in `Graph.notes`.

Afterwards each class of tied ids is one channel. Channels whose ids lie on the same
leaf axes (and agree in being pinned or not) form one `Group`, index-aligned: channel
``k`` of a group owns ``slices[j].indices[k]`` along ``slices[j].axis`` of each member.
Only classes that something produces are groups (a kernel's out-feature axis, a bias, a
norm's scale or shift); an input axis that reads the data has nothing to remove.

*Roles.* A member slice is a *producer* where the leaf itself (or a reshaped, broadcast
or converted view of it) makes the channel: a convolution kernel's out-feature axis, a
dense kernel's free axis, a leaf in an element-wise op (bias, scale, shift). It is a
*consumer* where it is contracted with the channel (the next layer's input axis), and
*state* where a leaf of a state collection ('batch_stats') takes part element-wise. A
group whose producers' slices are zero emits exactly zero after any ``f`` with
``f(0) = 0`` (ReLU, GELU, SiLU, tanh), so `Graph.masks_to_variables` zeroes exactly the
producers; the running mean and variance then no longer matter, and the consumers read
zeros. Otherwise a constant remains, exact in the masked network and for the export to
fold into the consumers' biases.

*Coarse but exact.* Where an exact description needs more than "channel i goes with
channel j", the rules tie more ids than strictly needed rather than guess: a split of a
channel axis (C -> heads x head_dim) keeps the ids on the minor axis and ties every head's
channel d together (the heads are pruned alike); a grouped convolution ties channel j of
every group; a merge of two channel axes keeps the minor one and pins the other.

*Mixed channels.* A reduction over a channel axis (a layer norm's mean and variance, a
softmax) is allowed: its result has no channel axis, and an element-wise op with the
original ties them again. The masked network is exact, but a physically smaller one
computes that statistic over fewer channels, so `Group.mixed` records where it happens.

Trace the inference function (``module.apply`` with running averages, no dropout): a
returned state (updated statistics) is an output and pins its channels, and a random
dropout mask is untracked data.

*The trace itself.* `trace` returns what `channel_groups` summarises: the closed jaxpr,
a `Record` of the labels of every intermediate value (per call site of every
sub-jaxpr) and which group and channel each id ended up in. `shrink` rewrites that very
jaxpr at the kept widths, so the groups and the smaller network come from one trace.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

try:  # where an equation was written, for the notes; only its summary is read
    from jax.extend import source_info_util
except ImportError:  # pragma: no cover -- a JAX that moved it: the notes lose their lines
    source_info_util = None


def _exclude_libraries(names=("jax2onnx",)) -> None:
    """Libraries that wrap `jax.numpy` (jax2onnx patches `jnp.cumsum` and others once
    imported) are not where a user wrote a line: their frames are skipped the way JAX
    and Flax skip their own, without importing them."""
    if source_info_util is None:  # pragma: no cover
        return
    for name in names:
        found = importlib.util.find_spec(name)
        for folder in (found.submodule_search_locations or []) if found else []:
            source_info_util.register_exclusion(folder)


_exclude_libraries()

PRODUCER, CONSUMER, STATE = "producer", "consumer", "state"

# ---------------------------------------------------------------------- the result


@dataclasses.dataclass(frozen=True)
class Slice:
    """One axis of one variable leaf inside a group.

    Channel ``k`` of the group owns the entries ``indices[k]`` of axis `axis` (of
    `length` entries): one entry for a kernel's out-feature axis or a bias, several for
    a dense layer that reads a flattened feature map (channel ``c`` of ``C`` owns
    ``c, c + C, c + 2C, ...``). Entries owned by no channel of the group belong to
    another group (a concatenation's other operand) or to none.
    """

    path: tuple[str, ...]  # the leaf's key path in `variables`, e.g. ('params', 'Conv_0', 'kernel')
    axis: int
    indices: tuple[tuple[int, ...], ...]  # indices[k]: the entries of channel k
    length: int  # the size of the axis
    roles: frozenset[str]  # PRODUCER, CONSUMER, STATE (none: only rearranged or mixed)

    def owner(self) -> np.ndarray:
        """The channel that owns each entry of the axis (-1: not this group's)."""
        out = np.full(self.length, -1, np.int64)
        for k, entries in enumerate(self.indices):
            out[list(entries)] = k
        return out

    def text(self) -> str:
        """'params/Conv_0/kernel:3', with the owned entries when they are not all of
        the axis, one per channel, in order."""
        name = f"{'/'.join(self.path)}:{self.axis}"
        counts = {len(entries) for entries in self.indices}
        if counts == {1}:
            first = [entries[0] for entries in self.indices]
            if first == list(range(self.length)):
                return name
            if first == list(range(first[0], first[0] + len(first))):
                return f"{name}[{first[0]}:{first[-1] + 1}]"
            return f"{name}{first}"
        per = "/".join(str(c) for c in sorted(counts))
        return f"{name} ({per} entries per channel)"


@dataclasses.dataclass(frozen=True)
class Group:
    """Channels removed together: channel ``k`` is entry ``k`` of every slice."""

    size: int  # number of channels
    slices: tuple[Slice, ...]  # every leaf axis the channels occupy, in network order
    removable: bool
    reasons: tuple[str, ...] = ()  # why not removable
    mixed: tuple[str, ...] = ()  # reductions over these channels (see the module docstring)

    @property
    def producers(self) -> tuple[Slice, ...]:
        """The slices that make the channels (zeroing them disables the channels)."""
        return tuple(s for s in self.slices if PRODUCER in s.roles)

    @property
    def consumers(self) -> tuple[Slice, ...]:
        """The slices that read the channels (the next layers' input axes)."""
        return tuple(s for s in self.slices if CONSUMER in s.roles)

    def slice(self, path: Sequence[str], axis: int) -> Slice:
        """The member on `axis` of the leaf at `path`."""
        for s in self.slices:
            if s.path == tuple(path) and s.axis == axis:
                return s
        raise KeyError(f"{'/'.join(path)}:{axis} is not in this group")

    def text(self) -> str:
        """One line: size, producers, consumers, and whether it may be removed."""
        state = "removable" if self.removable else "kept: " + "; ".join(self.reasons)
        parts = [
            f"{self.size} channels, {state}",
            "produced by " + (", ".join(s.text() for s in self.producers) or "-"),
            "read by " + (", ".join(s.text() for s in self.consumers) or "-"),
        ]
        others = [s for s in self.slices if PRODUCER not in s.roles and CONSUMER not in s.roles]
        if others:
            parts.append("also " + ", ".join(s.text() for s in others))
        if self.mixed:
            parts.append("mixed by " + "; ".join(self.mixed))
        return " | ".join(parts)


@dataclasses.dataclass(frozen=True)
class Graph:
    """The channel groups of a function's variables (static data, hashable)."""

    groups: tuple[Group, ...]
    notes: tuple[tuple[str, str], ...]  # (primitive, where): unknown ops on channel axes
    leaves: tuple[tuple[tuple[str, ...], tuple[int, ...], str], ...]  # path, shape, dtype
    treedef: Any  # of `variables`

    @property
    def removable(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.removable)

    def group_of(self, path: Sequence[str], axis: int, index: int = 0) -> Group:
        """The group that owns entry `index` of `axis` of the leaf at `path`."""
        for group in self.groups:
            for s in group.slices:
                if s.path == tuple(path) and s.axis == axis and s.owner()[index] >= 0:
                    return group
        raise KeyError(f"entry {index} of {'/'.join(path)}:{axis} is in no group")

    def describe(self) -> str:
        """One line per group, then one per note."""
        lines = [f"group {i}: {g.text()}" for i, g in enumerate(self.groups)]
        lines += [f"note: {note_text(p, w)}" for p, w in self.notes]
        return "\n".join(lines)

    def full_masks(self) -> list:
        """Every channel kept: all-True vectors for the removable groups, None for the
        others (the form `masks_to_variables` takes)."""
        return [np.ones(g.size, bool) if g.removable else None for g in self.groups]

    def masks_to_variables(self, group_masks: Sequence) -> Any:
        """Per-leaf 0/1 multipliers of the shape of `variables`: a boolean vector per
        group (None: keep all) becomes zeros on the producer slices (kernel
        out-slices, biases, norm scales and shifts) of its disabled channels; every
        other entry is 1. Works on traced masks (inside `jit`)."""
        if len(group_masks) != len(self.groups):
            raise ValueError(f"{len(group_masks)} masks for {len(self.groups)} groups")
        index = {path: i for i, (path, _, _) in enumerate(self.leaves)}
        factors: dict[tuple[int, int], list] = {}
        for i, (group, mask) in enumerate(zip(self.groups, group_masks)):
            if mask is None:
                continue
            if not group.removable:
                raise ValueError(f"group {i} is not removable ({'; '.join(group.reasons)})")
            mask = jnp.asarray(mask, bool)
            if mask.shape != (group.size,):
                raise ValueError(f"group {i}: mask of shape {mask.shape}, not ({group.size},)")
            for s in group.producers:
                owner = s.owner()
                keep = jnp.where(owner >= 0, mask[np.maximum(owner, 0)], True)
                factors.setdefault((index[s.path], s.axis), []).append(keep)
        out = []
        for i, (_, shape, dtype) in enumerate(self.leaves):
            leaf = jnp.ones(shape, dtype)
            for axis in range(len(shape)):
                for keep in factors.get((i, axis), []):
                    view = (1,) * axis + (-1,) + (1,) * (len(shape) - axis - 1)
                    leaf = leaf * keep.reshape(view).astype(dtype)
            out.append(leaf)
        return jax.tree_util.tree_unflatten(self.treedef, out)


def note_text(primitive: str, where: str) -> str:
    return f"'{primitive}' on the channel axis of {where}; those channels are kept"


# ------------------------------------------------------------------ axis labels

# Each axis of each value in the jaxpr carries one of:
#   an int array of channel ids, one per entry (the axis carries channels);
#   UNTRACKED (None): entries that vary along the axis but belong to no channel (the
#     data, a spatial axis, a constant);
#   SAME: one value all along the axis (a broadcast, any size-1 axis).
UNTRACKED = None
SAME = "same"


def _labeled(entry) -> bool:
    return isinstance(entry, np.ndarray)


def _plain(shape) -> tuple:
    """The labels of a value that carries no channel: the data, a constant."""
    return tuple(SAME if size == 1 else UNTRACKED for size in shape)


def _key_text(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


class _Ids:
    """Channel ids: where each was born, a union-find over them, and per class the
    reasons it is pinned and the reductions that mix it."""

    def __init__(self, paths, state_collections):
        self.paths = paths
        self.state_collections = frozenset(state_collections)
        self.birth: list[tuple[int, int, int] | None] = []  # (leaf, axis, index) or None
        self.parent: list[int] = []
        self.pins: dict[int, set[str]] = {}
        self.mixed: dict[int, set[str]] = {}
        self.roles: dict[int, set[str]] = {}
        self.first_use: dict[int, int] = {}  # leaf -> order of its first role
        self.notes: list[tuple[str, str]] = []

    def new(self, n: int, birth: Callable[[int], tuple | None] = lambda i: None) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.birth.extend(birth(i) for i in range(n))
        return np.arange(start, start + n, dtype=np.int64)

    def placeholder(self, n: int, reason: str) -> np.ndarray:
        """Ids for entries that no channel makes (untracked values joined to channels)."""
        ids = self.new(n)
        self.pin(ids, reason)
        return ids

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a, b) -> None:
        for x, y in zip(np.asarray(a).ravel().tolist(), np.asarray(b).ravel().tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx == ry:
                continue
            self.parent[ry] = rx
            for table in (self.pins, self.mixed):
                if ry in table:
                    table.setdefault(rx, set()).update(table.pop(ry))

    def pin(self, ids, reason: str) -> None:
        for root in {self.find(i) for i in np.asarray(ids).ravel().tolist()}:
            self.pins.setdefault(root, set()).add(reason)

    def mix(self, ids, reason: str) -> None:
        for root in {self.find(i) for i in np.asarray(ids).ravel().tolist()}:
            self.mixed.setdefault(root, set()).add(reason)

    def live(self, entry) -> bool:
        """Carries channels that may still be removed."""
        return _labeled(entry) and any(self.find(i) not in self.pins for i in entry.tolist())

    def describe(self, entry) -> str:
        """'params/Conv_0/kernel axis 3': where the ids of an axis were born."""
        for i in entry.tolist():
            if self.birth[i] is not None:
                leaf, axis, _ = self.birth[i]
                return f"{'/'.join(self.paths[leaf])} axis {axis}"
        return "an untracked axis"

    def give_role(self, leaf: int, entry, role: str) -> None:
        if role != CONSUMER and self.paths[leaf][0] in self.state_collections:
            role = STATE
        self.first_use.setdefault(leaf, len(self.first_use))
        for i in entry.tolist():
            self.roles.setdefault(i, set()).add(role)


# ------------------------------------------------------------------ equation rules


@dataclasses.dataclass
class _Eqn:
    """What a rule sees of one equation."""

    name: str
    params: dict
    shapes: list[tuple[int, ...]]  # of the inputs
    out_shapes: list[tuple[int, ...]]
    labels: list[tuple]  # per input, one entry per axis
    views: list[int | None]  # per input: the leaf it is a view of, if any
    literals: list[Any]  # per input: its value when it is a literal, else None
    where: str  # 'in Model/Conv_0, file.py:12'


def _elementwise_axis(ids: _Ids, eqn: _Eqn, entries, sizes, size: int):
    """One output axis of an element-wise op: tie the operands' ids on it."""
    full = [e for e, s in zip(entries, sizes) if s == size]
    for e, s in zip(entries, sizes):
        if s != size and ids.live(e):
            ids.pin(e, f"broadcast over an axis by '{eqn.name}' {eqn.where}")
    labeled = [e for e in full if _labeled(e)]
    if labeled:
        for e in labeled[1:]:
            ids.union(labeled[0], e)
        if size > 1 and any(e is UNTRACKED for e in full):
            ids.pin(labeled[0], f"meets the data or a constant in '{eqn.name}' {eqn.where}")
        return labeled[0]
    if size > 1 and any(e is UNTRACKED for e in full):
        return UNTRACKED
    return SAME


def _elementwise(ids: _Ids, eqn: _Eqn):
    out_shape = eqn.out_shapes[0]
    ranked = [i for i, shape in enumerate(eqn.shapes) if len(shape) == len(out_shape)]
    out = []
    for axis, size in enumerate(out_shape):
        entries = [eqn.labels[i][axis] for i in ranked]
        sizes = [eqn.shapes[i][axis] for i in ranked]
        out.append(_elementwise_axis(ids, eqn, entries, sizes, size))
        for i in ranked:
            entry = eqn.labels[i][axis]
            if eqn.views[i] is not None and eqn.shapes[i][axis] == size and _labeled(entry):
                ids.give_role(eqn.views[i], entry, PRODUCER)
    return [tuple(out)] * len(eqn.out_shapes)


def _identity(ids: _Ids, eqn: _Eqn):
    return list(eqn.labels[: len(eqn.out_shapes)])


def _contract(ids: _Ids, eqn: _Eqn, a, b, a_index=None, b_index=None) -> None:
    """Entries ``a[a_index]`` and ``b[b_index]`` are multiplied together and summed:
    tie them (one labeled side alone: pinned by untracked values, or mixed by a
    broadcast one)."""
    if a_index is not None and _labeled(a):
        a = a[a_index]
    if b_index is not None and _labeled(b):
        b = b[b_index]
    if _labeled(a) and _labeled(b):
        ids.union(a, b)
        return
    for own, other in ((a, b), (b, a)):
        if _labeled(own) and len(own) > 1:
            if other is UNTRACKED:
                ids.pin(own, f"contracted with the data or a constant in '{eqn.name}' {eqn.where}")
            else:
                ids.mix(own, f"'{eqn.name}' {eqn.where}")


def _pin_window(ids: _Ids, eqn: _Eqn, entry) -> None:
    if ids.live(entry):
        ids.pin(entry, f"a window axis of '{eqn.name}' {eqn.where}")


def _conv(ids: _Ids, eqn: _Eqn):
    p = eqn.params
    if p["batch_group_count"] != 1:
        return _unknown(ids, eqn)
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs, rhs = eqn.labels
    lhs_shape, rhs_shape = eqn.shapes
    groups = p["feature_group_count"]
    feature, out_axis, in_axis = lhs_spec[1], rhs_spec[0], rhs_spec[1]
    c_in, c_out = lhs_shape[feature], rhs_shape[out_axis]
    per_in, per_out = c_in // groups, c_out // groups
    produced = rhs[out_axis]
    if groups == 1:
        _contract(ids, eqn, lhs[feature], rhs[in_axis])
    elif per_in == 1:
        # Depthwise (with `per_out` outputs per input): output channel o reads input
        # channel o // per_out only, so input g goes with its outputs. The kernel's
        # size-1 input axis serves every group and is no channel.
        _contract(ids, eqn, lhs[feature], produced, np.repeat(np.arange(groups), per_out))
        if ids.live(rhs[in_axis]):
            ids.pin(rhs[in_axis], f"the shared input axis of a depthwise '{eqn.name}'")
    else:
        # Grouped: kernel input j reads channel j of every group, and shrinking one
        # group's outputs alone is no grouped convolution: tie index j across groups.
        _contract(ids, eqn, lhs[feature], rhs[in_axis], None, np.arange(c_in) % per_in)
        if _labeled(produced):
            ids.union(produced, produced[np.arange(c_out) % per_out])
    for axis in lhs_spec[2:]:
        _pin_window(ids, eqn, lhs[axis])
    for axis in rhs_spec[2:]:
        _pin_window(ids, eqn, rhs[axis])
    if eqn.views[1] is not None:
        leaf = eqn.views[1]
        if _labeled(produced):
            ids.give_role(leaf, produced, PRODUCER)
        if groups == 1 or per_in > 1:
            if _labeled(rhs[in_axis]):
                ids.give_role(leaf, rhs[in_axis], CONSUMER)
    out = list(_plain(eqn.out_shapes[0]))
    out[out_spec[0]] = lhs[lhs_spec[0]]
    out[out_spec[1]] = produced if _labeled(produced) else _plain((c_out,))[0]
    return [tuple(out)]


def _dot_general(ids: _Ids, eqn: _Eqn):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.labels
    for a, b in zip(lc, rc):
        _contract(ids, eqn, lhs[a], rhs[b])
    batch = []
    for a, b in zip(lb, rb):
        size = eqn.shapes[0][a]
        batch.append(_elementwise_axis(ids, eqn, [lhs[a], rhs[b]], [size, eqn.shapes[1][b]], size))
    free_l = [a for a in range(len(lhs)) if a not in lc and a not in lb]
    free_r = [b for b in range(len(rhs)) if b not in rc and b not in rb]
    for view, labels, contracted, free in (
        (eqn.views[0], lhs, lc, free_l),
        (eqn.views[1], rhs, rc, free_r),
    ):
        if view is None:
            continue
        for axis in contracted:
            if _labeled(labels[axis]):
                ids.give_role(view, labels[axis], CONSUMER)
        for axis in free:
            if _labeled(labels[axis]):
                ids.give_role(view, labels[axis], PRODUCER)
    return [tuple(batch + [lhs[a] for a in free_l] + [rhs[b] for b in free_r])]


def _merge(ids: _Ids, eqn: _Eqn, entries, sizes):
    """One axis made of several (row-major): it takes the ids of the minor-most axis
    that carries removable channels; other such axes cannot follow and are pinned."""
    live = [k for k, e in enumerate(entries) if ids.live(e)]
    if not live:
        return UNTRACKED if any(e is not SAME for e in entries) else SAME
    keep = live[-1]
    for k in live[:-1]:
        ids.pin(entries[k], f"merged with another channel axis by '{eqn.name}' {eqn.where}")
    grid = np.unravel_index(np.arange(math.prod(sizes)), sizes)[keep]
    return entries[keep][grid]


def _split(ids: _Ids, eqn: _Eqn, entry, sizes):
    """One axis cut into several (row-major): the minor-most keeps the ids, and the
    channels at the same minor index are tied (the major axes are pruned alike)."""
    if not ids.live(entry):
        fill = SAME if entry is SAME else UNTRACKED
        return [fill] * len(sizes)
    minor = sizes[-1]
    ids.union(np.tile(entry[:minor], len(entry) // minor), entry)
    return [UNTRACKED] * (len(sizes) - 1) + [entry[:minor]]


def _reshape(ids: _Ids, eqn: _Eqn):
    labels, shape = list(eqn.labels[0]), list(eqn.shapes[0])
    if eqn.params.get("dimensions") is not None:
        perm = eqn.params["dimensions"]
        labels, shape = [labels[a] for a in perm], [shape[a] for a in perm]
    new = list(eqn.out_shapes[0])
    if 0 in shape:
        return _unknown(ids, eqn)
    out = [SAME] * len(new)
    # A size-1 axis that carries a channel (a one-channel layer's bias) goes to a
    # size-1 axis of the result, aligned from the right as broadcasting aligns them;
    # any is exact, since the single entry is the whole array.
    ones_old = [e for e, size in zip(labels, shape) if size == 1 and ids.live(e)]
    ones_new = [a for a, size in enumerate(new) if size == 1]
    for k, entry in enumerate(reversed(ones_old)):
        if k < len(ones_new):
            out[ones_new[-1 - k]] = entry
        else:
            ids.pin(entry, f"a size-1 channel axis dropped by '{eqn.name}' {eqn.where}")
    old_axes = [a for a, size in enumerate(shape) if size != 1]
    new_axes = [a for a, size in enumerate(new) if size != 1]
    i = j = 0
    while i < len(old_axes):
        a, b = [old_axes[i]], [new_axes[j]]
        pa, pb = shape[a[0]], new[b[0]]
        while pa != pb:
            if pa < pb:
                i += 1
                a.append(old_axes[i])
                pa *= shape[old_axes[i]]
            else:
                j += 1
                b.append(new_axes[j])
                pb *= new[new_axes[j]]
        entries = [labels[k] for k in a]
        if len(a) == 1 and len(b) == 1:
            out[b[0]] = entries[0]
        elif len(b) == 1:
            out[b[0]] = _merge(ids, eqn, entries, [shape[k] for k in a])
        elif len(a) == 1:
            for axis, entry in zip(b, _split(ids, eqn, entries[0], [new[k] for k in b])):
                out[axis] = entry
        else:
            for entry in entries:
                if ids.live(entry):
                    ids.pin(entry, f"regrouped by '{eqn.name}' {eqn.where}")
            for axis in b:
                out[axis] = UNTRACKED
        i += 1
        j += 1
    return [tuple(out)]


def _broadcast_in_dim(ids: _Ids, eqn: _Eqn):
    shape, out_shape = eqn.shapes[0], eqn.out_shapes[0]
    out = [SAME] * len(out_shape)
    for axis, target in enumerate(eqn.params["broadcast_dimensions"]):
        entry = eqn.labels[0][axis]
        if shape[axis] == out_shape[target]:
            out[target] = entry
        elif ids.live(entry):
            ids.pin(entry, f"broadcast over an axis by '{eqn.name}' {eqn.where}")
    return [tuple(out)]


def _transpose(ids: _Ids, eqn: _Eqn):
    return [tuple(eqn.labels[0][a] for a in eqn.params["permutation"])]


def _squeeze(ids: _Ids, eqn: _Eqn):
    drop = {d % len(eqn.shapes[0]) for d in eqn.params["dimensions"]}
    for axis in drop:
        if ids.live(eqn.labels[0][axis]):
            ids.pin(
                eqn.labels[0][axis], f"a size-1 channel axis dropped by '{eqn.name}' {eqn.where}"
            )
    return [tuple(e for a, e in enumerate(eqn.labels[0]) if a not in drop)]


def _rev(ids: _Ids, eqn: _Eqn):
    flip = set(eqn.params["dimensions"])
    return [tuple(e[::-1] if a in flip and _labeled(e) else e for a, e in enumerate(eqn.labels[0]))]


def _reduce(ids: _Ids, eqn: _Eqn):
    axes = set(eqn.params["axes"])
    for axis in axes:
        if ids.live(eqn.labels[0][axis]):
            ids.mix(eqn.labels[0][axis], f"'{eqn.name}' {eqn.where}")
    return [tuple(e for a, e in enumerate(eqn.labels[0]) if a not in axes)] * len(eqn.out_shapes)


def _cumulative(ids: _Ids, eqn: _Eqn):
    axis = eqn.params["axis"]
    entry = eqn.labels[0][axis]
    if ids.live(entry):
        _note(ids, eqn, entry)
    out = list(eqn.labels[0])
    out[axis] = UNTRACKED if eqn.shapes[0][axis] > 1 else SAME
    return [tuple(out)]


def _reduce_window(ids: _Ids, eqn: _Eqn):
    p = eqn.params
    out = []
    for axis, entry in enumerate(eqn.labels[0]):
        plain = (
            p["window_dimensions"][axis] == 1
            and p["window_strides"][axis] == 1
            and tuple(p["padding"][axis]) == (0, 0)
            and p["base_dilation"][axis] == 1
            and p["window_dilation"][axis] == 1
        )
        if plain:
            out.append(entry)
        else:
            _pin_window(ids, eqn, entry)
            out.append(_plain((eqn.out_shapes[0][axis],))[0])
    return [tuple(out)]


def _concatenate(ids: _Ids, eqn: _Eqn):
    dim = eqn.params["dimension"]
    out = []
    for axis, size in enumerate(eqn.out_shapes[0]):
        entries = [labels[axis] for labels in eqn.labels]
        if axis != dim:
            sizes = [shape[axis] for shape in eqn.shapes]
            out.append(_elementwise_axis(ids, eqn, entries, sizes, size))
        elif any(_labeled(e) for e in entries):
            reason = f"untracked entries concatenated by '{eqn.name}' {eqn.where}"
            parts = [
                e if _labeled(e) else ids.placeholder(shape[axis], reason)
                for e, shape in zip(entries, eqn.shapes)
            ]
            out.append(np.concatenate(parts))
        else:
            out.append(_plain((size,))[0])
    return [tuple(out)]


def _stack(ids: _Ids, eqn: _Eqn):
    axis = eqn.params["axis"]
    shape = eqn.shapes[0]
    inner = []
    for a, size in enumerate(shape):
        entries = [labels[a] for labels in eqn.labels]
        inner.append(_elementwise_axis(ids, eqn, entries, [s[a] for s in eqn.shapes], size))
    inner.insert(axis, _plain((len(eqn.labels),))[0])
    return [tuple(inner)]


def _cut(entry, start: int, stop: int, step: int = 1):
    if _labeled(entry):
        return entry[start:stop:step]
    return SAME if len(range(start, stop, step)) == 1 else entry


def _slice(ids: _Ids, eqn: _Eqn):
    p = eqn.params
    strides = p["strides"] or (1,) * len(eqn.shapes[0])
    return [
        tuple(
            _cut(e, start, stop, step)
            for e, start, stop, step in zip(
                eqn.labels[0], p["start_indices"], p["limit_indices"], strides
            )
        )
    ]


def _split_op(ids: _Ids, eqn: _Eqn):
    axis, out, start = eqn.params["axis"], [], 0
    for size in eqn.params["sizes"]:
        labels = list(eqn.labels[0])
        labels[axis] = _cut(labels[axis], start, start + int(size))
        out.append(tuple(labels))
        start += int(size)
    return out


def _dynamic_slice(ids: _Ids, eqn: _Eqn):
    shape, sizes = eqn.shapes[0], eqn.params["slice_sizes"]
    out = []
    for axis, (entry, size, length) in enumerate(zip(eqn.labels[0], sizes, shape)):
        start = eqn.literals[1 + axis]
        if size == length:
            out.append(entry)
        elif start is not None:
            start = min(max(int(start), 0), length - size)  # the clamping lax does
            out.append(_cut(entry, start, start + size))
        else:
            if ids.live(entry):
                ids.pin(entry, f"sliced at a traced offset by '{eqn.name}' {eqn.where}")
            out.append(_plain((size,))[0])
    return [tuple(out)]


def _pad(ids: _Ids, eqn: _Eqn):
    out = []
    for entry, (low, high, interior) in zip(eqn.labels[0], eqn.params["padding_config"]):
        low, high, interior = int(low), int(high), int(interior)
        if (low, high, interior) == (0, 0, 0):
            out.append(entry)
        elif ids.live(entry) and low >= 0 and high >= 0 and interior == 0:
            reason = f"padding entries added by '{eqn.name}' {eqn.where}"
            out.append(
                np.concatenate([ids.placeholder(low, reason), entry, ids.placeholder(high, reason)])
            )
        else:
            if ids.live(entry):
                ids.pin(entry, f"cropped or dilated by '{eqn.name}' {eqn.where}")
            out.append(UNTRACKED)
    return [tuple(out)]


def _gather(ids: _Ids, eqn: _Eqn):
    """A lookup (``table[indices]``, an embedding): operand axes sliced whole keep
    their ids on the output's offset axes; the looked-up axis cannot be pruned."""
    dn = eqn.params["dimension_numbers"]
    if getattr(dn, "operand_batching_dims", ()):
        return _unknown(ids, eqn)
    labels, shape, sizes = eqn.labels[0], eqn.shapes[0], eqn.params["slice_sizes"]
    out = list(_plain(eqn.out_shapes[0]))
    kept = [a for a in range(len(shape)) if a not in dn.collapsed_slice_dims]
    for axis, target in zip(kept, dn.offset_dims):
        if sizes[axis] == shape[axis] and axis not in dn.start_index_map:
            out[target] = labels[axis]
        elif ids.live(labels[axis]):
            _note(ids, eqn, labels[axis])
    for axis in dn.collapsed_slice_dims:
        if ids.live(labels[axis]):
            ids.pin(labels[axis], f"looked up by '{eqn.name}' {eqn.where}")
    for entry in itertools.chain.from_iterable(eqn.labels[1:]):
        if ids.live(entry):
            _note(ids, eqn, entry)
    return [tuple(out)]


def _note(ids: _Ids, eqn: _Eqn, entry) -> None:
    where = f"{ids.describe(entry)} {eqn.where}".strip()
    ids.pin(entry, note_text(eqn.name, where).split(";")[0])
    if (eqn.name, where) not in ids.notes:
        ids.notes.append((eqn.name, where))


def _unknown(ids: _Ids, eqn: _Eqn):
    """No rule: every channel the equation touches is kept, and noted."""
    for labels in eqn.labels:
        for entry in labels:
            if ids.live(entry):
                _note(ids, eqn, entry)
    return [_plain(shape) for shape in eqn.out_shapes]


ELEMENTWISE = frozenset(
    """neg sign floor ceil round is_finite exp exp2 log log1p expm1 tanh logistic sin cos
    tan asin acos atan sinh cosh asinh acosh atanh real imag conj abs sqrt rsqrt cbrt
    square integer_pow not population_count clz erf erfc erf_inv lgamma digamma
    bessel_i0e bessel_i1e add sub mul div rem pow max min atan2 nextafter and or xor
    shift_left shift_right_arithmetic shift_right_logical eq ne lt le gt ge complex
    add_any mulhi igamma igammac igamma_grad_a polygamma zeta random_gamma_grad select_n
    clamp""".split()
)
IDENTITY = frozenset(
    "convert_element_type copy copy_p reduce_precision stop_gradient optimization_barrier".split()
)
VIEWS = frozenset("reshape broadcast_in_dim transpose squeeze rev slice split".split()) | IDENTITY
RULES: dict[str, Callable] = {
    **{name: _elementwise for name in ELEMENTWISE},
    **{name: _identity for name in IDENTITY},
    "conv_general_dilated": _conv,
    "dot_general": _dot_general,
    "reshape": _reshape,
    "broadcast_in_dim": _broadcast_in_dim,
    "transpose": _transpose,
    "squeeze": _squeeze,
    "rev": _rev,
    **{f"reduce_{op}": _reduce for op in ("sum", "max", "min", "prod", "and", "or", "xor")},
    "argmax": _reduce,
    "argmin": _reduce,
    **{name: _cumulative for name in ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")},
    **{f"reduce_window_{op}": _reduce_window for op in ("sum", "max", "min")},
    "concatenate": _concatenate,
    "stack": _stack,
    "slice": _slice,
    "split": _split_op,
    "dynamic_slice": _dynamic_slice,
    "pad": _pad,
    "gather": _gather,
}

# Calls whose sub-jaxpr takes the equation's inputs as they are: param holding it.
CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}


# ------------------------------------------------------------------ propagation


def _frame(eqn, outer: str = "") -> str:
    """'model.py:12': the user's line of an equation (the call's, inside a library
    function that has none of its own)."""
    if source_info_util is None:
        return outer
    summary = source_info_util.summarize(eqn.source_info)  # 'path:line (function)'
    # 'path:line' or 'path:line:column'; the path may hold spaces and colons
    found = re.match(r"(.*?):(\d+)(?::\d+)?(?: \(.*\))?$", summary)
    if not found:
        return outer
    return f"{os.path.basename(found[1])}:{found[2]}"


def _place(stack: str, frame: str) -> str:
    """'(in Model/Conv_0, model.py:12)': the module path and the line."""
    inside = ", ".join(p for p in (f"in {stack}" if stack else "", frame) if p)
    return f"({inside})" if inside else ""


def _name_stack(eqn, prefix: str) -> str:
    return "/".join(p for p in (prefix, str(eqn.source_info.name_stack)) if p)


@dataclasses.dataclass
class Record:
    """What the propagation saw of one run of one (open) jaxpr: the labels of every
    variable it defines, and the record of each sub-jaxpr run, by equation index (a
    list of one record per branch for a `cond`).

    A jaxpr that is called twice (the same cached `relu` at two layers) is run, and
    recorded, once per call, so a record is per call site, not per jaxpr."""

    labels: dict = dataclasses.field(default_factory=dict)  # Var -> one entry per axis
    calls: dict = dataclasses.field(default_factory=dict)  # eqn index -> Record | [Record]


def _run(
    ids: _Ids,
    jaxpr,
    consts_labels,
    in_labels,
    in_views,
    prefix: str = "",
    outer: str = "",
    record: Record | None = None,
):
    """Propagates labels through `jaxpr` (open); returns the outputs' labels and views,
    and fills `record` with every variable's labels."""
    record = Record() if record is None else record
    labels = record.labels
    views: dict = {}
    for var, entry in zip(jaxpr.constvars, consts_labels):
        labels[var] = entry
    for var, entry, view in zip(jaxpr.invars, in_labels, in_views):
        labels[var] = entry
        views[var] = view

    def read(var):
        if isinstance(var, jex.Literal):
            return _plain(np.shape(var.val)), None, var.val
        return labels[var], views.get(var), None

    for index, eqn in enumerate(jaxpr.eqns):
        read_in = [read(v) for v in eqn.invars]
        in_labels_ = [r[0] for r in read_in]
        in_views_ = [r[1] for r in read_in]
        name = eqn.primitive.name
        stack, frame = _name_stack(eqn, prefix), _frame(eqn, outer)
        where = _place(stack, frame)
        out_shapes = [tuple(v.aval.shape) for v in eqn.outvars]
        out_views = [None] * len(eqn.outvars)
        if name in CALLS and CALLS[name] in eqn.params:
            sub = eqn.params[CALLS[name]]
            inner, consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, ())
            consts = [_plain(np.shape(c)) for c in consts]
            sub_record = record.calls[index] = Record()
            outs, out_views = _run(
                ids, inner, consts, in_labels_, in_views_, stack, frame, sub_record
            )
        elif name == "cond":
            branches = record.calls[index] = []
            outs = _cond(ids, eqn, in_labels_, out_shapes, stack, frame, branches)
        else:
            rule = RULES.get(name, _unknown)
            shapes = [
                tuple(np.shape(v.val)) if isinstance(v, jex.Literal) else tuple(v.aval.shape)
                for v in eqn.invars
            ]
            step = _Eqn(
                name,
                eqn.params,
                shapes,
                out_shapes,
                in_labels_,
                in_views_,
                [r[2] for r in read_in],
                where,
            )
            outs = rule(ids, step)
            if name in IDENTITY:
                out_views = list(in_views_[: len(eqn.outvars)])
            elif name in VIEWS and in_views_ and in_views_[0] is not None:
                out_views = [in_views_[0]] * len(eqn.outvars)
        for var, entry, view in zip(eqn.outvars, outs, out_views):
            if isinstance(var, jex.DropVar):
                continue
            labels[var] = tuple(entry)
            views[var] = view
    outs = [read(v) for v in jaxpr.outvars]
    return [o[0] for o in outs], [o[1] for o in outs]


def _cond(ids: _Ids, eqn, in_labels, out_shapes, stack, frame, records: list):
    """Each branch sees the operands; the outputs tie the branches' ids."""
    results = []
    for branch in eqn.params["branches"]:
        consts = [_plain(np.shape(c)) for c in branch.consts]
        views = [None] * (len(in_labels) - 1)
        records.append(Record())
        outs = _run(ids, branch.jaxpr, consts, in_labels[1:], views, stack, frame, records[-1])
        results.append(outs[0])
    step = _Eqn("cond", {}, [], [], [], [], [], _place(stack, frame))
    merged = []
    for k, shape in enumerate(out_shapes):
        entries = [
            _elementwise_axis(ids, step, [r[k][axis] for r in results], [size] * len(results), size)
            for axis, size in enumerate(shape)
        ]
        merged.append(tuple(entries))
    return merged


@dataclasses.dataclass
class Trace:
    """One trace of ``fn(variables, *example_args)`` and what the propagation found:
    the closed jaxpr, the tree of its outputs, the `Graph`, and the `Record` of every
    intermediate value's labels. Anything that rewrites the jaxpr by channels (the
    physically smaller network) reads the same trace the groups came from, so the two
    can never disagree about which axis carries which channel."""

    closed: Any  # jax.extend.core.ClosedJaxpr
    out_tree: Any
    graph: Graph
    record: Record
    ids: _Ids
    channels: dict[int, tuple[int, int]]  # root id -> (group index, channel in the group)

    def owners(self, entry) -> np.ndarray:
        """(group, channel) of each entry of one axis's labels, (-1, -1) where an entry
        belongs to no group (or the axis carries no channels: one row, -1, -1)."""
        if not _labeled(entry):
            return np.full((1, 2), -1, np.int64)
        rows = [self.channels.get(self.ids.find(i), (-1, -1)) for i in entry.tolist()]
        return np.asarray(rows, np.int64).reshape(len(rows), 2)


def trace(
    fn: Callable, variables, *example_args, state_collections: Sequence[str] = ("batch_stats",)
) -> Trace:
    """Traces ``fn(variables, *example_args)`` and propagates the channel ids through it
    (see the module docstring); `channel_groups` keeps only the groups."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(variables, *example_args)
    flat, treedef = jax.tree_util.tree_flatten_with_path(variables)
    paths = [tuple(_key_text(k) for k in path) for path, _ in flat]
    shapes = [tuple(np.shape(leaf)) for _, leaf in flat]
    dtypes = [str(jnp.result_type(leaf)) for _, leaf in flat]
    ids = _Ids(paths, state_collections)

    in_labels, in_views = [], []
    for leaf, shape in enumerate(shapes):
        in_labels.append(
            tuple(
                ids.new(size, lambda i, leaf=leaf, axis=axis: (leaf, axis, i))
                for axis, size in enumerate(shape)
            )
        )
        in_views.append(leaf)
    data = jax.tree_util.tree_leaves(example_args)
    in_labels += [_plain(np.shape(x)) for x in data]
    in_views += [None] * len(data)
    jaxpr = closed.jaxpr
    if len(jaxpr.invars) != len(in_labels):
        raise ValueError(f"the trace has {len(jaxpr.invars)} inputs, not {len(in_labels)}")
    record = Record()
    consts = [_plain(np.shape(c)) for c in closed.consts]
    outs, _ = _run(ids, jaxpr, consts, in_labels, in_views, record=record)
    for labels in outs:
        for entry in labels:
            if _labeled(entry):
                ids.pin(entry, "reaches the function's output")
    found = _groups(ids, shapes)
    graph = Graph(
        tuple(group for group, _ in found),
        tuple(ids.notes),
        tuple(zip(paths, shapes, dtypes)),
        treedef,
    )
    channels = {root: (g, k) for g, (_, roots) in enumerate(found) for k, root in enumerate(roots)}
    out_tree = jax.tree_util.tree_structure(out_shape)
    return Trace(closed, out_tree, graph, record, ids, channels)


def channel_groups(
    fn: Callable, variables, *example_args, state_collections: Sequence[str] = ("batch_stats",)
) -> Graph:
    """The channel groups of ``fn(variables, *example_args)`` (see the module
    docstring). `example_args` are the data: only their shapes and dtypes matter, and
    a channel tied to them is kept, as is one that reaches `fn`'s outputs. Leaves of
    `state_collections` (first key of their path) take part as state, not producers."""
    return trace(fn, variables, *example_args, state_collections=state_collections).graph


def _groups(ids: _Ids, shapes) -> list[tuple[Group, list[int]]]:
    """Bundles the classes of tied ids into index-aligned groups: classes that lie on
    the same leaf axes and agree in being pinned are the channels of one group. Each
    group comes with its channels' root ids, in channel order."""
    members: dict[int, dict[tuple[int, int], list[int]]] = {}
    roles: dict[int, dict[tuple[int, int], set[str]]] = {}
    for i, birth in enumerate(ids.birth):
        if birth is None:
            continue
        leaf, axis, index = birth
        root = ids.find(i)
        members.setdefault(root, {}).setdefault((leaf, axis), []).append(index)
        roles.setdefault(root, {}).setdefault((leaf, axis), set()).update(ids.roles.get(i, ()))
    bundles: dict[tuple, list[int]] = {}
    for root, where in members.items():
        bundles.setdefault((tuple(sorted(where)), root in ids.pins), []).append(root)

    def order(leaf):  # network order: when the leaf was first used
        return ids.first_use.get(leaf, len(ids.first_use) + leaf)

    found = []
    for (keys, _), roots in bundles.items():
        role = {key: set().union(*(roles[r][key] for r in roots)) for key in keys}
        made = [(order(leaf), axis) for (leaf, axis), r in role.items() if PRODUCER in r]
        if not made:
            continue
        keys = sorted(keys, key=lambda k: (order(k[0]), k[1]))
        roots = sorted(roots, key=lambda r: min(members[r][keys[0]]))
        slices = tuple(
            Slice(
                path=ids.paths[leaf],
                axis=axis,
                indices=tuple(tuple(sorted(members[r][(leaf, axis)])) for r in roots),
                length=shapes[leaf][axis],
                roles=frozenset(role[(leaf, axis)]),
            )
            for leaf, axis in keys
        )
        reasons = sorted(set().union(*(ids.pins.get(r, set()) for r in roots)))
        mixed = sorted(set().union(*(ids.mixed.get(r, set()) for r in roots)))
        group = Group(len(roots), slices, not reasons, tuple(reasons), tuple(mixed))
        found.append(((min(made), slices[0].indices[0]), group, roots))
    found.sort(key=lambda item: item[0])
    return [(group, roots) for _, group, roots in found]
