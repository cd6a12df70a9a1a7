"""jaxshrink: self-scaling neural networks in JAX.

A network shrinks itself during training: disable one unit, reset Adam, retrain
briefly, and roll back whenever the evaluation score falls below a threshold of the
last accepted one (Jenei, "Implementing a self-scaling convolutional neural network",
2018). The edge-detecting FCN of that thesis, the MNIST classifiers and the summation
network of two related theses, and any Flax model a researcher brings go through the
same machinery.

The public surface, importable from here:

* `run(config, workdir, model=None)`: one run (train, shrink, export, report), or the
  experiment whose section the config has (sweep, correlation, relearn, depth);
* `Model`: the interface of any maskable Flax module (`Model.create(...)`);
* `common_config(task, dataset)`: every config field at its default;
* `load_config("configs/sobel.py:quick")`: a config file with presets applied.

The subpackages, in the order imports flow (nothing imports upward; a test reads the
imports and fails on an upward one):

* `core`: the model-level pieces: spec, masks, models, tasks, metrics, optim, train,
  augment, convs, and the errors and atomic files every layer uses;
* `data`: the datasets (edge images, digits, CIFAR-10, summation pairs) and their cache;
* `search`: how a batch of runs shrinks: strategies, the minimization round and its
  rules, batching over runs and devices;
* `deploy`: the physically smaller network and its cheaper forms (export, quantize,
  low rank, ONNX, latency); `stats`: paired tests and Figure 4.2's statistics;
  `report`: pictures, plots and the summaries of results;
* `config`: the schema of every field, presets and the config loader, validation and
  resolution;
* `runtime`: the job, its stages, progress lines, checkpoints, the workdir,
  several processes and the compile cache;
* `experiments`: one module per experiment (single run, sweep, correlation, relearn,
  depth) in one registry, run by one runner;
* `main`: the command line; `bench`: speed measurements.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

__version__ = "0.1.0"

__all__ = ["Model", "common_config", "load_config", "run", "__version__"]

# The public names and where they live (imported on first use: `import jaxshrink` is cheap).
_PUBLIC = {
    "Model": ("jaxshrink.core.models.base", "Model"),
    "run": ("jaxshrink.experiments.runner", "run"),
    "common_config": ("jaxshrink.config.schema", "common_config"),
    "load_config": ("jaxshrink.config.loader", "load"),
}

# Modules of the flat layout before the subpackages, and where their contents went.
MOVED = {
    "analysis": "jaxshrink.stats",
    "augment": "jaxshrink.core.augment",
    "batching": "jaxshrink.search.batching",
    "checkpoint": "jaxshrink.runtime.checkpoint",
    "compile_cache": "jaxshrink.runtime.compile_cache",
    "convs": "jaxshrink.core.convs",
    "correlation": "jaxshrink.experiments.correlation",
    "depth": "jaxshrink.experiments.depth",
    "distributed": "jaxshrink.runtime.distributed",
    "errors": "jaxshrink.core.errors",
    "export": "jaxshrink.deploy.export",
    "files": "jaxshrink.core.files",
    "gradcheck": "jaxshrink.bench.gradcheck",
    "latency": "jaxshrink.deploy.latency",
    "lowrank": "jaxshrink.deploy.lowrank",
    "masks": "jaxshrink.core.masks",
    "metrics": "jaxshrink.core.metrics",
    "minimize": "jaxshrink.search.minimize",
    "models": "jaxshrink.core.models (or jaxshrink.Model)",
    "onnx_export": "jaxshrink.deploy.onnx",
    "optim": "jaxshrink.core.optim",
    "pipeline": "jaxshrink.run (jaxshrink.experiments.runner) and jaxshrink.runtime",
    "plots": "jaxshrink.report.plots",
    "quantize": "jaxshrink.deploy.quantize",
    "relearn": "jaxshrink.experiments.relearn",
    "spec": "jaxshrink.core.spec",
    "stepbench": "jaxshrink.bench.stepbench",
    "strategies": "jaxshrink.search.strategies",
    "sweep": "jaxshrink.experiments.sweep",
    "tasks": "jaxshrink.core.tasks",
    "train": "jaxshrink.core.train",
    "validate": "jaxshrink.config.validate",
    "visualize": "jaxshrink.report.pictures",
    "workdir": "jaxshrink.runtime.workdir",
}


def _moved_message(name: str) -> str:
    return f"jaxshrink.{name} has moved: use {MOVED[name]}"


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Answers an import of a moved module with a one-line message naming the new one."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        name = rest.split(".")[0]
        if head == "jaxshrink" and name in MOVED and rest == name:
            raise ModuleNotFoundError(_moved_message(name))
        return None


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedFinder())


def __getattr__(name: str):
    if name in _PUBLIC:
        module, attr = _PUBLIC[name]
        return getattr(importlib.import_module(module), attr)
    if name in MOVED:
        raise AttributeError(_moved_message(name))
    raise AttributeError(f"module 'jaxshrink' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
