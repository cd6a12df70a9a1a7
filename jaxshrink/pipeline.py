"""The whole job of one run: `run(config, workdir)`.

Called by `python -m jaxshrink.main` and importable from a notebook. Stages:

1. data: load (or build and cache) the train and eval splits;
2. train: `config.train.initial_steps` Adam steps with progress lines, evaluating and
   checkpointing every `config.train.eval_every` steps;
3. minimize (if `config.minimize.enabled`): rounds of select / disable / retrain /
   accept-or-roll-back (`minimize`), checkpointed after every round;
4. report: the compact exported network, `results.json`, pictures and a summary.

Every stage resumes from its newest checkpoint, so rerunning the same command on the
same workdir continues where an interrupted run stopped.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxshrink import (
    batching,
    checkpoint,
    data,
    export,
    files,
    minimize,
    models,
    train,
    visualize,
)
from jaxshrink import (
    config as config_lib,
)
from jaxshrink import masks as masks_lib
from jaxshrink import workdir as workdir_lib


class Logger:
    """Progress lines with the elapsed time, flushed at once."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {msg}", flush=True)


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


class Job:
    """The configured pieces shared by the stages of a run or a sweep.

    Every state it handles is a batch (leading run axis); a single run is the batch
    of one. The batch is padded to a multiple of the device count for sharding;
    padded runs take no steps and are dropped from every result.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, log: Logger):
        self.config, self.workdir, self.log = config, workdir, log
        self.curve: dict | None = None  # training curves, set by `train_stage`
        self.dataset = data.load_dataset(config.data, config.task)
        self.device_list = batching.devices(int(config.batch.devices))
        self.devices = len(self.device_list)
        self.train_data = batching.replicate(
            train.make_train_data(self.dataset.train), self.device_list
        )
        self.eval_data = batching.replicate(
            train.make_eval_data(self.dataset.eval, int(config.train.eval_batch_size)),
            self.device_list,
        )
        shapes = jax.eval_shape(lambda: models.init(jax.random.PRNGKey(0), config))
        self.trainer = train.make_trainer(config, shapes)
        self.engine = batching.make_engine(self.trainer, config.batch)
        self.train_fn = batching.distribute(
            self.engine.train, (True, False, True), self.device_list
        )
        self.eval_fn = batching.distribute(
            self.engine.evaluate, (True, True, False), self.device_list
        )
        self.round_fn = batching.distribute(
            minimize.make_round(config, self.engine), (True, True, False, False), self.device_list
        )

    def place(self, tree):
        """Pads a batch to a multiple of the device count and shards it over them."""
        return batching.place(batching.pad_runs(tree, self.devices), self.device_list)

    def describe(self) -> str:
        e = self.engine
        group = "all runs" if e.group_size == 0 else f"groups of {e.group_size}"
        return (
            f"device: {jax.devices()[0].device_kind} x{self.devices} ({jax.default_backend()}), "
            f"runs batched by {e.method} ({group}, grad {e.grad}), "
            f"precision {self.config.model.precision}"
        )

    def evaluate(self, states: train.TrainState) -> dict[str, np.ndarray]:
        """Per-run eval scores of a batch of runs (numpy, one entry per run)."""
        n = batching.num_runs(states)
        padded = self.place(states)
        scores = self.eval_fn(padded.params, padded.masks, self.eval_data)
        return {k: np.asarray(v)[:n] for k, v in scores.items()}

    def checkpointer(self, stage: str) -> checkpoint.RunCheckpointer:
        return checkpoint.RunCheckpointer(os.path.join(self.workdir, "checkpoints", stage))

    def picture(self, name: str, run: train.TrainState, title: str) -> str:
        """Input / target / output triptychs of one (unbatched) run."""
        n = min(int(self.config.output.num_examples), self.dataset.eval.images.shape[0])
        x = self.dataset.eval.images[:n]
        out = np.asarray(self.trainer.predict(run.params, run.masks, x))
        path = os.path.join(self.workdir, name)
        return visualize.save_triptychs(path, x, self.dataset.eval.targets[:n], out, title)


def _spread(values: np.ndarray, fmt: str = ".4f") -> str:
    if values.size == 1:
        return format(float(values[0]), fmt)
    return (
        f"{format(float(values.mean()), fmt)} (min {format(float(values.min()), fmt)}, "
        f"max {format(float(values.max()), fmt)})"
    )


def train_stage(job: Job, seeds) -> train.TrainState:
    """Initial training of one run per seed, batched; resumes from the newest checkpoint.

    Run i starts from `PRNGKey(seeds[i])`, exactly as a single run with that seed.
    """
    config, log = job.config, job.log
    n = len(seeds)
    states = job.place(train.create_train_states(seeds, config, job.trainer.tx))
    live = job.place(jnp.arange(batching.num_runs(states)) < n)
    ckpt = job.checkpointer("train")
    # Training curves, per run: what `visualize.save_training_curve` draws.
    curve: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "eval_f1": []}
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
            f"train: {total} steps, batch {config.train.batch_size}, loss {config.train.loss}{runs}"
        )
    while step < total:
        chunk = min(log_every - step % log_every, total - step)
        t0 = time.perf_counter()
        states, loss = job.train_fn(states, job.train_data, jnp.where(live, chunk, 0))
        loss = np.asarray(loss)[:n]  # waits for the chunk
        rate = chunk * n / (time.perf_counter() - t0)
        step = int(states.step[0])
        unit = "steps/s" if n == 1 else "seed-steps/s"
        line = f"train: step {step:6d}/{total}  loss {_spread(loss, '.5f')}  {rate:7.1f} {unit}"
        curve["step"].append(step)
        curve["loss"].append(loss.tolist())
        if step % eval_every == 0 or step == total:
            f1 = job.evaluate(states)["f1"][:n]
            line += f"  eval F1 {_spread(f1)}"
            curve["eval_step"].append(step)
            curve["eval_f1"].append(f1.tolist())
            ckpt.save(step, states, {"stage": "train", "step": step, "curve": curve})
        log(line)
    ckpt.close()
    job.curve = curve
    return batching.take(states, slice(0, n))


def init_minimize(trained: train.TrainState, baselines, seeds) -> minimize.MinState:
    """The minimizer's batched start: run i continues `trained[i]` with the key of `seeds[i]`."""
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(int(s)), 1) for s in seeds])
    return jax.vmap(minimize.init_state)(trained, jnp.asarray(baselines, jnp.float32), keys)


def round_entries(history: list[dict], run: int, masks: dict) -> list[dict]:
    """The rounds in which run `run` tested a unit, as readable records."""
    out = []
    for rec in history:
        candidate = int(rec["candidate"][run])
        if candidate < 0:
            continue
        out.append(
            {
                "candidate": minimize.candidate_name(candidate, masks),
                "candidate_index": candidate,
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
    if describe and not bool(np.all(ms.done)):
        log(describe)
    while not bool(np.all(np.asarray(ms.done))):
        t0 = time.perf_counter()
        masks_before = batching.take(ms.run.masks, 0)
        ms, record = job.round_fn(ms, specs, job.train_data, job.eval_data)
        rec = {k: np.asarray(v)[:n].tolist() for k, v in record._asdict().items()}
        history.append(rec)
        calls += 1
        seconds = time.perf_counter() - t0
        if n == 1:
            entries = round_entries([rec], 0, masks_before)
            if entries:
                e = entries[0]
                verdict = "kept" if e["accepted"] else "rolled back"
                if not e["finite"]:
                    verdict = "rolled back (NaN/Inf)"
                alive = int(masks_lib.count_alive(batching.take(ms.run.masks, 0)))
                log(
                    f"minimize: round {calls:2d}  disable {e['candidate']:9s} "
                    f"F1 {e['score']:.4f}  ratio {e['ratio']:.3f}  {verdict:11s} "
                    f"alive {alive}  ({seconds:.1f}s)"
                )
        else:
            active = int(np.sum(rec["active"]))
            kept = int(np.sum(rec["accepted"]))
            still = int(np.sum(~np.asarray(ms.done)[:n]))
            log(
                f"minimize: round {calls:2d}  {active:4d} runs tested a unit, {kept:4d} kept, "
                f"{still:4d}/{n} still going  ({seconds:.1f}s)"
            )
        ckpt.save(calls, ms, {"stage": "minimize", "history": history})
    ckpt.close()
    return batching.take(ms, slice(0, n)), history


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


def draw_run(job: Job, trained, final, rounds: list[dict], baseline: float) -> list[str]:
    """The thesis's pictures (3.2) of one run, written into the workdir; returns names."""
    config, out = job.config, job.workdir
    image = job.dataset.eval.images[0]
    names = []

    def path(name):
        names.append(name)
        return os.path.join(out, name)

    visualize.save_masks(path("masks_trained.png"), trained.params, trained.masks, "trained")
    visualize.save_masks(path("masks_minimized.png"), final.params, final.masks, "minimized")
    # "After a few steps": the same run's first steps, recomputed (same seed, batches).
    few = min(100, int(config.train.initial_steps))
    start = job.place(train.create_train_states([int(config.seed)], config, job.trainer.tx))
    early, _ = job.train_fn(start, job.train_data, job.place(jnp.full((1,), few, jnp.int32)))
    early = batching.take(early, 0)
    visualize.save_filter_outputs_pair(
        path("filter_outputs.png"),
        (early.params, early.masks),
        (final.params, final.masks),
        image,
        titles=(f"after {few} steps", f"after training and minimization ({int(final.step)})"),
    )
    if job.curve and job.curve["step"]:
        c = job.curve
        visualize.save_training_curve(
            path("training_curve.png"),
            c["step"],
            [v[0] for v in c["loss"]],
            c["eval_step"],
            [v[0] for v in c["eval_f1"]],
            title=f"initial training ({config.train.loss} loss)",
        )
    if config.minimize.enabled:
        visualize.save_timeline(
            path("timeline.png"), rounds, baseline, threshold=float(config.minimize.threshold)
        )
    visualize.save_kept_matrix(
        path("kept.png"), masks_lib.to_rows(final.masks), masks_lib.layer_names(final.masks)
    )
    return names


def _ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1%}"


def _summary(results: dict) -> str:
    t, f, e = results["trained"], results["final"], results["export"]
    kept = "\n".join(
        f"    {name}: " + " ".join("#" if k else "." for k in row)
        for name, row in zip(results["layers"], results["kept"])
    )
    accepted = sum(r["accepted"] for r in results["rounds"])
    return (
        f"\n== jaxshrink {results['config']['task']} ==\n"
        f"  trained {t['steps']} steps: eval F1 {t['eval']['f1']:.4f}\n"
        f"  minimized ({results['config']['minimize']['strategy']}, threshold "
        f"{results['config']['minimize']['threshold']}): {len(results['rounds'])} rounds, "
        f"{accepted} kept, F1 {f['eval']['f1']:.4f} "
        f"({_ratio_text(results['reference_ratio'])} of trained)\n"
        f"  filters removed: {results['removed_units']}; kept (# = kept):\n{kept}\n"
        f"  parameters {e['full_params']} -> {e['params']}, "
        f"FLOPs/image {results['flops']['before']:,} -> {results['flops']['after']:,}\n"
        f"  inference {e['full_inference_seconds'] * 1e3:.2f} ms -> "
        f"{e['inference_seconds'] * 1e3:.2f} ms per batch of {e['timing_batch'][0]}\n"
        f"  workdir: {results['workdir']}\n"
    )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the configured job in `workdir` and returns its results.

    Args:
      config: a config from `configs/` (see `jaxshrink.config.base_config`).
      workdir: folder for checkpoints, `results.json`, pictures and the exported
        network; created if missing. Rerunning with the same workdir resumes.

    Returns:
      The results dictionary that is also written to `workdir/results.json`.

    Raises:
      errors.ConfigError: a config field is invalid, or differs from the one the
        workdir was started with.
      errors.WorkdirBusy: another live process holds the workdir.
    """
    config_lib.validate(config)
    with workdir_lib.claim(workdir, config) as workdir:
        return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    log = Logger()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    log(f"jaxshrink {config.task}: workdir {workdir}")
    job = Job(config, workdir, log)
    log(job.describe())

    seeds = [int(config.seed)]
    trained_batch = train_stage(job, seeds)
    trained = batching.take(trained_batch, 0)
    trained_scores = _floats(batching.take(job.evaluate(trained_batch), 0))
    if not all_finite(trained.params) or not np.isfinite(trained_scores["f1"]):
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
        f"trained {int(trained.step)} steps: eval F1 {trained_scores['f1']:.4f}",
    )

    if config.minimize.enabled:
        mcfg = config.minimize
        spec = batching.stack([minimize.run_spec(mcfg)])
        ms = init_minimize(trained_batch, [trained_scores["f1"]], seeds)
        describe = (
            f"minimize: strategy {mcfg.strategy}, mode {mcfg.mode}, threshold "
            f"{mcfg.threshold}, {mcfg.round_steps} steps per round, baseline F1 "
            f"{trained_scores['f1']:.4f}"
        )
        ms, history = minimize_stage(job, ms, spec, describe)
        final_batch = ms.run
        rounds = round_entries(history, 0, trained.masks)
    else:
        rounds, final_batch = [], trained_batch
    final = batching.take(final_batch, 0)
    final_scores = _floats(batching.take(job.evaluate(final_batch), 0))
    job.picture("samples_minimized.png", final, f"minimized: eval F1 {final_scores['f1']:.4f}")
    pictures = draw_run(job, trained, final, rounds, trained_scores["f1"])

    crop = int(config.data.crop_size)
    k, c_in = int(config.model.kernel_size), int(config.model.in_channels)
    report = export.export(
        os.path.join(workdir, "export"),
        config.model,
        final.params,
        final.masks,
        job.trainer.apply,
        jnp.asarray(job.dataset.eval.images[: int(config.train.batch_size)]),
    )
    full_masks = masks_lib.full(final.params, True)
    results = {
        "status": "ok",
        "config": config.to_dict(),
        "workdir": workdir,
        "device": jax.devices()[0].device_kind,
        "trained": {"steps": int(trained.step), "eval": trained_scores},
        "final": {"steps": int(final.step), "eval": final_scores},
        # None when the trained network scores 0 (e.g. targets without any edge).
        "reference_ratio": (
            final_scores["f1"] / trained_scores["f1"] if trained_scores["f1"] > 0 else None
        ),
        "layers": masks_lib.layer_names(final.masks),
        "kept": masks_lib.to_rows(final.masks),
        "removed_units": int(
            masks_lib.count_alive(full_masks) - masks_lib.count_alive(final.masks)
        ),
        "params": {"before": report["full_params"], "after": report["params"]},
        "flops": {
            "before": export.count_flops(full_masks, k, crop, crop, c_in),
            "after": export.count_flops(final.masks, k, crop, crop, c_in),
            "unit": f"forward FLOPs per {crop}x{crop} image",
        },
        "rounds": rounds,
        "export": report,
    }
    results["pictures"] = pictures
    results["curve"] = job.curve and {
        "step": job.curve["step"],
        "loss": [v[0] for v in job.curve["loss"]],
        "eval_step": job.curve["eval_step"],
        "eval_f1": [v[0] for v in job.curve["eval_f1"]],
    }
    files.write_json(os.path.join(workdir, "results.json"), results)
    print(_summary(results), flush=True)
    return results
