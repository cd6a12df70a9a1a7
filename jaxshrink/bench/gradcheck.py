"""Gradient check: backprop against central differences, in float64 (thesis 004, 3.3).

Thesis 004 verifies its computations "through gradient check" (section 3.3): for a
parameter θ_i it compares the backprop derivative f'_a = ∂L/∂θ_i with the central
difference

    f'_n = (L(θ + Δ e_i) - L(θ - Δ e_i)) / 2Δ

and reports the relative error of its eq. 3.7, ``|f'_a - f'_n| / |f'_a + f'_n|``;
with Δ = 1e-4 it saw errors of about 1e-9 for its MNIST network. `check_gradients`
does the same for any `models.Model` and loss:

1. Everything runs in float64 (`jax.enable_x64` as a context manager, so the global
   flag of the process is untouched and jit caches, which key on the flag, never
   hand a float64 trace to float32 callers). In float64 the rounding error of the
   difference is about ``1e-16 * |L| / Δ``, far below the 1e-6 we test against;
   in float32 it would be about ``1e-7 * |L| / Δ``, which is why the check cannot
   run at the training precision. (Float64 dots never use TF32, so the model's
   `precision` matters for float32 training only; the package's models default to
   'highest', which keeps GPUs from using TF32 there.)
2. The loss is ``loss_fn(model.apply(params, masks, x, train, rng=dropout_rng), y)``.
   With a fixed `dropout_rng` the dropout mask is a constant, so dropout models are
   checked in training mode too.
3. Sampled coordinates: `num_coordinates` entries, spread evenly over the parameter
   leaves (so every bias is checked, not only the largest kernel) and drawn at random
   (seeded by `rng`) among the entries that matter: those owned by live units, the
   leaves no unit owns, and not the kernel inputs that read a disabled unit.
4. Masked units: *every* entry owned by a disabled unit must get an autodiff
   gradient of exactly 0.0 (its output is multiplied by an exact zero), and its
   central difference must vanish too (it is bitwise 0 for the package's models:
   both sides run through the same compiled loop body); the kernel inputs that read a disabled unit
   (`spec.input_keep`) must also get exactly 0.0 (they multiply an exact zero).
5. `num_directions` random unit directions v over all parameters: ``grad · v``
   against ``(L(θ + Δv) - L(θ - Δv)) / 2Δ``.
6. Frozen units (with `frozen` and `optimizer`): one ``optimizer.update(grads,
   state, params, frozen=frozen)``; the frozen units' own entries must get an update
   of exactly 0.0 and the other live units' updates must not all be zero.

Relative error: eq. 3.7, except that where both |f'_a| and |f'_n| are below 1e-12
(`ZERO`) the error counts as 0: 0/0 says nothing (a unit that no example of the
batch activates has zero gradient and zero difference). ``f'_a = -f'_n != 0`` gives
an infinite error, as it should.

Kinks. ReLU, max-pooling and |x| are not differentiable everywhere. Autodiff returns
a one-sided derivative; a central difference whose interval [θ - Δ, θ + Δ] contains a
kink averages two slopes, and its error is then of order "one pre-activation's share
of the slope", not 1e-9: at Δ = 1e-4 we measured 3e-2 on the quick MNIST network
(`max_relative_error_fixed_step`). The kink points themselves have probability zero
(ties in max-pooling between random float64 values too; the exact ties of a window
whose ReLUs are all off get zero gradient either way), but crossing one within ±Δ
does not: a first-layer weight moves every pre-activation of its filter at every
pixel, and on the quick MNIST and edge networks 4 and 15 of 64 coordinates crossed
one at Δ = 1e-4. We detect crossings exactly instead of
hiding them in a quantile: the loss is evaluated through a small jaxpr interpreter
that records every branch decision of the forward pass (the sign pattern of each
``max``/``min`` such as ReLU's, the outcome of every floating comparison, the sign
under ``abs``/``sign``, and which input each ``reduce_max``/``reduce_window_max``
(max-pooling) selects). If a probe at ±h changes any decision against θ, its interval
crosses a kink. Each coordinate and direction is probed at the steps Δ, Δ/10, ...,
Δ/10^(SHRINK-1) and uses the largest step that crosses no kink; where every step
crosses one, it is reported in `kink_coordinates` and left out of the statistics that
`passed` uses (`max_relative_error_all` still includes it). In float64 the smallest
step, 1e-8 for Δ = 1e-4, still has a rounding error of about 1e-8 * |L| absolute.
Limits of the detector: decisions inside ``while``/``scan``/``cond`` bodies are not
recorded (the thesis networks have none), and a changed maximum that only feeds a
``stop_gradient`` (log-softmax's shift) is flagged although it is no kink: a rare,
harmless false positive that only removes a coordinate.

`passed(tol)` needs the max relative error over the kink-free sampled coordinates
and directions below `tol`, at least half of the sampled coordinates kink-free,
masked gradients exactly 0, masked differences below `tol`, frozen updates exactly 0
and some live update non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxshrink.core import spec as spec_lib

ZERO = 1e-12  # both derivatives below this: relative error 0 (eq. 3.7 is 0/0 there)
SHRINK = 5  # probe steps: delta, delta / 10, ..., delta / 10**(SHRINK - 1)
QUANTILE = 0.9  # the reported high quantile of the relative errors
CHUNK = 32  # loss evaluations per call of the compiled probe loop (`lax.map`)


class GradCheck(NamedTuple):
    """What `check_gradients` measured (see the module docstring).

    Relative errors are eq. 3.7 of thesis 004 over the sampled coordinates whose
    probe crossed no kink; `*_all` includes the others (at the largest step).
    """

    max_relative_error: float
    mean_relative_error: float
    sum_relative_error: float  # 004 reports sums over its checked parameters
    quantile_relative_error: float  # the QUANTILE (0.9) quantile
    max_relative_error_all: float  # including coordinates that crossed a kink
    max_directional_error: float | None  # None: no direction checked (or all kinked)
    masked_grad_max_abs: float  # entries owned by disabled units: exactly 0 expected
    fed_grad_max_abs: float  # kernel inputs reading disabled units: exactly 0 expected
    masked_fd_max_abs: float  # their central differences: 0 expected
    frozen_update_max_abs: float | None  # frozen units' updates: exactly 0 (None: unchecked)
    live_update_max_abs: float | None  # other live units' updates: > 0 expected
    coordinates_checked: int  # sampled coordinates probed
    kink_coordinates: int  # of those, crossing a kink at every step (left out)
    reduced_step_coordinates: int  # crossing one at Δ, checked at a smaller step
    max_relative_error_fixed_step: float  # every coordinate at Δ, kinks or not (004's way)
    masked_coordinates: int  # entries owned by disabled units, all probed
    directions_checked: int  # kink-free random directions
    delta: float
    worst: str  # the sampled coordinate with the largest relative error

    def passed(self, tol: float = 1e-6) -> bool:
        """Whether autodiff agrees with the differences and masking/freezing hold."""
        smooth = self.coordinates_checked - self.kink_coordinates
        ok = (
            smooth >= max(1, self.coordinates_checked // 2)
            and math.isfinite(self.max_relative_error)
            and self.max_relative_error < tol
            and self.masked_grad_max_abs == 0.0
            and self.fed_grad_max_abs == 0.0
            and self.masked_fd_max_abs <= tol
        )
        if self.max_directional_error is not None:
            ok = ok and self.max_directional_error < tol
        if self.frozen_update_max_abs is not None:
            ok = ok and self.frozen_update_max_abs == 0.0 and bool(self.live_update_max_abs)
        return bool(ok)


def relative_error(analytic, numeric, zero: float = ZERO) -> np.ndarray:
    """|a - n| / |a + n| (004 eq. 3.7); 0 where both are below `zero` in magnitude."""
    a = np.asarray(analytic, np.float64)
    n = np.asarray(numeric, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(a - n) / np.abs(a + n)
    err = np.where(np.isnan(err), np.inf, err)  # 0/0 with a or n above `zero` cannot occur
    return np.where((np.abs(a) < zero) & (np.abs(n) < zero), 0.0, err)


# ------------------------------------------------------------------ kink detection

# Primitives whose sub-jaxpr is inlined (calls); loops and conds are bound as they are.
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
}
_COMPARISONS = {"gt", "ge", "lt", "le", "eq", "ne"}
_SIGNS = {"abs", "sign"}
_CHOOSERS = {"reduce_max", "reduce_min", "reduce_window_max", "reduce_window_min"}
_ARGS = {"argmax", "argmin"}


def _floating(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _decisions(eqn, invals, out) -> list[jax.Array]:
    """The branch decisions an equation takes, as arrays (empty if it takes none)."""
    name = eqn.primitive.name
    if not any(_floating(v) for v in invals):
        return []
    if name in ("max", "min"):
        x, y = invals
        return [jnp.greater(x, y), jnp.equal(x, y)]
    if name in _COMPARISONS:
        return [out]
    if name in _SIGNS:
        return [jnp.sign(invals[0])]
    if name in _ARGS:
        return [out]
    if name in _CHOOSERS:
        # Which inputs the maximum picks: the nonzero pattern of its VJP of ones.
        _, pull = jax.vjp(lambda a: eqn.primitive.bind(a, **eqn.params), invals[0])
        return [pull(jnp.ones_like(out))[0] != 0]
    if name == "clamp":
        lo, x, hi = invals
        return [jnp.greater(x, lo), jnp.less(x, hi)]
    return []


def _eval(jaxpr, consts, args, decisions: list) -> list:
    """`jax.core.eval_jaxpr` that appends every branch decision to `decisions`."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jex.core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        key = _CALLS.get(eqn.primitive.name)
        sub = eqn.params.get(key) if key else None
        if isinstance(sub, jex.core.ClosedJaxpr):
            outs = _eval(sub.jaxpr, sub.consts, invals, decisions)
        elif isinstance(sub, jex.core.Jaxpr):
            outs = _eval(sub, (), invals, decisions)
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            subfuns, params = params if isinstance(params, tuple) else ((), params)
            outs = eqn.primitive.bind(*subfuns, *invals, **params)
            if not eqn.primitive.multiple_results:
                decisions.extend(_decisions(eqn, invals, outs))
                outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def with_decisions(fun: Callable) -> Callable:
    """``fun(*args) -> (fun's output, [decision arrays])``; traceable (jit, vmap)."""

    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fun, return_shape=True)(*args)
        decisions: list = []
        outs = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args), decisions)
        return jax.tree.unflatten(jax.tree.structure(shape), outs), decisions

    return wrapped


# ------------------------------------------------------------------------ the check


def _flat_mask(tree) -> np.ndarray:
    """A bool tree flattened in `ravel_pytree`'s order."""
    return np.concatenate([np.ravel(np.asarray(leaf, bool)) for leaf in jax.tree.leaves(tree)])


def _fed_dead(model_spec: spec_lib.ModelSpec, masks, params) -> dict:
    """True on kernel inputs that read a disabled unit (`spec.input_keep`)."""
    out = jax.tree.map(lambda p: np.zeros(p.shape, bool), params)
    for (collection, path, axis), keep in spec_lib.input_keep(model_spec, masks).items():
        if collection != "params":
            continue
        shape = spec_lib.get(params, spec_lib.Leaf(path, axis)).shape
        dead = np.logical_not(np.asarray(keep))
        ax = axis % len(shape)
        dead = np.broadcast_to(
            dead.reshape((1,) * ax + (-1,) + (1,) * (len(shape) - ax - 1)), shape
        )
        old = spec_lib.get(out, spec_lib.Leaf(path, axis))
        out = spec_lib.set_path(out, path, old | dead)
    return out


def _sample(eligible: np.ndarray, sizes: list[int], num: int, gen) -> np.ndarray:
    """`num` flat indices among `eligible`, spread evenly over the leaves."""
    starts = np.cumsum([0, *sizes])
    pools = [np.flatnonzero(eligible[a:b]) + a for a, b in zip(starts[:-1], starts[1:])]
    pools = [p for p in pools if p.size]
    quota = {i: 0 for i in range(len(pools))}
    left = min(num, sum(p.size for p in pools))
    while left > 0:
        open_ = [i for i in quota if quota[i] < pools[i].size]
        for i in gen.permutation(open_)[:left]:
            quota[int(i)] += 1
            left -= 1
    picked = [gen.choice(pools[i], quota[i], replace=False) for i in quota if quota[i]]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _names(params) -> list[tuple[str, int]]:
    """(leaf path, size) in `ravel_pytree` order."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [
        ("/".join(str(getattr(k, "key", k)) for k in path), int(np.size(v))) for path, v in flat
    ]


def _to64(x):
    x = np.asarray(x)
    return jnp.asarray(x, jnp.float64) if np.issubdtype(x.dtype, np.floating) else jnp.asarray(x)


def check_gradients(
    model,
    loss_fn: Callable,
    params,
    masks,
    x,
    y,
    *,
    frozen=None,
    optimizer=None,
    delta: float = 1e-4,
    num_coordinates: int = 64,
    num_directions: int = 4,
    rng: jax.Array | int | None = None,
    dropout_rng: jax.Array | None = None,
) -> GradCheck:
    """Compares autodiff gradients with central differences (see the module doc).

    Args:
      model: a `models.Model` (`apply`, `spec`).
      loss_fn: (outputs, targets) -> scalar, e.g. ``tasks.get_task(...).loss``.
      params: the params tree (any float dtype; checked in float64).
      masks: the per-unit bool tree (``{layer: bool[units]}``).
      x, y: a small batch (2-4 examples keep the check fast).
      frozen: per-unit bool tree of frozen units; checked with `optimizer`.
      optimizer: from `optim.make_optimizer` (takes ``frozen=`` in `update`).
      delta: the largest central-difference step Δ (004: 1e-4).
      num_coordinates: sampled coordinates (live units' entries, unowned leaves).
      num_directions: random unit directions (0: none).
      rng: seeds the sampling and the directions (a key or an int; None: 0).
      dropout_rng: a fixed dropout key; given, the model runs with ``train=True``.

    Returns:
      A `GradCheck`; ``.passed(tol)`` is the verdict.

    Cost: one gradient, then two forward passes per probe: `num_coordinates` +
    `num_directions` + every entry owned by a disabled unit, and two more per smaller
    step for a coordinate or direction that crosses a kink. All probes share one
    compiled loop (`lax.map` over CHUNK evaluations), so the check compiles three
    programs (about 10 s for the quick MNIST network on a loaded 2-core CPU).
    """
    if (frozen is None) != (optimizer is None):
        raise ValueError("give both `frozen` and `optimizer` to check freezing, or neither")
    if rng is None or isinstance(rng, (int, np.integer)):
        rng = jax.random.PRNGKey(int(rng or 0))
    gen = np.random.default_rng(np.asarray(jax.random.key_data(rng), np.uint32).ravel())
    masks = {k: np.asarray(v, bool) for k, v in masks.items()}
    if frozen is not None:
        frozen = {k: np.asarray(v, bool) for k, v in frozen.items()}
    probes = _probes(model.spec, params, masks, frozen, num_coordinates, num_directions, gen)
    with jax.enable_x64(True):
        slopes, grads, updates = _measure(
            model, loss_fn, params, masks, x, y, frozen, optimizer, delta,
            probes.idx, probes.dead_idx, probes.directions, dropout_rng,
        )  # fmt: skip
    return _verdict(probes, slopes, grads, updates, delta)


class _Probes(NamedTuple):
    """What `check_gradients` probes, as flat (`ravel_pytree` order) numpy arrays."""

    names: list[tuple[str, int]]  # (leaf path, size) per params leaf
    idx: np.ndarray  # the sampled coordinates
    dead_idx: np.ndarray  # every entry a disabled unit owns
    fed_dead: np.ndarray  # bool: the entries that read a disabled unit
    directions: np.ndarray  # (num_directions, total) unit vectors
    is_frozen: np.ndarray | None  # bool: entries of frozen units (None: not checked)
    is_trained: np.ndarray | None  # bool: entries of live, unfrozen units


def _probes(model_spec, params, masks, frozen, num_coordinates, num_directions, gen) -> _Probes:
    """The bookkeeping, in numpy before float64 mode: which entries disabled units own
    or read, which are fair game for sampling, the samples and the directions."""
    dead = {k: ~v for k, v in masks.items()}
    owned_dead = _flat_mask(spec_lib.expand(model_spec, dead, params, fill=False))
    fed_dead = _flat_mask(_fed_dead(model_spec, masks, params))
    live = _flat_mask(spec_lib.expand(model_spec, masks, params, fill=True))
    eligible = live & ~fed_dead & ~owned_dead
    names = _names(params)
    idx = _sample(eligible, [size for _, size in names], num_coordinates, gen)
    dead_idx = np.flatnonzero(owned_dead)
    total = sum(size for _, size in names)
    directions = gen.standard_normal((num_directions, total))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    is_frozen = is_trained = None
    if frozen is not None:
        trained = {k: masks[k] & ~frozen[k] for k in masks}
        is_frozen = _flat_mask(spec_lib.expand(model_spec, frozen, params, fill=False))
        is_trained = _flat_mask(spec_lib.expand(model_spec, trained, params, fill=False))
    return _Probes(names, idx, dead_idx, fed_dead, directions, is_frozen, is_trained)


def _verdict(probes: _Probes, slopes, grads, updates, delta: float) -> GradCheck:
    """The `GradCheck` of the measured slopes, gradient and optimizer update."""
    idx, dead_idx = probes.idx, probes.dead_idx
    # (a) sampled coordinates at their largest kink-free step.
    numeric, step, kinked, fixed = slopes["coordinates"]
    analytic = grads[idx]
    errors = relative_error(analytic, numeric)
    fixed_errors = relative_error(analytic, fixed)
    ok = errors[~kinked]
    # (b) disabled units: every owned entry probed; the inputs reading them, gradient only.
    masked_fd = float(np.max(np.abs(slopes["masked"]), initial=0.0))
    # (c) directions.
    dir_numeric, _, dir_kinked, _ = slopes["directions"]
    dir_errors = relative_error(probes.directions @ grads, dir_numeric)[~dir_kinked]
    # (d) one optimizer step with frozen units.
    frozen_max = live_max = None
    if updates is not None:
        frozen_max = float(np.max(np.abs(updates[probes.is_frozen]), initial=0.0))
        live_max = float(np.max(np.abs(updates[probes.is_trained]), initial=0.0))
    return GradCheck(
        max_relative_error=float(np.max(ok, initial=0.0)),
        mean_relative_error=float(np.mean(ok)) if ok.size else 0.0,
        sum_relative_error=float(np.sum(ok)),
        quantile_relative_error=float(np.quantile(ok, QUANTILE)) if ok.size else 0.0,
        max_relative_error_all=float(np.max(errors, initial=0.0)),
        max_directional_error=float(np.max(dir_errors)) if dir_errors.size else None,
        masked_grad_max_abs=float(np.max(np.abs(grads[dead_idx]), initial=0.0)),
        fed_grad_max_abs=float(np.max(np.abs(grads[probes.fed_dead]), initial=0.0)),
        masked_fd_max_abs=masked_fd,
        frozen_update_max_abs=frozen_max,
        live_update_max_abs=live_max,
        coordinates_checked=int(idx.size),
        kink_coordinates=int(kinked.sum()),
        reduced_step_coordinates=int(np.sum(~kinked & (step < delta))),
        max_relative_error_fixed_step=float(np.max(fixed_errors, initial=0.0)),
        masked_coordinates=int(dead_idx.size),
        directions_checked=int(dir_errors.size),
        delta=float(delta),
        worst=_worst(probes, analytic, numeric, step, errors, kinked),
    )


def _worst(probes: _Probes, analytic, numeric, step, errors, kinked) -> str:
    """The sampled coordinate of the largest kink-free error, for a person ('' if none)."""
    idx, names = probes.idx, probes.names
    if not idx.size:
        return ""
    w = int(np.argmax(np.where(kinked, -1.0, errors)))
    ends = np.cumsum([size for _, size in names])
    leaf = int(np.searchsorted(ends, idx[w], side="right"))
    offset = int(idx[w] - (ends[leaf - 1] if leaf else 0))
    return (
        f"{names[leaf][0]}[{offset}]: autodiff {analytic[w]:.12e}, "
        f"difference {numeric[w]:.12e} (step {step[w]:.0e}), "
        f"relative error {errors[w]:.3e}" + (" (kink)" if kinked[w] else "")
    )


def _measure(
    model, loss_fn, params, masks, x, y, frozen, optimizer, delta, idx, dead_idx, dirs, drop
):
    """The float64 part: gradient, probes and the optimizer update, as numpy arrays.

    Returns ``(slopes, grads, updates)``: `slopes` maps 'coordinates' and
    'directions' to (difference, step, kinked, difference at delta) arrays and 'masked' to the
    differences at the disabled units' entries; `grads` and `updates` are flat.
    """
    params = jax.tree.map(_to64, params)
    x, y = _to64(x), _to64(y)
    masks = {k: jnp.asarray(v) for k, v in masks.items()}
    train = drop is not None

    def loss(p):
        return loss_fn(model.apply(p, masks, x, train=train, rng=drop), y)

    flat, unravel = ravel_pytree(params)
    loss_decisions = with_decisions(lambda v: loss(unravel(v)))

    @jax.jit
    def start(params):
        return ravel_pytree(jax.grad(loss)(params))[0], loss_decisions(ravel_pytree(params)[0])[1]

    grads, base = start(params)
    table = jnp.asarray(dirs) if len(dirs) else jnp.zeros((1, flat.size))

    def evaluate(i, d, h):
        """L at θ + h e_i (d < 0) or θ + h v_d, and how many decisions differ from θ's."""
        along = jnp.where(d < 0, jax.nn.one_hot(i, flat.size, dtype=flat.dtype), table[d])
        value, decisions = loss_decisions(flat + h * along)
        return value, sum(jnp.sum(a != b) for a, b in zip(decisions, base))

    chunk = jax.jit(lambda *args: jax.lax.map(lambda a: evaluate(*a), args))
    host = np.asarray(flat)

    def run(i, d, h):
        return _central_differences(chunk, host, i, d, h)

    k = len(dirs)
    slopes = {
        "coordinates": _at_smooth_step(
            run, idx.astype(np.int32), np.full(idx.size, -1, np.int32), delta
        ),
        "directions": _at_smooth_step(
            run, np.zeros(k, np.int32), np.arange(k, dtype=np.int32), delta
        ),
        "masked": run(
            dead_idx.astype(np.int32), np.full(dead_idx.size, -1, np.int32),
            np.full(dead_idx.size, delta),
        )[0],
    }  # fmt: skip
    updates = None
    if optimizer is not None:
        updates = _optimizer_update(optimizer, unravel, params, grads, frozen)
    return slopes, np.asarray(grads), updates


def _central_differences(chunk: Callable, host: np.ndarray, i, d, h):
    """Central differences (and whether both sides kept θ's decisions) per probe:
    coordinate `i` (where `d` < 0) or direction `d`, step `h`, in `chunk`'s compiled
    loop of `CHUNK` loss evaluations; `host` is θ flat."""
    n = len(i)
    i, d, h = np.repeat(i, 2), np.repeat(d, 2), np.repeat(h, 2) * np.tile([1.0, -1.0], n)
    pad = -len(i) % CHUNK
    i, d, h = (np.concatenate([a, np.zeros(pad, a.dtype)]) for a in (i, d, h))
    out = [chunk(*(a[k : k + CHUNK] for a in (i, d, h))) for k in range(0, len(i), CHUNK)]
    if not out:
        return np.zeros(0), np.zeros(0, bool)
    value, flips = (np.concatenate([np.asarray(o[j]) for o in out])[: 2 * n] for j in (0, 1))
    i, d, h = i[: 2 * n : 2], d[: 2 * n : 2], h[: 2 * n : 2]
    # The step actually taken along a coordinate: (θ_i + h) - (θ_i - h) in float64.
    width = np.where(d < 0, (host[i] + h) - (host[i] - h), 2 * h)
    return (value[0::2] - value[1::2]) / width, (flips[0::2] + flips[1::2]) == 0


def _at_smooth_step(run: Callable, i, d, delta: float):
    """Each probe at the largest of delta, delta / 10, ... that crosses no kink; returns
    (difference, step, kinked, difference at delta)."""
    n = len(i)
    numeric, step, kinked = np.zeros(n), np.full(n, delta), np.ones(n, bool)
    todo = np.arange(n)
    fixed = numeric
    for s in range(SHRINK):
        h = np.full(todo.size, delta * 10.0**-s)
        slope, smooth = run(i[todo], d[todo], h)
        if s == 0:
            numeric, fixed = slope.copy(), slope
        numeric[todo[smooth]] = slope[smooth]
        step[todo[smooth]] = h[smooth]
        kinked[todo[smooth]] = False
        todo = todo[~smooth]
    return numeric, step, kinked, fixed


def _optimizer_update(optimizer, unravel: Callable, params, grads, frozen) -> np.ndarray:
    """One optimizer step from a fresh state with the `frozen` units, flat."""
    frozen = {key: jnp.asarray(v) for key, v in frozen.items()}

    @jax.jit
    def step(params, grads, frozen):
        grads = unravel(grads)
        out, _ = optimizer.update(grads, optimizer.init(params), params, frozen=frozen)
        return ravel_pytree(out)[0]

    return np.asarray(step(params, grads, frozen))
