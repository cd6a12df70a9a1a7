"""Every number theses 003 and 004 report, measured by jaxshrink on this machine.

    python experiments/theses.py                      # every part (about 15 min, 2 cores)
    python experiments/theses.py --parts=params,gradcheck
    python experiments/theses.py --page               # only rewrite the page from the JSON

Writes `experiments/results/theses_cpu.json` (device, command, date; one record per
part, a rerun part replacing its own record only) and `docs/results/theses.md`, the
side-by-side table made from it. The parts:

* `params`: the trainable parameters of 004's four networks, counted from
  `configs/mnist.py` and `configs/cifar10.py` (`:a`, `:b`, `:c`).
* `gradcheck`: 004's gradient check (3.3, eq. 3.7, step 1e-4) on its MNIST network
  (`jaxshrink.bench.gradcheck`, float64).
* `mnist`: `configs/mnist.py` trained as 004 printed (Table 4.1) on the builtin digits,
  its validation and test accuracy before and after a bounded shrink (`MNIST_SHRINK`:
  the thesis's 2000-step rounds, one unit each, would take days on a CPU).
* `cifar`: 004's CIFAR-10 Models A, B and C: CIFAR-10 does not ship offline, so their
  accuracies are not measured here (the page gives the command); the step time and
  XLA's memory analysis of one training step at the printed batch are, for the
  training hours and GPU memory 004 reports.
* `t003`: thesis 003's pruning methods as presets (`T003_RUNS`): the summation
  network under its activation-count cycle, with Momentum and with Adam, and the
  distorted and L1 variants; the autoencoder under its activation and outlier rules.
* `separable`: 003's MNIST network at quick sizes, as printed and with its
  convolutions trained separable from the start (`configs/mnist.py:decomposeme`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "experiments/results/theses_cpu.json")
PAGE = os.path.join(ROOT, "docs/results/theses.md")

# 004's figures (abstract; Tables 3.3-3.5; 4.1, 4.2; 4.2.6), quoted.
THESIS_004 = {
    "params": {"mnist": 3_274_634, "a": 4_259_274, "b": 29_853_002, "c": 30_955_290},
    "accuracy": {"mnist": 0.9731, "a": 0.7039, "b": 0.7264, "c": 0.7288},
    "gpu_mib": {"a": 670, "b": 2475, "c": 2493},
    "hours": {"b": 6, "c": 60},
    "gradcheck": 1e-9,  # "a numerical error of the order ~1e-9 ... when using Δ = 1e-4"
    "mnist_examples": "60000 training (45000 train / 15000 validation), 10000 test",
}
# The steps 004 trained (20 epochs of 45000 at batch 100; Model C 40 at batch 50).
CIFAR_STEPS = {"a": 9000, "b": 9000, "c": 36000}
# The bounded shrink of the MNIST part: five epochs of the 3000 digits per round,
# groups of units that double after a kept round (the dense layer has 1024).
MNIST_SHRINK = {
    "minimize.round_steps": 150,
    "minimize.group": "adaptive",
    "minimize.max_rounds": 8,
}
# Thesis 003's runs: (name, config argument, overrides, what 003 reports).
_SUM_003 = "about 950 of 1000 units pruned; Momentum's loss 'didn't converge to 0'"
_DISTORTED_003 = (
    "one unit: w1 [0.743, 0.650], b1 7.809, w2 -6.752, b2 7.809 (its loss 'almost the same')"
)
_AE_003 = "[32, 64, 32] -> [16, 64, 22] (Encoder 1, Encoder 2, Decoder 1)"
T003_RUNS = (
    ("summation, 003's cycle, Momentum (as 003 ran it)", "summation.py:t003", {}, _SUM_003),
    ("summation, 003's cycle, Adam", "summation.py:cycle", {}, _SUM_003),
    ("summation, distorted cycle, Momentum", "summation.py:t003,distorted", {}, _DISTORTED_003),
    ("summation, distorted cycle, Adam", "summation.py:cycle,distorted", {}, _DISTORTED_003),
    ("summation, distorted and L1, Adam", "summation.py:cycle,distorted,l1", {}, _DISTORTED_003),
    ("autoencoder, 003's activation pruning", "autoencoder.py:t003", {}, _AE_003),
    ("autoencoder, 003's activation pruning, quarter widths", "autoencoder.py:quick,t003", {},
     _AE_003),
    ("autoencoder, 003's outlier rule, quarter widths", "autoencoder.py:quick,t003,outliers", {},
     "(no figures: the section is an outline)"),
)  # fmt: skip


class Tee(io.TextIOBase):
    """Writes to a buffer and to the real stdout (the progress stays visible)."""

    def __init__(self, buffer):
        self.buffer, self.out = buffer, sys.__stdout__

    def write(self, text):
        self.buffer.write(text)
        return self.out.write(text)


def _config(arg: str, overrides: dict | None = None):
    from jaxshrink.config import loader

    config = loader.load(os.path.join(ROOT, "configs", arg))
    for field, value in (overrides or {}).items():
        section, key = field.split(".")
        config[section][key] = value
    return config


def _run(arg: str, overrides: dict | None = None) -> tuple[dict, float]:
    """Runs a config in a temporary workdir; returns its results and wall seconds
    (with the exported network's arrays under ``results['exported']`` when it has at
    most 4 hidden units left, for the weights 003 prints)."""
    import numpy as np

    from jaxshrink.experiments import runner

    config = _config(arg, overrides)
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(Tee(io.StringIO())):
            results = runner.run(config, workdir)
        wall = time.perf_counter() - t0
        if results["widths"]["after"][0] <= 4:
            with np.load(os.path.join(workdir, "export", "params.npz")) as arrays:
                results["exported"] = {k: arrays[k].round(4).tolist() for k in arrays.files}
        return results, wall


def _model(config):
    from jaxshrink import data
    from jaxshrink.core import augment, models

    shape = augment.output_shape_of(config.augment, data.input_shape(config.data))
    return models.get_model(config.model, shape)


def part_params() -> dict:
    import jax
    import numpy as np

    counts = {}
    for key, arg in (("mnist", "mnist.py"), ("a", "cifar10.py"), ("b", "cifar10.py:b"),
                     ("c", "cifar10.py:c")):  # fmt: skip
        params = jax.eval_shape(_model(_config(arg)).init, jax.random.PRNGKey(0))
        counts[key] = int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
    return {"counts": counts}


def part_gradcheck() -> dict:
    import jax
    import numpy as np

    from jaxshrink import data
    from jaxshrink.bench import gradcheck
    from jaxshrink.core import spec as spec_lib
    from jaxshrink.core import tasks

    config = _config("mnist.py")
    model = _model(config)
    params = model.init(jax.random.PRNGKey(0))
    digits = data.load_dataset(config.data)
    x, y = np.asarray(digits.train.inputs[:4]), np.asarray(digits.train.targets[:4])
    loss = tasks.get_task("classification").loss
    t0 = time.perf_counter()
    check = gradcheck.check_gradients(
        model, loss, params, spec_lib.full(model.spec), x, y, delta=1e-4,
        num_coordinates=64, num_directions=4, rng=0,
    )  # fmt: skip
    return {
        "delta": check.delta,
        "coordinates": check.coordinates_checked,
        "kink_coordinates": check.kink_coordinates,
        "max_relative_error": check.max_relative_error,
        "mean_relative_error": check.mean_relative_error,
        "sum_relative_error": check.sum_relative_error,
        "max_relative_error_fixed_step": check.max_relative_error_fixed_step,
        "max_directional_error": check.max_directional_error,
        "seconds": time.perf_counter() - t0,
    }


def part_mnist() -> dict:
    results, wall = _run("mnist.py", MNIST_SHRINK)
    t, f = results["trained"], results["final"]
    return {
        "config": "configs/mnist.py",
        "overrides": MNIST_SHRINK,
        "data": {k: results["data"][k] for k in ("train_examples", "eval_examples",
                                                "test_examples")},  # fmt: skip
        "validation": {"trained": t["eval"]["score"], "final": f["eval"]["score"]},
        "test": {"trained": t["test"]["score"], "final": f["test"]["score"]},
        "steps": {"trained": t["steps"], "final": f["steps"]},
        "widths": results["widths"],
        "params": results["params"],
        "rounds": len(results["rounds"]),
        "kept_rounds": sum(1 for r in results["rounds"] if r["accepted"]),
        "wall_seconds": wall,
    }


def _host_step_seconds(config, repeats: int = 3) -> float:
    """Seconds of one training step as a single run on a CPU takes it (one compiled step
    called from Python, `batch.steps='host'`), on synthetic data of the config's shape."""
    import jax

    from jaxshrink import data
    from jaxshrink.bench import stepbench
    from jaxshrink.core import augment, train

    raw = data.input_shape(config.data)
    trainer = train.from_config(config, augment.output_shape_of(config.augment, raw))
    batch = stepbench.synthetic_data(trainer, raw, 4 * int(config.train.batch_size))
    state = train.create_train_states([0], trainer.model, trainer.tx)
    state = jax.tree.map(lambda leaf: leaf[0], state)
    step = jax.jit(lambda s, d: train.step(trainer, s, d))
    state, _ = jax.block_until_ready(step(state, batch))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(step(state, batch))
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def part_cifar() -> dict:
    from jaxshrink.bench import stepbench

    models = {}
    for key in ("a", "b", "c"):
        config = _config(f"cifar10.py:{key}")
        memory = stepbench.measure(config, runs=1, steps=1, repeats=0, method="loop")
        seconds = _host_step_seconds(config)
        models[key] = {
            "batch_size": int(config.train.batch_size),
            "steps": CIFAR_STEPS[key],
            "step_seconds": seconds,
            "hours": seconds * CIFAR_STEPS[key] / 3600,
            "peak_mib": memory.get("peak_gib", float("nan")) * 1024,
        }
    return {
        "models": models,
        "accuracy": "not measured: CIFAR-10 is not available offline on this machine",
        "prepare": "tfds build cifar10 --file_format=array_record",
    }


def part_t003() -> dict:
    runs = []
    for name, arg, overrides, reported in T003_RUNS:
        results, wall = _run(arg, overrides)
        runs.append({
            "name": name,
            "config": f"configs/{arg}",
            "overrides": overrides,
            "reported": reported,
            "widths": results["widths"],
            "score_name": results["score"]["name"],
            "trained": results["trained"]["eval"],
            "final": results["final"]["eval"],
            "rounds": len(results["rounds"]),
            "exported": results.get("exported"),
            "wall_seconds": wall,
        })  # fmt: skip
    return {"runs": runs}


def part_separable() -> dict:
    runs = []
    for arg in ("mnist.py:t003,quick", "mnist.py:t003,quick,decomposeme"):
        results, wall = _run(arg)
        runs.append({
            "config": f"configs/{arg}",
            "layers": results["layers"],
            "widths": results["widths"],
            "params": results["params"],
            "flops": results["flops"],
            "trained": results["trained"]["eval"]["score"],
            "final": results["final"]["eval"]["score"],
            "wall_seconds": wall,
        })  # fmt: skip
    return {"runs": runs}


PARTS = {
    "params": part_params,
    "gradcheck": part_gradcheck,
    "mnist": part_mnist,
    "cifar": part_cifar,
    "t003": part_t003,
    "separable": part_separable,
}


# ---------------------------------------------------------------------------- the page


def page(record: dict) -> str:
    p = record["parts"]
    lines = [
        "# Theses 003 and 004 beside jaxshrink",
        "",
        "Every number the two theses report, next to what jaxshrink measured here, with",
        "the command that made it. Generated by `python experiments/theses.py` from",
        "`experiments/results/theses_cpu.json`; each part's device and date are its own.",
        "",
        "## Thesis 004: MNIST and CIFAR-10 classifiers",
        "",
        "| what 004 reports | 004 | jaxshrink | how |",
        "|---|---|---|---|",
    ]
    t = THESIS_004
    if "params" in p:
        c = p["params"]["counts"]
        for key, label in (("mnist", "MNIST network"), ("a", "CIFAR-10 Model A"),
                           ("b", "Model B"), ("c", "Model C")):  # fmt: skip
            lines.append(
                f"| trainable parameters, {label} | {t['params'][key]:,} | {c[key]:,} | "
                f"counted from the config ({_when(p['params'])}) |"
            )
    if "gradcheck" in p:
        g = p["gradcheck"]
        lines.append(
            f"| gradient check, relative error (eq. 3.7, step {g['delta']:g}) | ~1e-9 | "
            f"max {g['max_relative_error']:.1e}, mean {g['mean_relative_error']:.1e} over "
            f"{g['coordinates'] - g['kink_coordinates']} kink-free coordinates "
            f"({g['max_relative_error_fixed_step']:.1e} with the kinks, 004's way) | "
            f"`jaxshrink.bench.gradcheck`, float64, the MNIST network at init "
            f"({_when(g)}) |"
        )
    if "mnist" in p:
        m = p["mnist"]
        d = m["data"]
        data = (
            f"{d['train_examples']} train / {d['eval_examples']} validation / "
            f"{d['test_examples']} test digits"
        )
        lines.append(
            f"| MNIST test accuracy | 97.31% ({t['mnist_examples']}) | "
            f"{m['test']['trained']:.2%} after {m['steps']['trained']} steps, "
            f"validation {m['validation']['trained']:.2%} ({data}) | "
            f"`python -m jaxshrink.main --config=configs/mnist.py` ({_when(m)}) |"
        )
        shrink = " ".join(f"--config.{k}={v}" for k, v in m["overrides"].items())
        lines.append(
            f"| MNIST after shrinking | (004 does not shrink) | test "
            f"{m['test']['final']:.2%}, validation {m['validation']['final']:.2%}; "
            f"units {m['widths']['before']} -> {m['widths']['after']}, parameters "
            f"{m['params']['before']:,} -> {m['params']['after']:,}, {m['rounds']} rounds "
            f"({m['kept_rounds']} kept) | the same with `{shrink}` |"
        )
    if "cifar" in p:
        cf = p["cifar"]
        for key in ("a", "b", "c"):
            lines.append(
                f"| CIFAR-10 Model {key.upper()} test accuracy | {t['accuracy'][key]:.2%} | "
                f"{cf['accuracy']} | on a machine with internet, `{cf['prepare']}`, then "
                f"`python -m jaxshrink.main --config=configs/cifar10.py:{key}` |"
            )
        for key in ("a", "b", "c"):
            r = cf["models"][key]
            lines.append(
                f"| Model {key.upper()} GPU memory | {t['gpu_mib'][key]:,} MiB | "
                f"{r['peak_mib']:,.0f} MiB (XLA's memory analysis of one step, batch "
                f"{r['batch_size']}, on {cf['device']}) | `jaxshrink.bench.stepbench` "
                f"({_when(cf)}) |"
            )
        for key in ("b", "c"):
            r = cf["models"][key]
            lines.append(
                f"| Model {key.upper()} training time | ~{t['hours'][key]} h (004's Quadro "
                f"K4200) | {r['hours']:.1f} h for {r['steps']:,} steps at "
                f"{r['step_seconds']:.2f} s each ({cf['device']}, "
                f"{cf.get('cpu_count', '?')} cores) | one training step timed, as a single "
                f"run takes it (`--parts=cifar`, {_when(cf)}) |"
            )
    lines += [
        "",
        "Notes:",
        "",
        "- Model C: Table 3.5 as printed (convolutions 3->96, 96->96, 96->192, 192->192,",
        "  dense 12288->2048->2048->10) has 31,005,290 parameters; 004's abstract gives",
        "  30,955,290, 50,000 fewer, which no layer of the table accounts for. The config",
        "  follows the table.",
        "- The gradient check: 004 reports the error of its own CUDA and C++ layers; here",
        "  autodiff is compared with float64 central differences. Coordinates whose",
        "  +-step crosses a ReLU or max-pooling kink average two slopes and are checked",
        "  at a smaller step or left out (`jaxshrink.bench.gradcheck` explains the",
        "  detection); 004's way, every coordinate at the one step, is the figure in",
        "  brackets.",
        "- MNIST: the builtin digits are 5000 of MNIST's 70000; 004 trained on 45000 and",
        "  tested on 10000, so its 97.31% and the accuracy here are not the same",
        "  experiment at the same size. `--config.data.source=tfds` reads the full set.",
    ]
    if "t003" in p and p["t003"]["runs"]:
        lines += [
            "",
            "## Thesis 003: its pruning methods",
            "",
            "| run | 003 reports | jaxshrink: units per layer | score before -> after | "
            "command |",
            "|---|---|---|---|---|",
        ]
        for r in p["t003"]["runs"]:
            extra = " ".join(f"--config.{k}={v}" for k, v in r["overrides"].items())
            cmd = f"`python -m jaxshrink.main --config={r['config']}{' ' + extra if extra else ''}`"
            key = "mse" if "mse" in r["trained"] else "score"
            weights = ""
            if r.get("exported"):
                names = {"dense_0/kernel": "w1", "dense_0/bias": "b1",
                         "dense_1/kernel": "w2", "dense_1/bias": "b2"}  # fmt: skip
                weights = "; " + ", ".join(
                    f"{names[k]} {_numbers(r['exported'][k])}" for k in names
                    if k in r["exported"]
                )
            lines.append(
                f"| {r['name']} | {r['reported']} | {r['widths']['before']} -> "
                f"{r['widths']['after']}{weights} | {key} {r['trained'][key]:.3g} -> "
                f"{r['final'][key]:.3g} | {cmd} |"
            )
        lines += [
            "",
            "Notes:",
            "",
            "- The summation runs are at 003's sizes (1,000,000 examples, batch 1000, 10",
            "  epochs, one epoch per cycle); the counts read 100,000 of the training",
            "  examples (all of them would hold 4 GB of pre-activations). 003 names no",
            "  initialisation for this network; Flax's LeCun normal leaves about a quarter of",
            "  the units dead after training, which the first cycle prunes, and the cycle",
            "  stops when one prunes nothing, as 003's did after its first.",
            "- The distortion, U(-1, 1) x (1 - var(w)) on every kernel before each cycle,",
            "  throws the Momentum run off the sum (its one unit's weights are far from",
            "  003's) and costs the Adam runs two orders of magnitude in MSE; 003's cycle",
            "  has no accept test, so nothing rolls it back. Once var(w) > 1 the factor",
            "  1 - var(w) grows with the weights, so large weights get larger distortions.",
            "- The autoencoder's blocks end in batch norm before their ReLU, which centres",
            "  every channel's pre-activation: over the training digits' positions every",
            "  channel fires, so a count of 0 prunes none, at full and at quarter widths.",
            "  003 does not say how its channels came to be silent.",
        ]
    if "separable" in p:
        lines += [
            "",
            "## Thesis 003: convolutions trained separable (DecomposeMe, 2.5.1)",
            "",
            "003 describes the method and reports no figures for it. Its MNIST network at",
            "quick sizes, as printed and with every convolution a K x 1 then 1 x K pair",
            f"from the start ({_when(p['separable'])}):",
            "",
            "| config | accuracy trained -> shrunk | parameters | FLOPs / example |",
            "|---|---|---|---|",
        ]
        for r in p["separable"]["runs"]:
            lines.append(
                f"| `{r['config']}` | {r['trained']:.3f} -> {r['final']:.3f} | "
                f"{r['params']['before']:,} -> {r['params']['after']:,} | "
                f"{r['flops']['before']:,} -> {r['flops']['after']:,} |"
            )
    return "\n".join(lines) + "\n"


def _numbers(value) -> str:
    """Nested lists of numbers, flattened, at 4 significant digits."""
    import numpy as np

    flat = np.asarray(value, float).ravel()
    text = ", ".join(f"{v:.4g}" for v in flat)
    return f"[{text}]" if flat.size > 1 else text


def _when(part: dict) -> str:
    return f"{part.get('device', '?')}, {part.get('date', '?')}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--docs", default=PAGE)
    parser.add_argument("--page", action="store_true", help="only rewrite the page")
    args = parser.parse_args(argv)
    record = {"parts": {}}
    if os.path.exists(args.out):
        with open(args.out) as f:
            record = json.load(f)
    if not args.page:
        sys.path.insert(0, ROOT)
        from jaxshrink.core import files

        for name in [n for n in args.parts.split(",") if n]:
            if name not in PARTS:
                raise SystemExit(f"--parts: {name!r}; allowed: {tuple(PARTS)}")
            print(f"== {name}", flush=True)
            head = files.provenance("python experiments/theses.py", argv)
            head["cpu_count"] = os.cpu_count()
            record["parts"][name] = {**head, **PARTS[name]()}
            files.write_json(args.out, record)  # after every part: nothing lost
    with open(args.docs, "w") as f:
        f.write(page(record))
    print(f"wrote {args.docs}")


if __name__ == "__main__":
    main()
