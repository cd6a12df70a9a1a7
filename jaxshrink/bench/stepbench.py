"""Training-step time and memory of any configured network, per vmapped group of runs.

    python -m jaxshrink.bench.stepbench --config=configs/cifar10.py:b [--runs=1,2,4,8]
        [--steps=3] [--repeats=3] [--out=stepbench.json]

For each group size k in `--runs` it builds the config's network and optimizer,
stacks k fresh runs and compiles one vmapped group of `Engine.train` (batch method
'vmap', `group_size` k) on synthetic data of the config's input shape (no dataset
is read: CIFAR-10 need not be present). It reports:

* the seconds of one training step of the whole group and per run, the median of
  `--steps`-step calls after a warm-up (compile time apart);
* XLA's memory analysis of the compiled group: the arguments (params, Adam state,
  batch-norm statistics, masks of the k runs, and the train split), the temporaries
  (activations, gradients) and the outputs; ``peak_gib`` is their sum minus what
  the outputs alias from the arguments, the figure to compare with a device's
  memory when choosing `batch.group_size`.

It prints a table and writes JSON with the device, date and command line.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jaxshrink import data
from jaxshrink.core import augment, files, train
from jaxshrink.core import spec as spec_lib
from jaxshrink.search import batching

OUT_DEFAULT = "stepbench.json"


def define_flags() -> dict:
    """The command line's flags, defined only when the module runs as a program, so that
    importing it (`jaxshrink.bench.speed` does) adds no flag beside another program's."""
    defined = {
        "config": config_flags.DEFINE_config_file(
            "config", None, "Config file, e.g. configs/cifar10.py:b."
        ),
        "runs": flags.DEFINE_string("runs", "1,2,4", "Group sizes (runs per vmapped group)."),
        "steps": flags.DEFINE_integer("steps", 3, "Training steps per timed call."),
        "repeats": flags.DEFINE_integer("repeats", 3, "Timed calls per size (0: memory only)."),
        "out": flags.DEFINE_string("out", OUT_DEFAULT, "Where the JSON report goes."),
    }
    flags.mark_flags_as_required(["config"])
    return defined


GIB = 1024**3


def synthetic_data(trainer: train.Trainer, input_shape, n: int, seed: int = 0) -> train.TrainData:
    """`n` random inputs and targets shaped like the model's (labels for classifiers)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(np.float32)
    model = trainer.model
    if trainer.task.name == "classification":
        y = rng.integers(0, model.spec.layers[-1].units, size=n).astype(np.int32)
    else:
        params, state = jax.eval_shape(model.init_variables, jax.random.PRNGKey(0))
        view = (1, *model.spec.input_shape)
        out = jax.eval_shape(
            lambda p, s: model.apply(p, spec_lib.full(model.spec), jnp.zeros(view), state=s),
            params,
            state,
        )
        y = rng.uniform(size=(n, *out.shape[1:])).astype(np.float32)
    return train.TrainData(jnp.asarray(x), jnp.asarray(y))


def measure(config, runs: int, steps: int, repeats: int = 3, method: str = "vmap") -> dict:
    """One row: step time (`repeats` > 0) and memory of a vmapped group of `runs` runs
    (`method` 'loop': the runs one after another, `lax.map`, as a CPU runs them)."""
    config = config.copy_and_resolve_references()
    config.batch.method, config.batch.group_size = method, runs
    raw_shape = data.input_shape(config.data)
    input_shape = augment.output_shape_of(config.augment, raw_shape)
    trainer = train.from_config(config, input_shape)
    engine = batching.make_engine(trainer, config.batch)
    d = synthetic_data(trainer, raw_shape, max(4 * int(config.train.batch_size), 64))
    states = train.create_train_states(range(runs), trainer.model, trainer.tx)
    num_steps = jnp.full((runs,), steps, jnp.int32)

    t0 = time.perf_counter()
    compiled = jax.jit(engine.train).lower(states, d, num_steps).compile()
    compile_seconds = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    times = []
    if repeats > 0:
        jax.block_until_ready(compiled(states, d, num_steps))  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(states, d, num_steps))
        times.append((time.perf_counter() - t0) / steps)
    step = float(np.median(times)) if times else float("nan")
    row = {
        "runs": runs,
        "step_seconds": step,
        "step_seconds_per_run": step / runs,
        "compile_seconds": compile_seconds,
        "params_per_run": int(
            sum(np.size(leaf) for leaf in jax.tree.leaves(batching.take(states, 0).params))
        ),
    }
    if memory is not None:
        args = memory.argument_size_in_bytes
        temp = memory.temp_size_in_bytes
        out = memory.output_size_in_bytes
        alias = memory.alias_size_in_bytes
        row.update(
            argument_gib=args / GIB,
            temp_gib=temp / GIB,
            output_gib=out / GIB,
            peak_gib=(args + temp + out - alias) / GIB,
        )
    return row


def main(argv, defined: dict) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sizes = [int(v) for v in defined["runs"].value.split(",") if v]
    out = defined["out"].value
    run(defined["config"].value, sizes, defined["steps"].value, defined["repeats"].value, out)


def run(config, group_sizes, steps: int, repeats: int, out: str | None = None) -> dict:
    """Measures every group size, prints the table, writes and returns the report."""
    rows = []
    device = jax.devices()[0]
    print(
        f"device: {device.device_kind} ({jax.default_backend()}), batch {config.train.batch_size}"
    )
    print(f"{'runs':>5} {'s/step':>9} {'s/run-step':>11} {'peak GiB':>9} {'compile s':>10}")
    for runs in group_sizes:
        row = measure(config, runs, int(steps), int(repeats))
        rows.append(row)
        print(
            f"{runs:5d} {row['step_seconds']:9.3f} {row['step_seconds_per_run']:11.3f} "
            f"{row.get('peak_gib', float('nan')):9.2f} {row['compile_seconds']:10.1f}",
            flush=True,
        )
    report = {
        **files.provenance("python -m jaxshrink.bench.stepbench"),
        "config": _config_filename(),
        "batch_size": int(config.train.batch_size),
        "layers": list(config.model.get("layers", ())),
        "rows": rows,
    }
    files.write_json(out or OUT_DEFAULT, report)
    return report


def _config_filename() -> str:
    """The `--config` argument when run as a program, else ''."""
    if "config" not in flags.FLAGS or not flags.FLAGS.is_parsed():
        return ""
    return flags.FLAGS["config"].config_filename


if __name__ == "__main__":
    _defined = define_flags()
    app.run(lambda argv: main(argv, _defined))
