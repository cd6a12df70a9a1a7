"""The stages every experiment is made of, over a batch of runs (a single run is the
batch of one): initial training, retraining variants, and minimization rounds.

Every stage resumes from its newest checkpoint, so rerunning the same command on the
same workdir continues where an interrupted run stopped.
"""

from __future__ import annotations

import functools
import os
import time

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink.core import files, train
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.results import RoundEntry
from jaxshrink.runtime import distributed, preemption
from jaxshrink.runtime.job import Job
from jaxshrink.runtime.progress import eta, spread
from jaxshrink.search import batching, minimize


def _steps(live, count: int) -> jax.Array:
    """Per run: `count` steps where `live`, else 0. Always int32 of a fixed (not weak)
    type, so that every call of the training program, the pictures' included, has one
    signature and compiles once."""
    return jnp.where(live, jnp.int32(count), jnp.int32(0))


def train_stage(job: Job, seeds, masks=None, keep_step: int | None = None) -> train.TrainState:
    """Initial training of one run per seed, batched; resumes from the newest checkpoint.

    Run i starts from `PRNGKey(seeds[i])`, exactly as a single run with that seed, with
    the units of `masks` alive (one tree, or a batch with a leading run axis; None:
    `train.start_widths`). With `keep_step`, run 0 at that step is kept as `job.early`
    (`_keep_early`), e.g. for the picture of the network after a few steps.
    """
    config, log = job.config, job.log
    n = len(seeds)
    ckpt = job.checkpointer("train")
    states, curve = _start_training(job, seeds, masks, ckpt)
    live = job.place(jnp.arange(batching.num_runs(states)) < n)
    total = int(config.train.initial_steps)
    log_every = max(1, int(config.train.log_every))
    eval_every = max(1, int(config.train.eval_every))
    step = int(states.step[0])
    job.early = None
    if keep_step is not None and step >= keep_step:
        _resume_early(job, states, keep_step)
    runs = "" if n == 1 else f", {n} seeds at once"
    if step < total:
        log(
            f"train: {total} steps, batch {config.train.batch_size}, "
            f"loss {config.train.loss or job.task.losses[0]}{runs}"
        )
    since = None  # (step, time) after this process's first chunk, which compiles
    saved = step  # the step of the newest checkpoint (or the start)
    while step < total:
        chunk = min(log_every - step % log_every, total - step)
        t0 = time.perf_counter()
        if keep_step is not None and step < keep_step < step + chunk:
            _keep_on_the_side(job, states, live, keep_step - step)
        states, loss = job.train_fn(states, job.train_data, _steps(live, chunk))
        loss = batching.to_host(loss)[:n]  # waits for the chunk
        rate = chunk * n / (time.perf_counter() - t0)
        step = int(batching.to_host(states.step)[0])
        if step == keep_step:
            _keep_early(job, states)
        unit = "steps/s" if n == 1 else "seed-steps/s"
        line = f"train: step {step:6d}/{total}  loss {spread(loss, '.5f')}  {rate:7.1f} {unit}"
        curve["step"].append(step)
        curve["loss"].append(loss.tolist())
        if step % eval_every == 0 or step == total:
            score = job.evaluate(states)["score"][:n]
            line += f"  eval {job.score_label} {spread(score, '.4g')}"
            curve["eval_step"].append(step)
            curve["eval_score"].append(score.tolist())
            if job.train_probe is not None:  # a classifier's training accuracy too
                train_score = job.evaluate(states, "train")["score"][:n]
                curve.setdefault("train_score", []).append(train_score.tolist())
            ckpt.save(step, states, {"stage": "train", "step": step, "curve": curve})
            saved = step
        if since is not None and step < total:
            line += f"  eta {eta(total - step, step - since[0], time.perf_counter() - since[1])}"
        log(line)
        if since is None:
            since = (step, time.perf_counter())
        save = functools.partial(
            ckpt.save, step, states, {"stage": "train", "step": step, "curve": curve}
        )
        preemption.stop(f"at training step {step} of {total}", None if saved == step else save)
    ckpt.close()
    job.curve = curve
    return batching.local(states, n)


def _start_training(job: Job, seeds, masks, ckpt) -> tuple[train.TrainState, dict]:
    """The runs' placed states, fresh or from the newest checkpoint, and their training
    curves so far (per run: what `pictures.save_training_curve` draws)."""
    if masks is None:
        masks = masks_lib.start_masks(job.model.spec, tuple(job.config.train.start_widths))
    states = job.place(train.create_train_states(seeds, job.model, job.trainer.tx, masks))
    curve: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "eval_score": []}
    latest, states, meta = ckpt.restore_latest(states)
    if latest is not None:
        states = job.place(states)
        curve = meta.get("curve", curve)
        job.log(f"train: resumed at step {latest}")
    return states, curve


def _early_path(job: Job) -> str:
    return os.path.join(job.workdir, "checkpoints", "train_early.msgpack")


def _keep_early(job: Job, states: train.TrainState) -> None:
    """Keeps run 0 of `states` as `job.early` (host arrays) and saves it in the workdir
    (process 0; written atomically), so that a run resumed past that step has it too."""
    fields = (states.step, states.params, states.model_state, states.masks)
    step, params, model_state, masks = batching.take(
        batching.to_host(batching.take(fields, slice(0, 1))), 0
    )
    job.early = train.Snapshot(int(step), params, model_state, masks)
    if distributed.is_primary():
        with files.atomic_path(_early_path(job)) as tmp, open(tmp, "wb") as f:
            f.write(flax.serialization.msgpack_serialize(job.early._asdict()))


def _keep_on_the_side(job: Job, states: train.TrainState, live, steps: int) -> None:
    """`_keep_early` of `states` trained `steps` more steps, on the side: the chunk that
    passes the step to keep is not split there, since it logs the mean loss its compiled
    loop sums, and two loops would round that sum differently. The steps are the same
    steps (a pure function of seed and step), so the snapshot is the run's own."""
    side, _ = job.train_fn(states, job.train_data, _steps(live, steps))
    _keep_early(job, side)


def _resume_early(job: Job, states: train.TrainState, keep_step: int) -> None:
    """`job.early` of a run that starts at or past `keep_step`: kept now, or as a previous
    process saved it; None if it is not there (a workdir trained before snapshots were
    kept: its pictures go without)."""
    if int(states.step[0]) == keep_step:
        _keep_early(job, states)
        return
    try:
        with open(_early_path(job), "rb") as f:
            kept = flax.serialization.msgpack_restore(f.read())
    except FileNotFoundError:
        return
    if int(kept["step"]) == keep_step:
        job.early = train.Snapshot(
            int(kept["step"]), kept["params"], kept["model_state"], kept["masks"]
        )


def train_variants(job: Job, states: train.TrainState, steps: int, every: int, stage: str):
    """Trains a batch of variant runs `steps` more steps, evaluating every `every`.

    The experiments that alter trained networks and retrain them (`correlation`,
    `relearn`) share this loop: progress lines, and a checkpoint after every chunk so an
    interrupted experiment resumes. Returns ``(states, scores)`` with `scores` the
    per-run eval scores before training and after every chunk, shape (runs, evals).
    """
    log = job.log
    n = batching.num_runs(states)
    states = job.place(states)
    live = job.place(jnp.arange(batching.num_runs(states)) < n)
    ckpt = job.checkpointer(stage)
    scores = [job.evaluate(states)["score"][:n]]
    done = 0
    latest, states, meta = ckpt.restore_latest(states)
    if latest is not None:
        states, done = job.place(states), latest
        scores = [np.asarray(s) for s in meta["scores"]]
        log(f"{stage}: resumed at step {done} of {steps}")
    while done < steps:
        chunk = min(every, steps - done)
        t0 = time.perf_counter()
        states, _ = job.train_fn(states, job.train_data, _steps(live, chunk))
        scores.append(job.evaluate(states)["score"][:n])
        done += chunk
        rate = chunk * n / (time.perf_counter() - t0)
        log(
            f"{stage}: step {done:6d}/{steps}  eval {job.score_label} "
            f"{spread(scores[-1])}  {rate:7.1f} seed-steps/s"
        )
        ckpt.save(done, states, {"stage": stage, "scores": [s.tolist() for s in scores]})
        preemption.stop(f"in {stage} at step {done} of {steps}")
    ckpt.close()
    return batching.local(states, n), np.stack(scores, axis=1)


def init_minimize(model_spec, trained: train.TrainState, baselines, seeds) -> minimize.MinState:
    """The minimizer's batched start: run i continues `trained[i]` with the key of `seeds[i]`."""
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(int(s)), 1) for s in seeds])
    start = functools.partial(minimize.init_state, model_spec)
    return jax.vmap(start)(trained, jnp.asarray(baselines, jnp.float32), keys)


def round_entries(history: list[dict], run: int, model_spec) -> list[RoundEntry]:
    """The rounds in which run `run` tested a change, as `RoundEntry` records (one
    per round; `history` as `minimize_stage` returns it)."""
    out = []
    for rec in history:
        candidate = int(rec["candidate"][run])
        if candidate < 0:
            continue
        kind = minimize.KINDS[int(rec["kind"][run])] if "kind" in rec else "unit"
        name = masks_lib.candidate_name(model_spec, candidate)
        out.append(
            RoundEntry(
                kind=kind,
                candidate=name.split("/")[0] if kind == "layer" else name,
                candidate_index=candidate,
                count=int(rec["count"][run]) if "count" in rec else 1,
                score=float(rec["score"][run]),
                reference=float(rec["reference"][run]),
                ratio=float(rec["ratio"][run]),
                accepted=bool(rec["accepted"][run]),
                train_loss=float(rec["train_loss"][run]),
                finite=bool(rec["finite"][run]),
            )
        )
    return out


def _round_line(job: Job, calls: int, e: RoundEntry, masks, seconds: float) -> str:
    """The progress line of a single run's round: the change, its score and verdict."""
    verdict = "kept" if e.accepted else "rolled back"
    if not e.finite:
        verdict = "rolled back (NaN/Inf)"
    alive = int(masks_lib.count_alive(masks))
    if job.model.spec.bypassable:
        parts = "groups" if job.model.spec.grouped else "layers"
        alive = f"{alive} in {spec_lib.depth(job.model.spec, masks)} {parts}"
    what = e.candidate
    if e.kind == "unit" and e.count > 1:
        what += f" +{e.count - 1}"
    verb = {"unit": "disable", "layer": "bypass ", "grow": "enable "}[e.kind]
    if e.kind == "layer" and job.model.spec.grouped:
        verb = "remove "
    return (
        f"minimize: round {calls:2d}  {verb} {what:9s} "
        f"{job.score_label} {e.score:.4g}  ratio {e.ratio:.3f}  {verdict:11s} "
        f"alive {alive}  ({seconds:.1f}s)"
    )


def minimize_stage(job: Job, ms: minimize.MinState, specs: minimize.RunSpec, describe=None):
    """Rounds until every run's stopping rule has fired; returns (MinState, history).

    `history` has one entry per round call: each `RoundRecord` field as a list over
    runs. The batched state is checkpointed after every round and resumed from.
    """
    log = job.log
    n = batching.num_runs(ms)
    ms = job.pad(ms)
    ms = job.place(ms.replace(done=ms.done.at[n:].set(True)))  # padding never trains
    specs = job.place(specs)
    ckpt = job.checkpointer("minimize")
    history: list[dict] = []
    latest, ms, meta = ckpt.restore_latest(ms)
    calls = latest or 0  # checkpoint number = round calls made
    if latest is not None:
        ms = job.place(ms)
        history = list(meta["history"])
        log(f"minimize: resumed after round {latest}")
    done = batching.to_host(ms.done)
    if describe and not bool(np.all(done)):
        log(describe)
    partial = job.checkpointer("minimize_round", max_to_keep=1)
    while not bool(np.all(done)):
        t0 = time.perf_counter()
        ms, record = _round(job, ms, specs, calls + 1, partial, history)
        record, done = batching.to_host((record._asdict(), ms.done))
        rec = {k: v[:n].tolist() for k, v in record.items()}
        history.append(rec)
        calls += 1
        seconds = time.perf_counter() - t0
        if n == 1:
            for e in round_entries([rec], 0, job.model.spec):
                kept = batching.take(batching.to_host(ms.run.masks), 0)
                log(_round_line(job, calls, e, kept, seconds))
        else:
            active = int(np.sum(rec["active"]))
            kept = int(np.sum(rec["accepted"]))
            still = int(np.sum(~done[:n]))
            log(
                f"minimize: round {calls:2d}  {active:4d} runs tested a change, {kept:4d} kept, "
                f"{still:4d}/{n} still going  ({seconds:.1f}s)"
            )
        ckpt.save(calls, ms, {"stage": "minimize", "history": history})
        if not bool(np.all(done)):
            preemption.stop(f"after minimization round {calls}")
    ckpt.close()
    partial.close()
    return batching.local(ms, n), history


def _round(job: Job, ms, specs, number: int, partial, history):
    """Round `number` of every run: propose, retrain in chunks of `train.log_every`
    steps, decide. The end of every chunk but the last is a safe point: asked to stop
    there, the round's trials are saved in `partial` (checkpoint `number`) and the
    resumed round continues from them."""
    trial, prop = job.begin_fn(ms, specs, job.train_data, job.eval_data)
    total, chunk = job.round_steps, max(1, int(job.config.train.log_every))
    done, sums = 0, trial.step * 0.0  # steps taken; per run, the chunks' loss sums
    if partial.latest_step() == number:  # this round was stopped part way
        got, saved, meta = partial.restore_latest({"trial": trial, "loss": sums})
        if got == number:  # (a damaged one is moved aside: the round starts over)
            trial, sums, done = job.place(saved["trial"]), job.place(saved["loss"]), meta["steps"]
            job.log(f"minimize: round {number} resumed after {done} of {total} steps")
    mean = sums
    while done < total:
        steps = min(chunk, total - done)
        trial, mean = job.train_fn(trial, job.train_data, _steps(prop.active, steps))
        sums = sums + mean * steps
        done += steps
        if done < total:
            meta = {"stage": "minimize_round", "steps": done, "history": history}
            save = functools.partial(partial.save, number, {"trial": trial, "loss": sums}, meta)
            preemption.stop(f"in minimization round {number}, after {done} of {total} steps", save)
    # One chunk: its mean loss as the program gave it; several: their sum over the steps.
    loss = mean if total <= chunk else sums / total
    return job.finish_fn(ms, specs, prop, trial, loss, job.eval_data)


def all_finite(tree) -> bool:
    """True if no leaf of `tree` holds a NaN or an Inf."""
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))
