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

import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxshrink import checkpoint, data, export, minimize, models, train, visualize
from jaxshrink import masks as masks_lib


class Logger:
    """Progress lines with the elapsed time, flushed at once."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {msg}", flush=True)


def write_json(path: str, obj) -> None:
    """Writes JSON atomically: a reader sees the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


class Job:
    """The configured pieces shared by the stages of one run."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, log: Logger):
        self.config, self.workdir, self.log = config, workdir, log
        self.dataset = data.load_dataset(config.data, config.task)
        self.train_data = train.make_train_data(self.dataset.train)
        self.eval_data = train.make_eval_data(self.dataset.eval, int(config.train.eval_batch_size))
        self.rng = jax.random.PRNGKey(int(config.seed))
        self.trainer = train.make_trainer(
            config, jax.eval_shape(lambda: models.init(self.rng, config))
        )

    def evaluate(self, run: train.TrainState) -> dict[str, float]:
        return _floats(self.trainer.evaluate(run.params, run.masks, self.eval_data))

    def checkpointer(self, stage: str) -> checkpoint.RunCheckpointer:
        return checkpoint.RunCheckpointer(os.path.join(self.workdir, "checkpoints", stage))

    def picture(self, name: str, run: train.TrainState, title: str) -> str:
        n = min(int(self.config.output.num_examples), self.dataset.eval.images.shape[0])
        x = self.dataset.eval.images[:n]
        out = np.asarray(self.trainer.predict(run.params, run.masks, x))
        path = os.path.join(self.workdir, name)
        return visualize.save_triptychs(path, x, self.dataset.eval.targets[:n], out, title)


def train_stage(job: Job) -> train.TrainState:
    """Initial training, resumed from the newest 'train' checkpoint if any."""
    config, log = job.config, job.log
    state = train.create_train_state(job.rng, config, job.trainer.tx)
    ckpt = job.checkpointer("train")
    latest = ckpt.latest_step()
    if latest is not None:
        state, _ = ckpt.restore(latest, state)
        log(f"train: resumed at step {latest}")
    total = int(config.train.initial_steps)
    log_every = max(1, int(config.train.log_every))
    eval_every = max(1, int(config.train.eval_every))
    step = int(state.step)
    if step < total:
        log(f"train: {total} steps, batch {config.train.batch_size}, loss {config.train.loss}")
    while step < total:
        chunk = min(log_every - step % log_every, total - step)
        t0 = time.perf_counter()
        state, loss = job.trainer.train_steps(state, job.train_data, chunk)
        loss = float(loss)  # waits for the chunk
        rate = chunk / (time.perf_counter() - t0)
        step = int(state.step)
        line = f"train: step {step:6d}/{total}  loss {loss:.5f}  {rate:7.1f} steps/s"
        if step % eval_every == 0 or step == total:
            scores = job.evaluate(state)
            line += f"  eval F1 {scores['f1']:.4f}"
            ckpt.save(step, state, {"stage": "train", "step": step, "eval": scores})
        log(line)
    ckpt.close()
    return state


def _record_dict(record, masks) -> dict:
    candidate = int(record.candidate)
    return {
        "candidate": minimize.candidate_name(candidate, masks) if candidate >= 0 else None,
        "candidate_index": candidate,
        "score": float(record.score),
        "reference": float(record.reference),
        "ratio": float(record.ratio),
        "accepted": bool(record.accepted),
        "train_loss": float(record.train_loss),
    }


def minimize_stage(job: Job, trained: train.TrainState, baseline: float):
    """Rounds until the strategy's stopping rule fires; returns (MinState, round log)."""
    config, log = job.config, job.log
    mcfg = config.minimize
    ms = minimize.init_state(trained, jnp.float32(baseline), jax.random.fold_in(job.rng, 1))
    ckpt = job.checkpointer("minimize")
    rounds: list[dict] = []
    latest = ckpt.latest_step()
    calls = latest or 0  # checkpoint number = round calls made, active or not
    if latest is not None:
        ms, meta = ckpt.restore(latest, ms)
        rounds = list(meta["rounds"])
        log(f"minimize: resumed after round {latest}")
    round_fn = jax.jit(minimize.make_round(config, job.trainer))
    threshold = jnp.float32(mcfg.threshold)
    if not bool(ms.done):
        log(
            f"minimize: strategy {mcfg.strategy}, mode {mcfg.mode}, threshold {mcfg.threshold}, "
            f"{mcfg.round_steps} steps per round, baseline F1 {baseline:.4f}"
        )
    while not bool(ms.done):
        t0 = time.perf_counter()
        masks_before = ms.run.masks
        ms, record = round_fn(ms, threshold, job.train_data, job.eval_data)
        entry = _record_dict(record, masks_before)
        if entry["candidate"] is not None:
            rounds.append(entry)
            verdict = "kept" if entry["accepted"] else "rolled back"
            log(
                f"minimize: round {len(rounds):2d}  disable {entry['candidate']:9s} "
                f"F1 {entry['score']:.4f}  ratio {entry['ratio']:.3f}  {verdict:11s} "
                f"alive {int(masks_lib.count_alive(ms.run.masks))}  "
                f"({time.perf_counter() - t0:.1f}s)"
            )
        calls += 1
        ckpt.save(calls, ms, {"stage": "minimize", "rounds": rounds})
    ckpt.close()
    return ms, rounds


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
        f"({f['eval']['f1'] / t['eval']['f1']:.1%} of trained)\n"
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
    """
    log = Logger()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    log(f"jaxshrink {config.task}: workdir {workdir}")
    log(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    job = Job(config, workdir, log)

    trained = train_stage(job)
    trained_scores = job.evaluate(trained)
    job.picture(
        "samples_trained.png",
        trained,
        f"trained {int(trained.step)} steps: eval F1 {trained_scores['f1']:.4f}",
    )

    if config.minimize.enabled:
        ms, rounds = minimize_stage(job, trained, trained_scores["f1"])
        final = ms.run
    else:
        rounds, final = [], trained
    final_scores = job.evaluate(final)
    job.picture("samples_minimized.png", final, f"minimized: eval F1 {final_scores['f1']:.4f}")

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
        "config": config.to_dict(),
        "workdir": workdir,
        "device": jax.devices()[0].device_kind,
        "trained": {"steps": int(trained.step), "eval": trained_scores},
        "final": {"steps": int(final.step), "eval": final_scores},
        "reference_ratio": final_scores["f1"] / trained_scores["f1"],
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
    write_json(os.path.join(workdir, "results.json"), results)
    print(_summary(results), flush=True)
    return results
