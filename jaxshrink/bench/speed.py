"""Benchmark of the batched engine: seed-steps/s, eval images/s, compile time, FLOP rate.

    python -m jaxshrink.bench [--sizes=128,256] [--seeds=1,8,64,256]
        [--methods=loop,vmap] [--grads=sum,vmap] [--precision=highest,default]
        [--steps=N] [--peak] [--fit=vmap/sum] [--out=bench.json]

For every image size, number of seeds (independent runs), batching method and
gradient form it builds the thesis network (1-5-5-1, 5x5 filters, batch 3, soft F1
loss, Adam) on synthetic images and measures, after compiling:

* training: seed-steps per second of `Engine.train` (all seeds, `--steps` steps in
  one compiled call), and the jit compile time, reported apart; method ``host``
  instead loops the steps from Python (`batching.host_train`, ``batch.steps='host'``,
  the CPU default): one compiled single-run step per call, compiled on its first;
* evaluation: eval images per second of `Engine.evaluate` over all seeds;
* the achieved FLOP rate: XLA's `cost_analysis` FLOPs of one training step of one
  run, times seed-steps per second; with `--peak`, also as a fraction of a measured
  large float32 matrix product at the same precision;
* memory: XLA's peak-memory estimate of the compiled training program, per run; with
  `--fit=METHOD/GRAD`, the largest group of runs the device's memory holds at each
  size (estimated from two compilations, then checked by training that many runs).

With `--config=FILE[:preset]` it measures that config's network instead (the MNIST
or CIFAR-10 classifier, the autoencoder, your own config) at the config's input shape,
on synthetic inputs and targets of the right shapes (no dataset is read).

With `--peer=COMMAND` it also runs another implementation of the same training (e.g.
`experiments/peers/torch_fcn_bench.py`, the thesis network in PyTorch) once per size
and seed count, in the same process tree and minute: COMMAND may hold ``{size}``,
``{seeds}`` and ``{steps}``, and must print a JSON line with ``seed_steps_per_s``.
Each row then shows the peer's rate and jaxshrink's rate over it (``ratio`` > 1:
jaxshrink is faster).

It prints a table and writes JSON with the device, backend, precision, jax version,
date and the command line. Defaults follow the backend: on a CPU the thesis's
256x256 and 256 seeds would take hours, so sizes 32/64 and up to 32 seeds (the
output says so).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxshrink import data
from jaxshrink.bench import stepbench
from jaxshrink.config import loader
from jaxshrink.config import schema as config_lib
from jaxshrink.core import augment, errors, files, train
from jaxshrink.search import batching

GPU_DEFAULTS = {"sizes": "128,256", "seeds": "1,8,64,256", "steps": 50}
CPU_DEFAULTS = {"sizes": "32,64", "seeds": "1,8,32", "steps": 10}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _config(size: int, precision: str, method: str, grad: str, base=None, conv: str = "auto"):
    """The edge FCN at `size` (or `base`, another config, at its own input shape)."""
    if base is None:
        c = config_lib.base_config("canny")
        c.data.crop_size = size
    else:
        c = ml_collections.ConfigDict(base.to_dict())
    c.model.precision = precision
    c.model.conv = conv
    # 'host' is the loop method with its steps driven from Python (`batching.host_train`).
    c.batch.method, c.batch.grad = ("loop" if method == "host" else method), grad
    c.batch.steps = "host" if method == "host" else "compiled"
    return c


def load_config(arg: str) -> ml_collections.ConfigDict:
    """A config file as ``--config`` names it: 'configs/mnist.py' or 'configs/mnist.py:quick'
    (`jaxshrink.config.loader`); a bad one stops the benchmark with its one-line error."""
    try:
        return loader.load(arg)
    except errors.ConfigError as e:
        raise SystemExit(f"jaxshrink.bench.speed: {e}") from None


def input_shape(config) -> tuple[int, ...]:
    """One example's shape as the configured model sees it (after augmentation)."""
    return tuple(augment.output_shape_of(config.augment, data.input_shape(config.data)))


def _data(size: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(n, size, size, 1)).astype(np.float32)
    targets = (rng.uniform(size=(n, size, size, 1)) < 0.1).astype(np.float32)
    return images, targets


def make_trainer(config) -> train.Trainer:
    """The configured network's trainer at its input shape."""
    return train.from_config(config, input_shape(config))


def _train_data(config, trainer, n: int, seed: int = 0) -> train.TrainData:
    """Synthetic examples: edge-like images for the edge FCN, else the model's shapes."""
    if config.task == "edges":
        images, targets = _data(int(config.data.crop_size), n, seed)
        return train.TrainData(jnp.asarray(images), jnp.asarray(targets))
    return stepbench.synthetic_data(trainer, input_shape(config), n, seed)


def step_flops(config) -> float:
    """XLA's FLOP count of one training step of one run."""
    trainer = make_trainer(config)
    state = train.create_train_state(jax.random.PRNGKey(0), trainer.model, trainer.tx)
    data = _train_data(config, trainer, 8)

    def one_step(state, data):
        return train.step(trainer, state, data)[0]

    # The lowered (unoptimized) program's count: a compiled GPU program hides its
    # convolutions in library calls that XLA's cost analysis counts as 0 FLOPs.
    cost = jax.jit(one_step).lower(state, data).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float((cost or {}).get("flops", float("nan")))


def _fresh_states(trainer, runs: int) -> train.TrainState:
    """`train.create_train_states(range(runs))` as one compiled call (eager
    initialization dispatches, and on a GPU compiles, op by op)."""
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(runs)])
    init = jax.jit(jax.vmap(lambda k: train.create_train_state(k, trainer.model, trainer.tx)))
    return init(keys)


def measure(
    size,
    seeds,
    method,
    grad,
    steps,
    precision,
    eval_images=48,
    base=None,
    conv="auto",
    repeats=1,
    target_seconds=None,
) -> dict:
    """One benchmark row (see module doc); `base`: another config than the edge FCN;
    the training rate is the median of `repeats` timed calls. With `target_seconds`,
    each timed call runs as many steps (at most `steps`) as one step's time says fill
    that many seconds: the step count is data of the compiled loop, so this compiles
    nothing more, and a slow form cannot overrun a time budget by much."""
    config = _config(size, precision, method, grad, base, conv)
    trainer = make_trainer(config)
    engine = batching.make_engine(trainer, config.batch)
    data = _train_data(config, trainer, 64)
    ev = _train_data(config, trainer, eval_images, seed=1)
    eval_data = train.make_eval_data(
        train.TrainData(np.asarray(ev.inputs), np.asarray(ev.targets)),
        int(config.train.eval_batch_size),
    )
    states = _fresh_states(trainer, seeds)
    num_steps = jnp.full((seeds,), steps, jnp.int32)

    t0 = time.perf_counter()
    if method == "host":
        train_fn = batching.host_train(trainer)
        jax.block_until_ready(train_fn(states, data, np.ones(seeds, np.int32)))  # compiles
        memory = float("nan")  # no program of the whole loop to ask
    else:
        train_fn = jax.jit(engine.train).lower(states, data, num_steps).compile()
        memory = program_bytes(train_fn)
    compile_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    eval_fn = (
        jax.jit(engine.evaluate)
        .lower(states.params, states.model_state, states.masks, eval_data)
        .compile()
    )
    compile_eval = time.perf_counter() - t0
    if target_seconds and method != "host":
        steps = _steps_for(train_fn, states, data, seeds, steps, target_seconds)
        num_steps = jnp.full((seeds,), steps, jnp.int32)
    rates, out = _train_rates(train_fn, states, data, num_steps, seeds * steps, repeats)
    eval_seconds = _eval_seconds(eval_fn, out, eval_data)
    return {
        "size": size,
        "input_shape": list(input_shape(config)),
        "seeds": seeds,
        "method": method,
        "grad": grad if method == "vmap" else "-",
        "conv": conv,
        "steps": steps,
        "seed_steps_per_s": float(np.median(rates)),
        "seed_steps_per_s_all": rates,
        "eval_images_per_s": seeds * eval_images / eval_seconds,
        "compile_train_s": compile_train,
        "compile_eval_s": compile_eval,
        "precision": precision,
        "train_bytes": memory,
        "train_bytes_per_run": memory / seeds,
    }


def _steps_for(train_fn, states, data, seeds: int, most: int, seconds: float) -> int:
    """Steps per run (1 to `most`) that one call of `train_fn` runs in about `seconds`,
    from a timed call of one step (after a warm-up one)."""
    one = jnp.ones((seeds,), jnp.int32)
    jax.block_until_ready(train_fn(states, data, one))
    t0 = time.perf_counter()
    jax.block_until_ready(train_fn(states, data, one))
    return int(min(most, max(1, seconds // max(time.perf_counter() - t0, 1e-9))))


def _train_rates(train_fn, states, data, num_steps, seed_steps: int, repeats: int):
    """Seed-steps/s of `repeats` timed calls after a warm-up, and the trained states."""
    jax.block_until_ready(train_fn(states, data, num_steps))  # warm-up
    rates = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        out, _ = jax.block_until_ready(train_fn(states, data, num_steps))
        rates.append(seed_steps / (time.perf_counter() - t0))
    return rates, out


def _eval_seconds(eval_fn, states, eval_data) -> float:
    """Seconds of one evaluation of every run, after a warm-up."""
    jax.block_until_ready(eval_fn(states.params, states.model_state, states.masks, eval_data))
    t0 = time.perf_counter()
    jax.block_until_ready(eval_fn(states.params, states.model_state, states.masks, eval_data))
    return time.perf_counter() - t0


def program_bytes(compiled) -> int:
    """Device bytes a compiled program needs (XLA's peak estimate: arguments, outputs
    and temporaries); 0 where the backend gives no memory analysis."""
    stats = compiled.memory_analysis()
    if stats is None:
        return 0
    peak = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    return peak or int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def matmul_peak(precision: str, n: int | None = None, repeats: int = 10) -> float:
    """The measured FLOP/s of a large float32 matrix product at `precision`: the
    device's practical float32 ceiling ('highest') or its TF32 one ('default' on
    NVIDIA GPUs), the reference for a step's fraction of peak."""
    n = n or (512 if jax.default_backend() == "cpu" else 8192)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    a, b = (jax.random.normal(k, (n, n), jnp.float32) for k in keys)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=precision))
    jax.block_until_ready(f(a, b))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times))


def runs_that_fit(limit: float, fixed: float, per_run: float) -> int:
    """The most runs with fixed + per_run x runs <= limit (0 if none, or no per-run cost)."""
    return max(0, int((limit - fixed) // per_run)) if per_run > 0 else 0


def largest_group(size, precision, method, grad, base=None, conv="auto", probe=(1, 64), limit=None):
    """The most runs one device holds in one group, from XLA's memory analysis.

    Compiles the training program for `probe` run counts, fits bytes = fixed +
    per_run x runs, and divides the device's allocatable bytes (`memory_stats()`'s
    ``bytes_limit``, or `limit`) by it; then trains that many runs for 2 steps to
    check the estimate (``fits``). None where the backend reports no memory limit
    (CPU) and `limit` is not given.
    """
    limit = limit or (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    if not limit:
        return None
    config = _config(size, precision, method, grad, base, conv)
    trainer = make_trainer(config)
    engine = batching.make_engine(trainer, config.batch)
    data = _train_data(config, trainer, 64)

    def compiled(runs):
        states = _fresh_states(trainer, runs)
        steps = jnp.full((runs,), 2, jnp.int32)
        return jax.jit(engine.train).lower(states, data, steps).compile(), states, steps

    low, high = (program_bytes(compiled(r)[0]) for r in probe)
    per_run = (high - low) / (probe[1] - probe[0])
    fixed = low - per_run * probe[0]
    runs = runs_that_fit(limit, fixed, per_run)
    record = {
        "size": size,
        "precision": precision,
        "method": method,
        "grad": grad,
        "bytes_limit": int(limit),
        "bytes_per_run": per_run,
        "fixed_bytes": fixed,
        "largest_group": runs,
    }
    if runs < 1:
        return {**record, "fits": False, "error": "not one run fits"}
    try:
        fn, states, steps = compiled(runs)
        jax.block_until_ready(fn(states, data, steps))
        record["fits"] = True
    except Exception as e:  # noqa: BLE001 -- an out-of-memory error is the answer
        record["fits"] = False
        record["error"] = str(e).splitlines()[0][:300]
    return record


def run_peer(
    template: str, size: int, seeds: int, steps: int, repeats: int = 1, timeout: float = 3600
) -> dict:
    """Runs the peer command `repeats` times and returns its last JSON record, with
    ``seed_steps_per_s`` the median of the runs' rates (all in ``seed_steps_per_s_all``).

    Raises:
      RuntimeError: the command failed, or printed no JSON line with that key.
    """
    records = [_run_peer_once(template, size, seeds, steps, timeout) for _ in range(repeats)]
    rates = [r["seed_steps_per_s"] for r in records]
    return {
        **records[-1],
        "seed_steps_per_s": float(np.median(rates)),
        "seed_steps_per_s_all": rates,
    }


def _run_peer_once(template: str, size: int, seeds: int, steps: int, timeout: float) -> dict:
    command = template.format(size=size, seeds=seeds, steps=steps)
    proc = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(
            f"peer command failed (exit {proc.returncode}): {command}\n{proc.stderr[-2000:]}"
        )
    for line in reversed(proc.stdout.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "seed_steps_per_s" in record:
            return {**record, "command": command}
    raise RuntimeError(f"peer command printed no JSON line with seed_steps_per_s: {command}")


def _table(rows: list[dict]) -> str:
    peer = any("peer" in r for r in rows)
    head = (
        f"{'size':>5} {'seeds':>5} {'method':>6} {'grad':>4} {'conv':>4} {'prec':>7} "
        f"{'seed-steps/s':>13} {'eval img/s':>11} {'GFLOP/s':>9} {'MiB/run':>8} {'compile s':>10}"
    )
    head += f" {'peer steps/s':>13} {'ratio':>6}" if peer else ""
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (
            f"{r['size']:>5} {r['seeds']:>5} {r['method']:>6} {r['grad']:>4} {r['conv']:>4} "
            f"{r['precision']:>7} {r['seed_steps_per_s']:>13.1f} {r['eval_images_per_s']:>11.1f} "
            f"{r['gflops_per_s']:>9.2f} {r['train_bytes_per_run'] / 2**20:>8.2f} "
            f"{r['compile_train_s']:>10.2f}"
        )
        if peer:
            line += f" {r['peer']['seed_steps_per_s']:>13.1f} {r['ratio']:>6.2f}"
        lines.append(line)
    return "\n".join(lines)


def _parser(defaults: dict) -> argparse.ArgumentParser:
    """The command line's flags; `defaults` (sizes, seeds, steps) follow the backend."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=defaults["sizes"], help="image sizes, e.g. 128,256")
    parser.add_argument("--seeds", default=defaults["seeds"], help="runs per batch, e.g. 1,8,64")
    parser.add_argument("--methods", default="loop,vmap")
    parser.add_argument("--grads", default="sum,vmap", help="gradient forms tried with vmap")
    parser.add_argument("--steps", type=int, default=defaults["steps"], help="timed steps")
    parser.add_argument(
        "--precision", default="highest", help="'highest' (fp32), 'default' (TF32 on GPUs), or both"
    )
    parser.add_argument(
        "--peer",
        default="",
        help="another implementation to run beside, e.g. "
        "'python experiments/peers/torch_fcn_bench.py {size} {seeds} {steps}'",
    )
    parser.add_argument(
        "--config",
        default="",
        help="measure this config's network (e.g. configs/mnist.py:quick) at its own input "
        "shape on synthetic data, instead of the edge FCN at --sizes",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="time the training (and the peer) this many times and report the median "
        "(a shared machine's rates move between calls)",
    )
    parser.add_argument(
        "--convs",
        default="auto",
        help="model.conv values (jaxshrink.core.convs): auto, xla, taps, direct, packed, "
        "packed:K, pallas",
    )
    parser.add_argument(
        "--peak",
        action="store_true",
        help="also measure a large float32 matrix product per precision, and give each "
        "row's FLOP rate as a fraction of it",
    )
    parser.add_argument(
        "--fit",
        default="",
        help="'METHOD/GRAD' (e.g. vmap/sum): per size, the largest group of runs that fits "
        "in the device's memory (needs a backend that reports its memory limit)",
    )
    parser.add_argument("--out", default="bench.json")
    return parser


def main(argv=None) -> dict:
    """Measures the rows the flags ask for, prints them and writes the JSON (`--out`)."""
    backend = jax.default_backend()
    defaults = CPU_DEFAULTS if backend == "cpu" else GPU_DEFAULTS
    args = _parser(defaults).parse_args(argv)
    base = load_config(args.config) if args.config else None
    precisions = args.precision.split(",")

    device = jax.devices()[0].device_kind
    print(f"device: {device} ({backend}), jax {jax.__version__}, precision {args.precision}")
    if backend == "cpu" and args.sizes == CPU_DEFAULTS["sizes"]:
        print("CPU: sizes and seed counts are smaller than the GPU's 128/256 and 1..256 seeds.")
    rows = []
    report = {
        **files.provenance("python -m jaxshrink.bench", argv),
        "precision": args.precision,
        "batch_size": 3 if base is None else int(base.train.batch_size),
        "network": "1-5-5-1, 5x5, soft F1 loss, Adam" if base is None else args.config,
        "rows": rows,
    }
    if args.peak:
        report["matmul_gflops_per_s"] = {p: matmul_peak(p) / 1e9 for p in precisions}
        for p, rate in report["matmul_gflops_per_s"].items():
            print(f"float32 matrix product at precision {p}: {rate:.0f} GFLOP/s")
    sizes = _ints(args.sizes) if base is None else ["x".join(map(str, input_shape(base)))]
    for size in sizes:
        for precision in precisions:
            _measure_rows(args, report, size, precision, base)
        if args.fit:
            _fit_row(args, report, size, precisions[0], base)
    print()
    print(_table(rows))
    files.write_json(args.out, report)
    print(f"\nwrote {args.out}")
    return report


def _variants(args):
    """(method, grad, conv) of every row of one size, precision and seed count."""
    for method in args.methods.split(","):
        for grad in args.grads.split(",") if method == "vmap" else ["sum"]:
            for conv in args.convs.split(","):
                yield method, grad, conv


def _measure_rows(args, report: dict, size, precision: str, base) -> None:
    """The rows of one size and precision, each printed and written when measured."""
    flops = step_flops(_config(size, precision, "loop", "sum", base))
    for seeds in _ints(args.seeds):
        peer = run_peer(args.peer, size, seeds, args.steps, args.repeats) if args.peer else None
        for method, grad, conv in _variants(args):
            row = measure(
                size,
                seeds,
                method,
                grad,
                args.steps,
                precision,
                base=base,
                conv=conv,
                repeats=args.repeats,
            )
            row["flops_per_seed_step"] = flops
            row["gflops_per_s"] = flops * row["seed_steps_per_s"] / 1e9
            if args.peak:
                peak = report["matmul_gflops_per_s"][precision]
                row["fraction_of_matmul_peak"] = row["gflops_per_s"] / peak
            if peer is not None:
                row["peer"] = peer
                row["ratio"] = row["seed_steps_per_s"] / peer["seed_steps_per_s"]
            report["rows"].append(row)
            print(_table([row]).splitlines()[-1], flush=True)
            files.write_json(args.out, report)  # a killed run keeps its rows


def _fit_row(args, report: dict, size, precision: str, base) -> None:
    """`--fit`: the largest group of one size, added to ``largest_group`` and written."""
    method, _, grad = args.fit.partition("/")
    fit = largest_group(size, precision, method, grad or "sum", base)
    if fit is None:
        print("--fit: this backend reports no memory limit; skipped")
        return
    report.setdefault("largest_group", []).append(fit)
    print(
        f"size {size}: {fit['bytes_per_run'] / 2**20:.1f} MiB per run, "
        f"largest group {fit['largest_group']} (fits: {fit['fits']})",
        flush=True,
    )
    files.write_json(args.out, report)


if __name__ == "__main__":
    main()
