"""The self-scaling loop (thesis 2.4.2): select, alter, reset Adam, retrain, accept or roll back.

`make_round(config, trainer)` returns `round_fn(mstate, threshold, data, eval_data)`,
one whole round as a pure function of the minimizer's state. It is jit-compiled
once; masks, thresholds, keys and flags are traced data, so rounds never recompile,
and the same function runs a batch of runs under `vmap`.

Rollback is in memory: the previous state is kept and the new one is merged with
``jnp.where(accept, new, old)`` leaf by leaf, so a rejected round leaves params,
masks and Adam state bit for bit as they were. Every round starts by resetting Adam
(the thesis resets "every time the network is altered or reverted"). Orbax only
persists `MinState` between rounds so a run can resume.

Modes (2.4.1), for the unit under test:

* ``disabled_frozen`` (the thesis's choice): its output is gated to zero and its
  weights get no update; everything else trains and may compensate.
* ``disabled``: gated to zero, not frozen. With an exact gate its gradient is zero
  anyway, so this trains like ``disabled_frozen``; it differs only in what the
  optimizer sees (kept for completeness and for re-enabling experiments).
* ``disabled_others_frozen``: gated to zero and every other unit frozen, so the
  round measures the loss of the unit without any compensation.

`reinit=True` redraws the tested unit's weights from the initial distribution (the
thesis's "reinitializing" switch) instead of keeping them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from jaxshrink import masks as masks_lib
from jaxshrink import models, optim, strategies, train

MODES = ("disabled", "disabled_frozen", "disabled_others_frozen")
REFERENCES = ("last_accepted", "baseline")


@flax.struct.dataclass
class MinState:
    """Everything a minimization run carries from round to round."""

    run: train.TrainState  # the last accepted network (masks = units kept)
    reference: jax.Array  # the score a new round is compared with ("old")
    baseline: jax.Array  # the score before minimization
    failed: jax.Array  # (candidates,) bool: failed since the last acceptance
    visited: jax.Array  # (candidates,) bool: ever proposed
    failures: jax.Array  # int32: consecutive failed rounds
    rounds: jax.Array  # int32: rounds run
    done: jax.Array  # bool: the stopping rule has fired
    key: jax.Array  # PRNG key for selection and re-initialisation


class RoundRecord(NamedTuple):
    """What one round did (arrays, so a batch of runs returns a batch of records)."""

    active: jax.Array  # bool: the run was still going at the start of the round
    candidate: jax.Array  # int32 flat candidate index (-1: none eligible)
    score: jax.Array  # eval F1 after retraining
    reference: jax.Array  # the score it was compared with
    ratio: jax.Array  # score / reference
    accepted: jax.Array  # bool
    train_loss: jax.Array  # mean training loss of the round


def init_state(run: train.TrainState, baseline: jax.Array, key: jax.Array) -> MinState:
    """The minimizer's state right after the initial training."""
    size = strategies.flatten(run.masks, run.masks).shape[0]
    return MinState(
        run=run,
        reference=jnp.asarray(baseline, jnp.float32),
        baseline=jnp.asarray(baseline, jnp.float32),
        failed=jnp.zeros((size,), bool),
        visited=jnp.zeros((size,), bool),
        failures=jnp.zeros((), jnp.int32),
        rounds=jnp.zeros((), jnp.int32),
        done=jnp.zeros((), bool),
        key=key,
    )


def _tree_where(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def _alter(run: train.TrainState, onehot: dict, mode: str, reinit_params):
    """The run with the chosen unit gated off and the mode's freeze flags set."""
    masks = jax.tree.map(lambda m, h: m & ~h, run.masks, onehot)
    dead = jax.tree.map(jnp.logical_not, masks)
    if mode == "disabled":
        frozen = run.frozen
    elif mode == "disabled_frozen":
        frozen = dead  # every disabled unit stays exactly as it was
    elif mode == "disabled_others_frozen":
        frozen = jax.tree.map(jnp.logical_not, onehot)
    else:
        raise ValueError(f"minimize.mode: unknown {mode!r}; allowed: {MODES}")
    params = run.params
    if reinit_params is not None:
        params = jax.tree.map(jnp.where, masks_lib.expand(onehot, params), reinit_params, params)
    return run.replace(params=params, masks=masks, frozen=frozen)


def make_round(config: ml_collections.ConfigDict, trainer: train.Trainer) -> Callable:
    """Builds the pure round function of `config.minimize` (jit it, or vmap then jit)."""
    mcfg = config.minimize
    strategy = strategies.get_strategy(mcfg)
    if mcfg.mode not in MODES:
        raise ValueError(f"minimize.mode: unknown {mcfg.mode!r}; allowed: {MODES}")
    if mcfg.reference not in REFERENCES:
        raise ValueError(f"minimize.reference: unknown {mcfg.reference!r}; allowed: {REFERENCES}")
    round_steps = int(mcfg.round_steps)

    def round_fn(ms: MinState, threshold, data: train.TrainData, eval_data: train.EvalData):
        key, score_key, init_key = jax.random.split(ms.key, 3)
        run = ms.run
        scores = strategy.score(run.params, run.masks, score_key)
        allowed = strategies.eligible(run.masks) & ~ms.failed
        if strategy.visit_once:
            allowed = allowed & ~ms.visited
        choice, has_candidate = strategies.select(scores, allowed)
        active = ~ms.done & has_candidate
        onehot_flat = jax.nn.one_hot(choice, scores.shape[0], dtype=bool) & active
        onehot = strategies.unflatten(onehot_flat, run.masks, fill=False)

        reinit = models.init(init_key, config) if mcfg.reinit else None
        trial = _alter(run, onehot, mcfg.mode, reinit)
        trial = trial.replace(opt_state=optim.reset(trainer.tx, trial.params))
        trial, loss = trainer.train_steps(trial, data, jnp.where(active, round_steps, 0))
        score = trainer.evaluate(trial.params, trial.masks, eval_data)["f1"]
        ratio = score / ms.reference
        accept = active & jnp.isfinite(score) & (ratio >= threshold)

        # Rolled back: params, masks, frozen flags and Adam state exactly as they were
        # (the next round resets Adam first, which is the thesis's reset after a
        # reversion). Only the step counter moves on, so the next round draws new
        # batches.
        kept = _tree_where(accept, trial, run.replace(step=trial.step))
        new_reference = score if mcfg.reference == "last_accepted" else ms.baseline
        failures = jnp.where(accept, 0, ms.failures + active.astype(jnp.int32))
        rounds = ms.rounds + active.astype(jnp.int32)
        failed = jnp.where(accept, jnp.zeros_like(ms.failed), ms.failed | onehot_flat)
        visited = ms.visited | onehot_flat
        stop = ~has_candidate
        if strategy.max_rounds:
            stop |= rounds >= strategy.max_rounds
        if strategy.max_failures:
            stop |= failures >= strategy.max_failures
        # Nothing changes for a run that had already stopped.
        new = MinState(
            run=kept,
            reference=jnp.where(accept, new_reference, ms.reference),
            baseline=ms.baseline,
            failed=failed,
            visited=visited,
            failures=failures,
            rounds=rounds,
            done=ms.done | stop,
            key=key,
        )
        new = _tree_where(ms.done, ms, new)
        record = RoundRecord(
            active=active,
            candidate=jnp.where(active, choice, -1).astype(jnp.int32),
            score=score,
            reference=ms.reference,
            ratio=ratio,
            accepted=accept,
            train_loss=loss,
        )
        return new, record

    return round_fn


def candidate_name(index: int, masks: dict) -> str:
    """'conv_1/3' for a flat candidate index."""
    for name, units in strategies.candidate_layout(masks):
        if index < units:
            return f"{name}/{index}"
        index -= units
    raise IndexError(index)
