"""The whole job of one run: `run(config, workdir)`.

Called by `python -m jaxshrink.main` and importable from a notebook. Stages:

1. data: load (or build and cache) the train and eval splits;
2. train: `config.train.initial_steps` Adam steps with progress lines, evaluating and
   checkpointing every `config.train.eval_every` steps;
3. minimize (if `config.minimize.enabled`): rounds of select / disable / retrain /
   accept-or-roll-back (`minimize`), checkpointed after every round;
4. report (`report`): the compact exported network, `results.json`, pictures and a
   summary.

Nothing here knows the network or the task: `Job` builds them from the registries
(`models`, `tasks`, `data`), and every stage reads `job.model.spec` and the task's
score.

Every stage resumes from its newest checkpoint, so rerunning the same command on the
same workdir continues where an interrupted run stopped.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxshrink import (
    augment,
    batching,
    checkpoint,
    data,
    deploy,
    distributed,
    errors,
    export,
    files,
    minimize,
    models,
    report,
    tasks,
    train,
    validate,
)
from jaxshrink import masks as masks_lib
from jaxshrink import spec as spec_lib
from jaxshrink import workdir as workdir_lib


class Logger:
    """Progress lines with the elapsed time, flushed at once."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if distributed.is_primary():  # one job, one log: the other processes stay quiet
            print(f"[{time.perf_counter() - self.start:7.1f}s] {msg}", flush=True)


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


class Job:
    """The configured pieces shared by the stages of a run or a sweep.

    Every state it handles is a batch (leading run axis); a single run is the batch
    of one. The batch is padded to a multiple of the device count for sharding;
    padded runs take no steps and are dropped from every result.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        log: Logger,
        model: models.Model | None = None,
    ):
        self.config, self.workdir, self.log = config, workdir, log
        self.curve: dict | None = None  # training curves, set by `train_stage`
        self.dataset = data.load_dataset(config.data)
        # What the model sees: the examples after augmentation (e.g. a 24x24 crop).
        example_shape = augment.output_shape_of(
            config.get("augment"), self.dataset.train.inputs.shape[1:]
        )
        self.model = model or models.get_model(config.model, example_shape)
        if tuple(self.model.spec.input_shape) != tuple(example_shape):
            raise errors.ConfigError(
                f"model: built for inputs of shape {self.model.spec.input_shape}, but the data's "
                f"examples are {tuple(example_shape)}; allowed: a model for the data's shape"
            )
        self.task = tasks.get_task(config.task, config.train.loss or None)
        self.device_list = batching.devices(int(config.batch.devices))
        self.devices = len(self.device_list)
        self.train_data = batching.replicate(
            train.make_train_data(self.dataset.train), self.device_list
        )
        self.eval_data = batching.replicate(
            train.make_eval_data(self.dataset.eval, int(config.train.eval_batch_size)),
            self.device_list,
        )
        self.trainer = train.make_trainer(config, self.model, self.task)
        self.engine = batching.make_engine(self.trainer, config.batch)
        # On a CPU 'auto' steps depend on whether a step holds XLA convolutions.
        xla_convs = not batching.needs_convolution_count(config.batch, self.devices) or bool(
            batching.xla_convolutions(self.trainer, self.train_data)
        )
        self.eval_fn = batching.distribute(
            self.engine.evaluate, (True, True, True, False), self.device_list
        )
        # Where the training steps loop: in the compiled program, or from the host
        # (`batching.resolve_steps`: a single CPU device whose step holds XLA
        # convolutions, where that is faster).
        self.steps = batching.resolve_steps(config.batch, self.devices, xla_convs=xla_convs)
        if self.steps == "host":
            self.train_fn = batching.host_train(self.trainer)
            self.round_fn = minimize.make_host_round(config, self.engine, self.train_fn)
        else:
            self.train_fn = batching.distribute(
                self.engine.train, (True, False, True), self.device_list
            )
            self.round_fn = batching.distribute(
                minimize.make_round(config, self.engine),
                (True, True, False, False),
                self.device_list,
            )

    def place(self, tree):
        """Pads a batch to a multiple of the device count and shards it over them."""
        return batching.place(batching.pad_runs(tree, self.devices), self.device_list)

    def describe(self) -> str:
        e = self.engine
        group = "all runs" if e.group_size == 0 else f"groups of {e.group_size}"
        return (
            f"device: {jax.devices()[0].device_kind} x{self.devices} ({jax.default_backend()}"
            f"{distributed.describe()}), "
            f"runs batched by {e.method} ({group}, grad {e.grad}), steps looped "
            f"{'from the host' if self.steps == 'host' else 'in the compiled program'}, "
            f"precision {self.config.model.get('precision', 'as the model sets it')}"
        )

    def evaluate(self, states: train.TrainState) -> dict[str, np.ndarray]:
        """Per-run eval scores of a batch of runs (numpy, one entry per run)."""
        n = batching.num_runs(states)
        padded = self.place(states)
        scores = self.eval_fn(padded.params, padded.model_state, padded.masks, self.eval_data)
        return {k: v[:n] for k, v in batching.to_host(scores).items()}

    def checkpointer(self, stage: str) -> checkpoint.RunCheckpointer:
        return checkpoint.RunCheckpointer(
            os.path.join(self.workdir, "checkpoints", stage),
            sharding=batching.run_sharding(self.device_list),
        )

    @property
    def score_label(self) -> str:
        return self.task.score_label

    def predict(self, run: train.TrainState, x) -> np.ndarray:
        """One (unbatched) run's outputs for `x`, in eval-sized batches."""
        size = int(self.config.train.eval_batch_size)
        parts = [
            np.asarray(
                self.trainer.predict(run.params, run.model_state, run.masks, x[i : i + size])
            )
            for i in range(0, len(x), size)
        ]
        return np.concatenate(parts)

    def picture(self, name: str, run: train.TrainState, title: str) -> str:
        """The task's picture of a few eval examples and one (unbatched) run's outputs."""
        n = min(int(self.config.output.num_examples), len(self.dataset.eval))
        x = data.decode(self.dataset.eval.inputs[:n])  # the splits may be stored compact
        out = self.predict(run, x)
        path = os.path.join(self.workdir, name)
        return self.task.picture(path, x, data.decode(self.dataset.eval.targets[:n]), out, title)


def spread(values: np.ndarray, fmt: str = ".4f") -> str:
    """'0.5' for one run; 'mean (min, max)' for several."""
    if values.size == 1:
        return format(float(values[0]), fmt)
    return (
        f"{format(float(values.mean()), fmt)} (min {format(float(values.min()), fmt)}, "
        f"max {format(float(values.max()), fmt)})"
    )


def eta(remaining: int, done: int, seconds: float) -> str:
    """The time left for `remaining` steps at the pace of `done` in `seconds` (evals
    and checkpoints included): '45s', '9m 05s', '2h 07m'."""
    left = round(remaining * seconds / max(done, 1))
    if left < 60:
        return f"{left}s"
    if left < 3600:
        return f"{left // 60}m {left % 60:02d}s"
    return f"{left // 3600}h {left % 3600 // 60:02d}m"


def _steps(live, count: int) -> jax.Array:
    """Per run: `count` steps where `live`, else 0. Always int32 of a fixed (not weak)
    type, so that every call of the training program, the pictures' included, has one
    signature and compiles once."""
    return jnp.where(live, jnp.int32(count), jnp.int32(0))


def train_stage(job: Job, seeds, masks=None) -> train.TrainState:
    """Initial training of one run per seed, batched; resumes from the newest checkpoint.

    Run i starts from `PRNGKey(seeds[i])`, exactly as a single run with that seed, with
    the units of `masks` alive (one tree, or a batch with a leading run axis; None:
    `train.start_widths`).
    """
    config, log = job.config, job.log
    n = len(seeds)
    if masks is None:
        masks = masks_lib.start_masks(job.model.spec, tuple(config.train.start_widths))
    states = job.place(train.create_train_states(seeds, job.model, job.trainer.tx, masks))
    live = job.place(jnp.arange(batching.num_runs(states)) < n)
    ckpt = job.checkpointer("train")
    # Training curves, per run: what `visualize.save_training_curve` draws.
    curve: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "eval_score": []}
    latest, states, meta = ckpt.restore_latest(states)
    if latest is not None:
        states = job.place(states)
        curve = meta.get("curve", curve)
        log(f"train: resumed at step {latest}")
    total = int(config.train.initial_steps)
    log_every = max(1, int(config.train.log_every))
    eval_every = max(1, int(config.train.eval_every))
    step = int(states.step[0])
    runs = "" if n == 1 else f", {n} seeds at once"
    if step < total:
        log(
            f"train: {total} steps, batch {config.train.batch_size}, "
            f"loss {config.train.loss or job.task.losses[0]}{runs}"
        )
    since = None  # (step, time) after this process's first chunk, which compiles
    while step < total:
        chunk = min(log_every - step % log_every, total - step)
        t0 = time.perf_counter()
        states, loss = job.train_fn(states, job.train_data, _steps(live, chunk))
        loss = batching.to_host(loss)[:n]  # waits for the chunk
        rate = chunk * n / (time.perf_counter() - t0)
        step = int(batching.to_host(states.step)[0])
        unit = "steps/s" if n == 1 else "seed-steps/s"
        line = f"train: step {step:6d}/{total}  loss {spread(loss, '.5f')}  {rate:7.1f} {unit}"
        curve["step"].append(step)
        curve["loss"].append(loss.tolist())
        if step % eval_every == 0 or step == total:
            score = job.evaluate(states)["score"][:n]
            line += f"  eval {job.score_label} {spread(score, '.4g')}"
            curve["eval_step"].append(step)
            curve["eval_score"].append(score.tolist())
            ckpt.save(step, states, {"stage": "train", "step": step, "curve": curve})
        if since is not None and step < total:
            line += f"  eta {eta(total - step, step - since[0], time.perf_counter() - since[1])}"
        log(line)
        if since is None:
            since = (step, time.perf_counter())
    ckpt.close()
    job.curve = curve
    return batching.local(states, n)


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
    ckpt.close()
    return batching.local(states, n), np.stack(scores, axis=1)


def init_minimize(model_spec, trained: train.TrainState, baselines, seeds) -> minimize.MinState:
    """The minimizer's batched start: run i continues `trained[i]` with the key of `seeds[i]`."""
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(int(s)), 1) for s in seeds])
    start = functools.partial(minimize.init_state, model_spec)
    return jax.vmap(start)(trained, jnp.asarray(baselines, jnp.float32), keys)


def round_entries(history: list[dict], run: int, model_spec) -> list[dict]:
    """The rounds in which run `run` tested a change, as readable records.

    ``kind`` is 'unit' (a unit or group disabled), 'layer' (a layer bypassed:
    ``candidate`` is the layer's name) or 'grow' (a unit enabled).
    """
    out = []
    for rec in history:
        candidate = int(rec["candidate"][run])
        if candidate < 0:
            continue
        kind = minimize.KINDS[int(rec["kind"][run])] if "kind" in rec else "unit"
        name = masks_lib.candidate_name(model_spec, candidate)
        out.append(
            {
                "kind": kind,
                "candidate": name.split("/")[0] if kind == "layer" else name,
                "candidate_index": candidate,
                "count": int(rec["count"][run]) if "count" in rec else 1,
                "score": float(rec["score"][run]),
                "reference": float(rec["reference"][run]),
                "ratio": float(rec["ratio"][run]),
                "accepted": bool(rec["accepted"][run]),
                "train_loss": float(rec["train_loss"][run]),
                "finite": bool(rec["finite"][run]),
            }
        )
    return out


def minimize_stage(job: Job, ms: minimize.MinState, specs: minimize.RunSpec, describe=None):
    """Rounds until every run's stopping rule has fired; returns (MinState, history).

    `history` has one entry per round call: each `RoundRecord` field as a list over
    runs. The batched state is checkpointed after every round and resumed from.
    """
    log = job.log
    n = batching.num_runs(ms)
    ms = batching.pad_runs(ms, job.devices)
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
    while not bool(np.all(done)):
        t0 = time.perf_counter()
        ms, record = job.round_fn(ms, specs, job.train_data, job.eval_data)
        record, done = batching.to_host((record._asdict(), ms.done))
        rec = {k: v[:n].tolist() for k, v in record.items()}
        history.append(rec)
        calls += 1
        seconds = time.perf_counter() - t0
        if n == 1:
            entries = round_entries([rec], 0, job.model.spec)
            if entries:
                e = entries[0]
                verdict = "kept" if e["accepted"] else "rolled back"
                if not e["finite"]:
                    verdict = "rolled back (NaN/Inf)"
                kept = batching.take(batching.to_host(ms.run.masks), 0)
                alive = int(masks_lib.count_alive(kept))
                if job.model.spec.bypassable:
                    alive = f"{alive} in {spec_lib.depth(job.model.spec, kept)} layers"
                what = e["candidate"]
                if e["kind"] == "unit" and e["count"] > 1:
                    what += f" +{e['count'] - 1}"
                verb = {"unit": "disable", "layer": "bypass ", "grow": "enable "}[e["kind"]]
                log(
                    f"minimize: round {calls:2d}  {verb} {what:9s} "
                    f"{job.score_label} {e['score']:.4g}  ratio {e['ratio']:.3f}  {verdict:11s} "
                    f"alive {alive}  ({seconds:.1f}s)"
                )
        else:
            active = int(np.sum(rec["active"]))
            kept = int(np.sum(rec["accepted"]))
            still = int(np.sum(~done[:n]))
            log(
                f"minimize: round {calls:2d}  {active:4d} runs tested a change, {kept:4d} kept, "
                f"{still:4d}/{n} still going  ({seconds:.1f}s)"
            )
        ckpt.save(calls, ms, {"stage": "minimize", "history": history})
    ckpt.close()
    return batching.local(ms, n), history


def all_finite(tree) -> bool:
    """True if no leaf of `tree` holds a NaN or an Inf."""
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


def _failed(config, workdir: str, log: Logger, reason: str, trained: dict) -> dict:
    """Records a run that cannot go on: `results.json` says why; no score is reported."""
    results = {
        "status": f"failed: {reason}",
        "config": config.to_dict(),
        "workdir": workdir,
        "device": jax.devices()[0].device_kind,
        "trained": trained,
    }
    files.write_json(os.path.join(workdir, "results.json"), results)
    log(f"FAILED: {reason}")
    return results


def run(config: ml_collections.ConfigDict, workdir: str, model: models.Model | None = None) -> dict:
    """Runs the configured job in `workdir` and returns its results.

    Args:
      config: a config from `configs/` (see `jaxshrink.config.base_config`).
      workdir: folder for checkpoints, `results.json`, pictures and the exported
        network; created if missing. Rerunning with the same workdir resumes.
      model: your own network (`models.Model.create`) instead of `config.model`'s.

    Returns:
      The results dictionary that is also written to `workdir/results.json`.

    Raises:
      errors.ConfigError: a config field is invalid, or differs from the one the
        workdir was started with.
      errors.WorkdirBusy: another live process holds the workdir.
    """
    validate.validate(config, model)
    validate.check_workdir(workdir)
    with workdir_lib.claim(workdir, config) as workdir:
        return _run(config, workdir, model)


def _run(config: ml_collections.ConfigDict, workdir: str, model=None) -> dict:
    log = Logger()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    log(f"jaxshrink {config.task} ({config.data.dataset}): workdir {workdir}")
    job = Job(config, workdir, log, model)
    log(job.describe())
    label = job.score_label

    seeds = [int(config.seed)]
    trained_batch = train_stage(job, seeds)
    trained = batching.take(trained_batch, 0)
    trained_scores = _floats(batching.take(job.evaluate(trained_batch), 0))
    if not all_finite(trained.params) or not np.isfinite(trained_scores["score"]):
        return _failed(
            config,
            workdir,
            log,
            "the trained network is not finite (NaN/Inf in its weights or eval score); "
            "lower optim.learning_rate or check the data",
            {"steps": int(trained.step), "eval": trained_scores},
        )
    job.picture(
        "samples_trained.png",
        trained,
        f"trained {int(trained.step)} steps: eval {label} {trained_scores['score']:.4g}",
    )

    if config.minimize.enabled:
        mcfg = config.minimize
        spec = batching.stack([minimize.run_spec(mcfg)])
        ms = init_minimize(job.model.spec, trained_batch, [trained_scores["score"]], seeds)
        describe = (
            f"minimize: strategy {mcfg.strategy}, mode {mcfg.mode}, threshold "
            f"{mcfg.threshold}, {mcfg.round_steps} steps per round, baseline {label} "
            f"{trained_scores['score']:.4g}"
        )
        ms, history = minimize_stage(job, ms, spec, describe)
        final_batch = ms.run
        rounds = round_entries(history, 0, job.model.spec)
    else:
        rounds, final_batch = [], trained_batch
    final = batching.take(final_batch, 0)
    final_scores = _floats(batching.take(job.evaluate(final_batch), 0))
    job.picture(
        "samples_minimized.png", final, f"minimized: eval {label} {final_scores['score']:.4g}"
    )
    exported = export.export(
        os.path.join(workdir, "export"),
        job.model,
        final.params,
        final.masks,
        job.trainer.eval_transform(
            jnp.asarray(data.decode(job.dataset.eval.inputs[: int(config.train.batch_size)]))
        ),
        state=final.model_state,
    )
    pictures = report.draw_run(job, trained, final, rounds, trained_scores["score"])
    results = report.results(job, trained, final, trained_scores, final_scores, rounds, exported)
    results["pictures"] = pictures
    if config.get("deploy") is not None and config.deploy.enabled:
        files.write_json(os.path.join(workdir, "results.json"), results)  # kept if deploy fails
        results["deploy"] = deploy.run(job, trained, final, os.path.join(workdir, "deploy"), log)
    files.write_json(os.path.join(workdir, "results.json"), results)
    print(report.summary(results), flush=True)
    return results
