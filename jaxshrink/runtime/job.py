"""The configured pieces shared by the stages of a run or a sweep: data, model, task,
trainer, the batching engine and the compiled programs.

Nothing here knows the network or the task: `Job` builds them from the registries
(`models`, `tasks`, `data`), and every stage reads `job.model.spec` and the task's score.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from jaxshrink import data
from jaxshrink.core import augment, errors, models, tasks, train
from jaxshrink.report import pictures
from jaxshrink.runtime import checkpoint, determinism, distributed
from jaxshrink.runtime.progress import Logger
from jaxshrink.search import batching, minimize
from jaxshrink.search import plan as search_plan


class Job:
    """The configured pieces shared by the stages of a run or a sweep.

    Every state it handles is a batch (leading run axis); a single run is the batch
    of one. The batch is padded to fill whole groups of runs on every device
    (`batching.by_group`); padded runs take no steps and are dropped from every result.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        log: Logger,
        model: models.Model | None = None,
        *,
        plan: search_plan.Plan | None = None,
    ):
        # `plan`: what the runs' rounds may do (None: the single run of config.minimize).
        self.config, self.workdir, self.log = config, workdir, log
        self.plan = plan or search_plan.Plan.single(config.minimize)
        self.curve: dict | None = None  # training curves, set by `train_stage`
        self.early: train.Snapshot | None = None  # run 0 at `train_stage`'s `keep_step`
        self.dataset = data.load_dataset(config.data)
        # What the model sees: the examples after augmentation (e.g. a 24x24 crop).
        example_shape = augment.output_shape_of(config.augment, self.dataset.train.inputs.shape[1:])
        self.model = model or models.get_model(config.model, example_shape)
        if tuple(self.model.spec.input_shape) != tuple(example_shape):
            raise errors.ConfigError(
                f"model: built for inputs of shape {self.model.spec.input_shape}, but the data's "
                f"examples are {tuple(example_shape)}; allowed: a model for the data's shape"
            )
        self.task = tasks.get_task(config.task, config.train.loss or None)
        self.device_list = batching.devices(int(config.batch.devices))
        self.devices = len(self.device_list)
        # Whether the runs' numbers are the same bits on every layout (`results.json`).
        self.reproducibility = determinism.record(config.batch)
        self.train_data = batching.replicate(
            train.make_train_data(self.dataset.train), self.device_list
        )
        self.eval_data = batching.replicate(
            train.make_eval_data(self.dataset.eval, int(config.train.eval_batch_size)),
            self.device_list,
        )
        # The test set, when a validation split is what `eval_data` holds: scored only
        # before and after the minimization (`evaluate(..., test=True)`).
        size = int(config.train.eval_batch_size)
        self.test_data = self.dataset.test and batching.replicate(
            train.make_eval_data(self.dataset.test, size), self.device_list
        )
        # A classifier's training accuracy beside the eval one during training (thesis
        # 004's curves, 3.6.2): scored on the first training examples, as many as
        # the eval split holds.
        probe = None
        if config.task == "classification":
            n = min(len(self.dataset.train), len(self.dataset.eval))
            probe = data.Split(
                self.dataset.train.inputs[:n],
                self.dataset.train.targets[:n],
                self.dataset.train.sources[:n],
            )
        self.train_probe = probe and batching.replicate(
            train.make_eval_data(probe, size), self.device_list
        )
        self.trainer = train.make_trainer(config, self.model, self.task)
        self.engine = batching.make_engine(self.trainer, config.batch)
        # On a CPU 'auto' steps depend on whether a step holds XLA convolutions.
        xla_convs = not batching.needs_convolution_count(config.batch) or bool(
            batching.xla_convolutions(self.trainer, self.train_data)
        )
        # Every group of runs is one call of the same program on its own device
        # (`batching.by_group`), so a run's result does not depend on the layout.
        group = self.engine.group_size
        self.multiple = batching.layout_multiple(group, self.devices)
        self.eval_fn = batching.by_group(
            jax.jit(self.engine.evaluate), (True, True, True, False), group, self.device_list
        )
        # Where the training steps loop: in the compiled program, or from the host
        # (`batching.resolve_steps`: a CPU whose step holds XLA convolutions, where
        # that is faster).
        self.steps = batching.resolve_steps(config.batch, xla_convs=xla_convs)
        if self.steps == "host":
            train_fn = batching.host_train(self.trainer)
        else:
            train_fn = jax.jit(self.engine.train)
        self.train_fn = batching.by_group(train_fn, (True, False, True), group, self.device_list)
        # A round: `begin` proposes and alters, `train_fn` retrains the trials in chunks
        # (the safe points of a stop request), `finish` evaluates and decides.
        parts = minimize.make_parts(config, self.engine, self.plan)
        self.round_steps = parts.round_steps
        self.begin_fn = batching.by_group(
            jax.jit(parts.begin), (True, True, False, False), group, self.device_list
        )
        self.finish_fn = batching.by_group(
            jax.jit(parts.finish), (True, True, True, True, True, False), group, self.device_list
        )

    def pad(self, tree):
        """A batch padded to fill whole groups on every device (copies of its last run)."""
        return batching.pad_runs(tree, self.multiple)

    def place(self, tree):
        """Pads a batch to fill whole groups on every device and shards it over them."""
        return batching.place(self.pad(tree), self.device_list)

    def describe(self) -> str:
        e = self.engine
        group = "all runs" if e.group_size == 0 else f"groups of {e.group_size}"
        return (
            f"device: {jax.devices()[0].device_kind} x{self.devices} ({jax.default_backend()}"
            f"{distributed.describe()}), "
            f"runs batched by {e.method} ({group}, grad {e.grad}), steps looped "
            f"{'from the host' if self.steps == 'host' else 'in the compiled program'}, "
            f"precision {self.config.model.precision}{self._pool()}"
        )

    def _pool(self) -> str:
        """', XLA CPU pool of N threads' on a CPU (what its rounding depends on)."""
        if self.reproducibility["backend"] != "cpu":
            return ""
        return f", XLA CPU pool of {self.reproducibility['cpu_threads']} threads"

    def evaluate(self, states: train.TrainState, split: str = "eval") -> dict[str, np.ndarray]:
        """Per-run scores of a batch of runs (numpy, one entry per run) on the eval
        split, the test set ('test', only with a validation split, `dataset.test`) or
        the training examples a classifier's curve reads ('train', `train_probe`)."""
        n = batching.num_runs(states)
        padded = self.place(states)
        split_data = {"eval": self.eval_data, "test": self.test_data, "train": self.train_probe}
        chosen = split_data[split]
        if chosen is None:
            raise ValueError(f"Job.evaluate: no {split!r} split in this job")
        scores = self.eval_fn(padded.params, padded.model_state, padded.masks, chosen)
        return {k: v[:n] for k, v in batching.to_host(scores).items()}

    def checkpointer(self, stage: str, max_to_keep: int = 3) -> checkpoint.RunCheckpointer:
        return checkpoint.RunCheckpointer(
            os.path.join(self.workdir, "checkpoints", stage),
            max_to_keep=max_to_keep,
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
        draw = pictures.task_picture(self.task.picture)
        return draw(path, x, data.decode(self.dataset.eval.targets[:n]), out, title)
