"""Selection strategies (thesis 2.4.3, 4.3) as jit-compatible scoring functions.

A strategy maps the current network to one score per *candidate* unit (see
`masks.candidate_layout`); the shared `select` step then takes the highest-scoring
eligible candidate. `STRATEGIES` is the one registry: adding a strategy is a scoring
function with the `register` decorator, which also states its stopping rule:

    @register("name", max_rounds=0, max_failures=0, visit_once=False)
    def score(net: Net, minimize_cfg) -> (num_candidates,) float

`net` holds one run's network (params, model state, masks), a PRNG key and a scoring
batch of the evaluation split with the model and the task's loss, so a score may look
at weights, activations or gradients. `minimize_cfg` is the static
`config.minimize` (options such as the cosine aggregation are read from it while
tracing). The thesis's stopping rules (4.3),
overridable in `config.minimize`:

* ``cosine`` (the thesis's CosMax): the unit most similar to the others of its layer;
  after a failed round the next-most similar one (the n-th max); stops when
  `max_failures` (2: "the max and the second max") consecutive rounds fail.
* ``random``: a uniformly random eligible unit; stops after `max_rounds` (10) rounds.
* ``sequential``: units in network order, each visited once (accepted or not); stops
  when every candidate has been visited (10 rounds for the thesis network).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib

AGGREGATIONS = ("max", "mean", "min", "std", "median")


class Net(NamedTuple):
    """What a scoring function sees of one run: arrays are traced, `model` and `loss`
    are static."""

    model: Any  # models.Model: `model.spec`, `model.apply(params, masks, x, state=)`
    loss: Callable  # (params, state, masks, x, y) -> scalar: the task's loss, eval mode
    params: Any
    state: Any  # batch-norm statistics ({} for a model without)
    masks: Any  # per-unit bool trees (True = alive)
    key: jax.Array
    x: jax.Array  # a scoring batch of the eval split, as the model sees it
    y: jax.Array

    @property
    def spec(self) -> spec_lib.ModelSpec:
        return self.model.spec


# How many units a round proposes (`minimize.group`; see `minimize` for the rules):
# one (the thesis), a fixed count, a fraction of the live candidates, every candidate
# whose score reaches `group_threshold`, or an adaptive count that doubles after an
# accepted round and halves after a rollback.
GROUPS = ("one", "fixed", "fraction", "threshold", "adaptive")


class Strategy(NamedTuple):
    """A scoring function, its stopping rule and its default group rule."""

    score: Callable  # (net, minimize_cfg) -> (candidates,)
    max_rounds: int  # 0 = no limit
    max_failures: int  # consecutive failed rounds that stop the run; 0 = no limit
    visit_once: bool  # True: a candidate is never proposed twice (sequential)
    group: str  # the `GROUPS` rule used when `minimize.group` is 'auto'
    group_threshold: float  # its score threshold, when `group` is 'threshold'


STRATEGIES: dict[str, Strategy] = {}  # in registration order: a sweep's strategy index


def register(
    name: str,
    *,
    max_rounds: int = 0,
    max_failures: int = 0,
    visit_once: bool = False,
    group: str = "one",
    group_threshold: float = 0.0,
):
    """Adds the decorated scoring function to `STRATEGIES` under `name`."""
    if group not in GROUPS:
        raise ValueError(f"strategy {name!r}: group {group!r}; allowed: {GROUPS}")

    def add(score: Callable) -> Callable:
        STRATEGIES[name] = Strategy(
            score, max_rounds, max_failures, visit_once, group, float(group_threshold)
        )
        return score

    return add


def select(scores: jax.Array, allowed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the best allowed candidate, and whether there was one.

    Ties go to the lowest index, so the choice is deterministic.
    """
    masked = jnp.where(allowed, scores, -jnp.inf)
    return jnp.argmax(masked), jnp.any(allowed)


def cosine_matrix(vectors: jax.Array) -> jax.Array:
    """Pairwise cosine similarities of the rows (0 for an all-zero row)."""
    norms = jnp.linalg.norm(vectors, axis=1)
    safe = jnp.where(norms > 0, norms, 1.0)
    unit = vectors / safe[:, None]
    return unit @ unit.T


def aggregate(values: jax.Array, valid: jax.Array, how: str) -> jax.Array:
    """Reduces each row of `values` over the columns where `valid` is True.

    Rows without a valid column get -inf (they can never be chosen).
    """
    count = jnp.sum(valid, axis=1)
    if how == "max":
        out = jnp.max(jnp.where(valid, values, -jnp.inf), axis=1)
    elif how == "min":
        out = jnp.min(jnp.where(valid, values, jnp.inf), axis=1)
    elif how == "mean":
        out = jnp.sum(jnp.where(valid, values, 0.0), axis=1) / jnp.maximum(count, 1)
    elif how == "std":
        mean = jnp.sum(jnp.where(valid, values, 0.0), axis=1) / jnp.maximum(count, 1)
        var = jnp.sum(jnp.where(valid, (values - mean[:, None]) ** 2, 0.0), axis=1)
        out = jnp.sqrt(var / jnp.maximum(count, 1))
    elif how == "median":
        out = jnp.nanmedian(jnp.where(valid, values, jnp.nan), axis=1)
    else:
        raise ValueError(f"unknown aggregation {how!r}; allowed: {AGGREGATIONS}")
    return jnp.where(count > 0, out, -jnp.inf)


def cosine_stats(model_spec: spec_lib.ModelSpec, params, masks, how: str, absolute: bool):
    """Per unit, `how` of its cosine similarities to the other live units of its layer."""
    out = {}
    for name, _ in masks_lib.candidate_layout(model_spec):
        sims = cosine_matrix(spec_lib.unit_vectors(model_spec, params, masks, name))
        if absolute:
            sims = jnp.abs(sims)
        alive = masks[name]
        valid = alive[None, :] & alive[:, None] & ~jnp.eye(alive.shape[0], dtype=bool)
        out[name] = aggregate(sims, valid, how)
    return out


@register("cosine", max_failures=2)
def cosine_score(net: Net, minimize_cfg):
    """CosMax and its variants: the most similar unit scores highest."""
    how, absolute = minimize_cfg.aggregation, bool(minimize_cfg.absolute)
    stats = cosine_stats(net.spec, net.params, net.masks, how, absolute)
    return masks_lib.flatten(net.spec, stats)


@register("random", max_rounds=10)
def random_score(net: Net, minimize_cfg):
    """Uniform random scores: a random eligible unit is chosen."""
    del minimize_cfg
    return jax.random.uniform(net.key, (masks_lib.num_candidates(net.spec),))


@register("sequential", visit_once=True)
def sequential_score(net: Net, minimize_cfg):
    """Earlier units score higher, so they are visited in network order."""
    del minimize_cfg
    return -jnp.arange(masks_lib.num_candidates(net.spec), dtype=jnp.float32)


def index(name: str) -> int:
    """The position of strategy `name` in `STRATEGIES` (a traced `RunSpec.strategy`)."""
    return list(STRATEGIES).index(name)


def group_rule(minimize_cfg, name: str | None = None) -> tuple[str, float]:
    """(group, group_threshold) of strategy `name` (default: the config's).

    `minimize_cfg.group` of 'auto' keeps the strategy's rule; `group_threshold` of None
    keeps the strategy's threshold.
    """
    rule = STRATEGIES[name or minimize_cfg.strategy]
    group = rule.group if minimize_cfg.group == "auto" else minimize_cfg.group
    threshold = minimize_cfg.get("group_threshold")
    return group, rule.group_threshold if threshold is None else float(threshold)


def stopping_rule(minimize_cfg, name: str | None = None) -> tuple[int, int, bool]:
    """(max_rounds, max_failures, visit_once) of strategy `name` (default: the config's).

    `minimize_cfg.max_rounds` / `max_failures` of -1 keep the thesis's rule.
    """
    rule = STRATEGIES[name or minimize_cfg.strategy]
    max_rounds = rule.max_rounds if minimize_cfg.max_rounds < 0 else int(minimize_cfg.max_rounds)
    max_failures = (
        rule.max_failures if minimize_cfg.max_failures < 0 else int(minimize_cfg.max_failures)
    )
    return max_rounds, max_failures, rule.visit_once


def make_scorer(model, loss: Callable, minimize_cfg, names=None) -> Callable:
    """`score(kind, params, state, masks, key, x, y)`: the scores of strategy number `kind`.

    `model` is the `models.Model`, `loss(params, state, masks, x, y)` the task's loss
    in eval mode, `(x, y)` the scoring batch. `kind` (a position in `STRATEGIES`) is
    traced, so one compiled program serves every strategy of a sweep. Only the
    strategies in `names` (default: all) are compiled: under `vmap` each of them is
    computed for every run and one is picked per run, so a run pays for the scores it
    might use and no others. A `kind` outside `names` gets the first of them.
    """
    names = list(STRATEGIES) if names is None else list(dict.fromkeys(names))
    branches = [
        lambda args, fn=STRATEGIES[name].score: fn(Net(model, loss, *args), minimize_cfg)
        for name in names
    ]
    table = jnp.asarray([names.index(n) if n in names else 0 for n in STRATEGIES], jnp.int32)

    def score(kind, params, state, masks, key, x, y):
        if len(branches) == 1:
            return branches[0]((params, state, masks, key, x, y))
        return jax.lax.switch(table[kind], branches, (params, state, masks, key, x, y))

    return score


def used(config) -> tuple[str, ...]:
    """The strategies a run (`minimize.strategy`) or a sweep (`sweep.strategies`) uses."""
    if "sweep" in config:
        return tuple(config.sweep.strategies)
    return (config.minimize.strategy,)


# ------------------------------------------------------------------ more scores (issue 13)
#
# Every score below is registered after the thesis's three, so their sweep indices do
# not move. All are pure functions of the traced `Net` (jit- and vmap-compatible) and
# read the model only through its `spec` and its Flax module, so they work for every
# `models.Model`. Dead units get whatever their formula gives: `select` and the group
# rules only look at eligible (live) candidates, and layer statistics (outliers) are
# taken over the live units only.
#
# Activation scores assume a ReLU after every maskable layer (every network of the
# theses uses one), so a unit's output is zero exactly where the value its ReLU sees
# is <= 0. That value is read with Flax's `capture_intermediates`: the layer's own
# output or, when the spec says a batch norm belongs to the layer, the batch norm's.
# They are measured on the scoring batch (the first eval batch), not on the whole
# training set as thesis 003 counts.


def _preactivation_path(layer: spec_lib.Layer) -> tuple[str, ...]:
    """The module whose output the layer's ReLU sees: its batch norm's if it has one."""
    own = tuple(layer.name.split("/"))
    norms = [leaf.path[:-1] for leaf in layer.owns if leaf.path[:-1] != own]
    return norms[-1] if norms else own


def _preactivations(module, spec: spec_lib.ModelSpec, params, state, masks, x) -> dict:
    """``{candidate layer: (examples * positions, units)}``: what each ReLU sees."""
    paths = {_preactivation_path(layer): layer.name for layer in spec.candidates}
    _, captured = module.apply(
        {"params": params, **state},
        x,
        masks,
        train=False,
        capture_intermediates=lambda mdl, method: method == "__call__" and mdl.path in paths,
        mutable=["intermediates"],
    )
    out = {}
    for path, name in paths.items():
        node = captured["intermediates"]
        for key in path:
            node = node[key]
        value = node["__call__"][0]
        out[name] = value.reshape(-1, value.shape[-1])
    return out


def activity(net: Net) -> dict:
    """``{candidate layer: (examples * positions, units) bool}``: where a unit is active.

    Active = the unit outputs a non-zero value: its pre-activation is > 0 (ReLU) and the
    unit is alive. A convolution's unit is counted at every output position, as thesis
    003 counts "the output feature activations of a convolution operation" (2.2.3).
    """
    pre = _preactivations(net.model.module, net.spec, net.params, net.state, net.masks, net.x)
    return {name: (value > 0) & net.masks[name][None, :] for name, value in pre.items()}


@register("apoz", max_failures=2)
def apoz_score(net: Net, minimize_cfg):
    """APoZ (Hu et al. 2016, "Network Trimming"): the fraction of a unit's outputs over
    the scoring batch (examples x positions) that are zero. A unit that never fires
    scores 1, the highest possible."""
    del minimize_cfg
    act = activity(net)
    return masks_lib.flatten(
        net.spec, {name: 1.0 - jnp.mean(a.astype(jnp.float32), axis=0) for name, a in act.items()}
    )


@register("activation_count", max_failures=1, group="threshold", group_threshold=0.0)
def activation_count_score(net: Net, minimize_cfg):
    """Thesis 003's vanilla pruning (2.8.1): minus the number of activations.

    003 counts each unit's activations over the data and prunes every unit whose count
    is at or below an activation threshold t (0 in its experiments), repeating while a
    cycle prunes something. The score is ``-count`` (count over the examples and
    positions of the scoring batch), so the threshold group rule with
    ``group_threshold = -t`` (the default, -0) is exactly that rule: score >= -t
    <=> count <= t. It stops after one failed round (003 stops when a cycle prunes
    nothing). With `minimize.group` 'one' the least active unit goes first.
    """
    del minimize_cfg
    act = activity(net)
    return masks_lib.flatten(
        net.spec, {name: -jnp.sum(a, axis=0).astype(jnp.float32) for name, a in act.items()}
    )


OUTLIER_SLACK = 1e-6  # in activation frequency: the "outliers" boundary counts


@register("outliers", max_failures=1, group="threshold", group_threshold=0.0)
def outliers_score(net: Net, minimize_cfg):
    """Thesis 003's "outliers" (2.8.2): units far less active than their layer.

    With f the fraction of a unit's outputs that are non-zero (1 - APoZ) and the mean
    and (population) standard deviation of f over the live units of its layer, the
    score is ``(mean - 2 std) - f``: the threshold group rule with its default
    threshold 0 disables every unit with f below mean - 2 std at once. A unit on the
    boundary (to within `OUTLIER_SLACK`) counts as an outlier, so that the plausible
    tie of one silent unit among four equally active ones (f = 0, 1, 1, 1, 1: mean -
    2 std = 0 exactly) does not hang on float rounding. Note that n live units put
    none more than sqrt(n - 1) std below their mean: a layer needs at least 5 live
    units (6 for a strict outlier) before the rule can fire.
    """
    del minimize_cfg
    act = activity(net)
    out = {}
    for name, a in act.items():
        freq = jnp.mean(a.astype(jnp.float32), axis=0)
        alive = net.masks[name]
        n = jnp.maximum(jnp.sum(alive), 1)
        mean = jnp.sum(jnp.where(alive, freq, 0.0)) / n
        std = jnp.sqrt(jnp.sum(jnp.where(alive, (freq - mean) ** 2, 0.0)) / n)
        out[name] = (mean - 2.0 * std + OUTLIER_SLACK) - freq
    return masks_lib.flatten(net.spec, out)


def _norm_score(net: Net, order: int):
    rows = {
        name: spec_lib.unit_vectors(net.spec, net.params, net.masks, name)
        for name, _ in masks_lib.candidate_layout(net.spec)
    }
    if order == 1:
        norms = {name: jnp.sum(jnp.abs(r), axis=1) for name, r in rows.items()}
    else:
        norms = {name: jnp.sqrt(jnp.sum(r * r, axis=1)) for name, r in rows.items()}
    return masks_lib.flatten(net.spec, {name: -v for name, v in norms.items()})


@register("l1_norm", max_failures=2)
def l1_norm_score(net: Net, minimize_cfg):
    """Weight magnitude: minus the L1 norm of what the unit owns (`spec.unit_vectors`:
    kernel, bias and batch-norm scale and bias; inputs from dead units read 0), so the
    smallest unit goes first (Li et al. 2017 rank filters by this sum)."""
    del minimize_cfg
    return _norm_score(net, 1)


@register("l2_norm", max_failures=2)
def l2_norm_score(net: Net, minimize_cfg):
    """Weight magnitude: minus the L2 norm of what the unit owns (see `l1_norm`)."""
    del minimize_cfg
    return _norm_score(net, 2)


def taylor_terms(net: Net) -> dict:
    """``{candidate layer: (units,)}``: first-order Taylor importance (Molchanov et al.
    2016), ``mean over examples of |1/M sum over the M positions of z * dL/dz|`` for
    each unit's output z.

    The model multiplies each unit's output by its mask, so with float masks m the
    gradient dL/dm_u at m = 1 is exactly ``sum over positions of z * dL/dz``: one
    backward pass per example (vmapped) gives every unit's term, whatever the model.
    Dead units score 0 (they output nothing).
    """
    spec = net.spec
    float_masks = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), net.masks)

    def per_example(x, y):
        grad = jax.grad(lambda m: net.loss(net.params, net.state, m, x[None], y[None]))
        return grad(float_masks)

    grads = jax.vmap(per_example)(net.x, net.y)
    shapes = jax.eval_shape(
        lambda p, s, m, x: _preactivations(net.model.module, spec, p, s, m, x),
        net.params,
        net.state,
        net.masks,
        net.x[:1],
    )
    out = {}
    for name, _ in masks_lib.candidate_layout(spec):
        positions = shapes[name].shape[0]  # one example: positions x units
        term = jnp.mean(jnp.abs(grads[name] / positions), axis=0)
        out[name] = jnp.where(net.masks[name], term, 0.0)
    return out


@register("taylor", max_failures=2)
def taylor_score(net: Net, minimize_cfg):
    """First-order Taylor (Molchanov et al. 2016): the least important unit (the
    smallest estimated change of the loss when it is removed) goes first."""
    del minimize_cfg
    return -masks_lib.flatten(net.spec, taylor_terms(net))


def _cosine_variant(how: str, absolute: bool) -> Callable:
    def score(net: Net, minimize_cfg):
        del minimize_cfg
        return masks_lib.flatten(
            net.spec, cosine_stats(net.spec, net.params, net.masks, how, absolute)
        )

    score.__name__ = f"cosine_{'abs_' if absolute else ''}{how}_score"
    score.__doc__ = (
        f"CosMax's family with the aggregation fixed: the {how} of each unit's "
        f"{'|cos|' if absolute else 'cos'} to the other live units of its layer."
    )
    return score


# One strategy per cosine aggregation, signed and absolute ("cos:max", "|cos|:mean",
# ...), so that one sweep compares them side by side; "cosine" stays the one that
# follows `minimize.aggregation` / `minimize.absolute`. Same stopping rule as CosMax.
for _absolute in (False, True):
    for _how in AGGREGATIONS:
        register(f"{'|cos|' if _absolute else 'cos'}:{_how}", max_failures=2)(
            _cosine_variant(_how, _absolute)
        )
del _absolute, _how


# ----------------------------------------------------------- thesis 003's variants
#
# Thesis 003 (2.8.1) runs its activation-count and outlier rules in three more ways;
# none changes a score, so they are options of training, not strategies:
#
# * "Distorted" pruning: the gradients pointed mostly one way, a sign of a feature
#   representation shared by all hidden units, so 003 adds random values to the
#   weights ("currently rand(weights.shape)*(1-var(weights))", values between -1 and
#   1), which "allowed some weights to become unused". `distort` is that step; the
#   option `minimize.distort` (its scale, 0 = off) is meant for a round's trial
#   before retraining, so that a rolled-back round also undoes its distortion. The
#   round (`minimize`) does not call it yet, so `validate` refuses a non-zero value.
# * "Regularized" pruning: an L1 term on the loss (`optim.l1`, see `optim.add_l1`).
# * Both together ("regularized and distorted").


def distort(params, key: jax.Array, scale: float):
    """Thesis 003's distortion: every kernel w (rank >= 2) gets
    ``scale * U(-1, 1) * (1 - var(w))`` added, elementwise; biases and batch-norm
    parameters are kept. `scale` 0 returns `params` unchanged."""
    if scale == 0:
        return params
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, w in zip(keys, leaves):
        if w.ndim >= 2:
            noise = jax.random.uniform(k, w.shape, w.dtype, minval=-1.0, maxval=1.0)
            w = w + scale * noise * (1.0 - jnp.var(w))
        out.append(w)
    return jax.tree.unflatten(tree, out)


# ---------------------------------------------------------------- depth and growth (issue 17)
#
# Which whole layer a round bypasses (`minimize.depth`, see `minimize`): 'off' (the
# thesis: widths only), 'cost' (the layer whose bypass raises the task's loss on the
# scoring batch least) or 'fewest' (the layer with the fewest live units; ties: the
# earlier layer). Only bypassable layers (`spec.Layer.bypass`) are ever scored.
LAYER_RULES = ("off", "cost", "fewest")


def make_layer_scorer(model, loss: Callable, rules=LAYER_RULES) -> Callable:
    """`scores(rule, params, state, masks, x, y) -> (layers,)` over `model.spec.layers`:
    higher bypasses first; -inf for a layer that cannot be bypassed. `rule` is a traced
    position in `LAYER_RULES`; `rules` (static) are the ones a job uses, so 'cost'
    costs its forward passes only where it is used."""
    layers = model.spec.layers

    def scores(rule, params, state, masks, x, y):
        fewest = jnp.stack([-jnp.sum(jnp.asarray(masks[layer.name])) for layer in layers])
        out = fewest.astype(jnp.float32)
        if "cost" in rules:
            costs = []
            for layer in layers:
                if not layer.bypass:
                    costs.append(jnp.zeros((), jnp.float32))
                    continue
                bypassed = {**masks, layer.name: jnp.zeros_like(masks[layer.name])}
                costs.append(-loss(params, state, bypassed, x, y).astype(jnp.float32))
            out = jnp.where(rule == LAYER_RULES.index("cost"), jnp.stack(costs), out)
        bypass = jnp.asarray([layer.bypass for layer in layers])
        return jnp.where(bypass, out, -jnp.inf)

    return scores
