"""The prepared device check of the GPU path: every batched convolution form, measured
in one call of at most ten minutes on an H100 or H200.

    python experiments/gpu_check.py OUT_DIR [--budget=540] [--tiny]
    bash experiments/gpu_check.sh OUT_DIR [...]   (on the GPU machine: installs the
                                                   carried wheels first)

A GPU is lent now and then for minutes, so this script is written and rehearsed on a
CPU (`tests/bench/test_gpu_check.py` runs it end to end with `--tiny`) and run on the
GPU as it is. It runs its parts one after another, each as a subprocess of this script
(`--part=NAME`) under its own share of `--budget` seconds, so that a part can run under
its own XLA flags, and a part that fails or hangs costs only its share:

- ``grid``: the bench grid (`jaxshrink.bench.speed.measure`: the thesis FCN, 1-5-5-1,
  5x5, batch 3, soft F1 and Adam, runs batched by `vmap` with the summed gradient) for
  every `model.conv` form at 256, then 128 and 64 px, for 64, 512 and 1 runs, at
  precision 'highest' and, for the forms that call cuDNN, 'default' (TF32); seed-steps
  per second, XLA's memory estimate per run, and the FLOP rate as a fraction of a
  measured float32 matrix product. Cells run in that order of importance while the
  part's time lasts; the ones left are listed as skipped.
- ``profile``: one step's pieces per layer (1->5, 5->5, 5->1) for every form at 256 px
  and 64 runs: the forward convolution, the input gradient and the filter gradient,
  each jitted alone, with its FLOP rate.
- ``kernels``: the Pallas kernel on its own: the fused convolution + bias + ReLU layer,
  forward and backward, against XLA's, at several tile heights, and under JAX's own
  choice of GPU lowering (Mosaic GPU) instead of Triton's.
- ``nhwc``, ``nchw``: the grid's 256 px, 64-run cells of the cuDNN forms at 'highest'
  again with ``--xla_gpu_force_conv_nhwc`` / ``--xla_gpu_force_conv_nchw``
  (autotuning left on).
- ``sweep``: `configs/sweep.py` (Figure 4.2 at the thesis's size) with the fastest form
  of the grid, for the seconds left: its logged seed-steps/s and the projected total.

OUT_DIR receives ``gpu_check.json`` (every part's records with the device, jax
version, date and command; rewritten after each part, so a cut-off call keeps what was
measured), ``gpu_check.md`` (the tables) and ``sweep.log``.

Needs: jax with CUDA, flax, optax, orbax-checkpoint, numpy, scikit-image and absl
(all in the device image) and ml_collections (carried as a wheel:
``pip download --no-deps ml_collections``). `--tiny` shrinks every part to seconds
on a CPU (16 px, 1 and 2 runs, Pallas in interpret mode, the quick sweep).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("grid", "profile", "kernels", "nhwc", "nchw", "sweep")
# Each part's share of the budget; the sweep takes what the others leave.
SHARES = {"grid": 0.38, "profile": 0.1, "kernels": 0.07, "nhwc": 0.09, "nchw": 0.09}
LAYOUT_FLAGS = {"nhwc": "--xla_gpu_force_conv_nhwc", "nchw": "--xla_gpu_force_conv_nchw"}
FCN_LAYERS = ((1, 5), (5, 5), (5, 1))  # the thesis network's (in, out) channels
KERNEL = 5
BATCH = 3
GRACE = 30  # seconds a part may overrun its share before it is stopped

FULL = {
    "sizes": (256, 128, 64),
    "runs": (64, 512, 1),
    "forms": ("xla", "direct", "packed:2", "packed:4", "packed:8", "packed:16", "pallas"),
    "tf32": ("xla", "packed:2", "packed:4", "packed:8", "packed:16"),  # the cuDNN forms
    "max_steps": 200,
    "cell_seconds": 1.0,
    "repeats": 2,
    "profile": (256, 64),
    "layers": FCN_LAYERS,
    "tile_rows": (2, 4, 8, 16),
    "sweep": ["configs/sweep.py"],
}
TINY = {
    "sizes": (16,),
    "runs": (2,),
    "forms": ("xla", "direct", "packed:2", "pallas"),
    "tf32": ("xla",),  # one cuDNN form, to rehearse the code path
    "max_steps": 2,
    "cell_seconds": 0.01,
    "repeats": 1,
    "profile": (16, 2),
    "layers": ((5, 5),),
    "tile_rows": (),
    "sweep": [
        "configs/sweep.py:quick",
        "--config.sweep.num_seeds=1",
        "--config.sweep.thresholds=(0.9,)",
        "--config.train.initial_steps=40",
        "--config.train.log_every=20",
        "--config.train.eval_every=40",
        "--config.minimize.round_steps=4",
    ],
}


def cells(setting: dict) -> list[tuple[int, int, str, str]]:
    """The grid's (size, runs, form, precision) cells, most important first: the
    thesis's 256 px at 64 runs for every form, then more and fewer runs, then TF32 for
    the cuDNN forms, then the smaller images."""
    order = []
    for size in setting["sizes"]:
        for runs in setting["runs"]:
            order += [(size, runs, form, "highest") for form in setting["forms"]]
        for runs in setting["runs"]:
            order += [(size, runs, f, "default") for f in setting["forms"] if f in setting["tf32"]]
    return order


def layer_flops(size: int, cin: int, cout: int) -> float:
    """Multiply-adds x 2 of one 5x5 SAME convolution of a batch-3 image stack."""
    return 2.0 * KERNEL * KERNEL * cin * cout * BATCH * size * size


def step_flops(size: int) -> float:
    """FLOPs of one training step of one run, counted from the layers: the forward
    pass of all three, the input gradients of the second and third, the filter
    gradients of all three (the elementwise work is left out)."""
    forward = sum(layer_flops(size, i, o) for i, o in FCN_LAYERS)
    inputs = sum(layer_flops(size, i, o) for i, o in FCN_LAYERS[1:])
    return 2 * forward + inputs


# --- the parts (each runs in its own process) ------------------------------------------


class Part:
    """One part's records, written to its file after each one (a killed part keeps them)."""

    def __init__(self, name: str, path: Path, seconds: float):
        self.name, self.path, self.deadline = name, path, time.monotonic() + seconds
        self.records: list[dict] = []
        self.skipped: list = []
        self.write()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, record: dict) -> None:
        self.records.append(record)
        print(f"[{self.name}] {json.dumps(record, default=str)[:300]}", flush=True)
        self.write()

    def write(self) -> None:
        from jaxshrink.core import files

        files.write_json(self.path, {"records": self.records, "skipped": self.skipped})


def _error(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:400] if lines else ''}"


def part_grid(part: Part, setting: dict, only_cudnn_at=None) -> None:
    """The bench grid (module docstring); `only_cudnn_at` = (size, runs): just those
    cells of the cuDNN forms (the forced-layout parts)."""
    import jax

    from jaxshrink.bench import speed

    todo = cells(setting)
    if only_cudnn_at is not None:
        todo = [
            c
            for c in todo
            if c[:2] == only_cudnn_at and c[2] in setting["tf32"] and c[3] == "highest"
        ]
    else:
        peaks = {p: speed.matmul_peak(p) / 1e9 for p in ("highest", "default")}
        part.add({"kind": "matmul_peak_gflops_per_s", **peaks})
    peaks = peaks if only_cudnn_at is None else None
    last = 0.0
    for i, (size, runs, form, precision) in enumerate(todo):
        if part.left() < last:
            part.skipped = [list(c) for c in todo[i:]]
            part.write()
            return
        t0 = time.monotonic()
        cell = {"size": size, "runs": runs, "conv": form, "precision": precision}
        try:
            row = speed.measure(
                size,
                runs,
                "vmap",
                "sum",
                setting["max_steps"],
                precision,
                conv=form,
                repeats=setting["repeats"],
                target_seconds=setting["cell_seconds"],
            )
            flops = step_flops(size)
            cell.update(
                seed_steps_per_s=row["seed_steps_per_s"],
                seed_steps_per_s_all=row["seed_steps_per_s_all"],
                steps=row["steps"],
                eval_images_per_s=row["eval_images_per_s"],
                compile_train_s=row["compile_train_s"],
                mib_per_run=row["train_bytes_per_run"] / 2**20,
                flops_per_seed_step=flops,
                tflops_per_s=flops * row["seed_steps_per_s"] / 1e12,
            )
            if peaks:
                cell["fraction_of_fp32_peak"] = cell["tflops_per_s"] * 1e3 / peaks["highest"]
        except Exception as e:  # noqa: BLE001 -- a form that fails here is a result
            cell["error"] = _error(e)
        cell["seconds"] = time.monotonic() - t0
        last = cell["seconds"]
        part.add(cell)
        jax.clear_caches()


def _timed(fn, *args, repeats: int = 5) -> float:
    """Median seconds of `fn(*args)` after a warm-up call (compiles)."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def part_profile(part: Part, setting: dict) -> None:
    """Per layer and form: forward, input gradient and filter gradient, jitted alone
    under `vmap` over runs (the filter gradient summed over runs, as `batch.grad='sum'`
    forms it)."""
    import jax

    from jaxshrink.core import convs

    size, runs = setting["profile"]
    precision = jax.lax.Precision.HIGHEST
    keys = iter(jax.random.split(jax.random.key(0), 64))
    for form in setting["forms"]:
        conv_fn = convs.conv_fn(form)
        for cin, cout in setting["layers"]:
            if part.left() < 0:
                part.skipped.append([form, cin, cout])
                part.write()
                continue
            x = jax.random.normal(next(keys), (runs, BATCH, size, size, cin))
            w = jax.random.normal(next(keys), (runs, KERNEL, KERNEL, cin, cout)) * 0.1
            g = jax.random.normal(next(keys), (runs, BATCH, size, size, cout))

            def conv(x, w, conv_fn=conv_fn):
                return conv_fn(
                    x,
                    w,
                    (1, 1),
                    "SAME",
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                    precision=precision,
                )

            runs_conv = jax.vmap(conv)
            pieces = {
                "forward": jax.jit(runs_conv),
                "input_gradient": jax.jit(
                    lambda x, w, g, f=runs_conv: jax.vjp(lambda x: f(x, w), x)[1](g)[0]
                ),
                "filter_gradient": jax.jit(
                    lambda x, w, g, f=runs_conv: jax.vjp(lambda w: f(x, w), w)[1](g)[0]
                ),
            }
            record = {"conv": form, "layer": f"{cin}->{cout}", "size": size, "runs": runs}
            flops = layer_flops(size, cin, cout) * runs
            for name, fn in pieces.items():
                args = (x, w) if name == "forward" else (x, w, g)
                try:
                    seconds = _timed(fn, *args)
                    record[f"{name}_ms"] = seconds * 1e3
                    record[f"{name}_tflops_per_s"] = flops / seconds / 1e12
                except Exception as e:  # noqa: BLE001
                    record[f"{name}_error"] = _error(e)
            part.add(record)
        jax.clear_caches()


def part_kernels(part: Part, setting: dict) -> None:
    """The Pallas kernels alone: the fused 5 -> 5 layer (convolution + bias + ReLU),
    forward and forward with backward, against XLA's, at several tile heights, and
    once with JAX's own choice of GPU lowering (Mosaic GPU) instead of Triton's."""
    import jax
    import jax.numpy as jnp

    from jaxshrink.core import pallas_conv

    size, runs = setting["profile"]
    keys = iter(jax.random.split(jax.random.key(1), 4))
    precision = jax.lax.Precision.HIGHEST
    pads = ((2, 2), (2, 2))

    def xla_layer(x, w, b):
        y = jax.lax.conv_general_dilated(
            x, w, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision
        )
        return jax.nn.relu(y + b)

    def fused(tile_rows):
        return lambda x, w, b: pallas_conv.conv_bias_relu(x, w, b, pads, tile_rows=tile_rows)

    cin, cout = 5, 5
    x = jax.random.normal(next(keys), (runs, BATCH, size, size, cin))
    w = jax.random.normal(next(keys), (runs, KERNEL, KERNEL, cin, cout)) * 0.1
    b = jax.random.normal(next(keys), (runs, cout)) * 0.1
    flops = layer_flops(size, cin, cout) * runs
    default_rows = pallas_conv.default_tile_rows(size, size, cout)
    variants = [("xla", xla_layer, pallas_conv.GPU_COMPILER_PARAMS)]
    variants += [
        (f"pallas, {rows} rows per tile", fused(rows), pallas_conv.GPU_COMPILER_PARAMS)
        for rows in sorted({*setting["tile_rows"], default_rows})
        if rows <= size
    ]
    variants.append((f"pallas, {default_rows} rows, JAX's GPU lowering", fused(None), None))
    triton = pallas_conv.GPU_COMPILER_PARAMS
    for name, layer, params in variants:
        if part.left() < 0:
            part.skipped.append(["layer", name])
            part.write()
            continue
        pallas_conv.GPU_COMPILER_PARAMS = params  # read when the kernels are traced
        jax.clear_caches()
        record = {"kernel": f"5->5 + bias + ReLU ({name})", "size": size, "runs": runs}
        fwd = jax.jit(jax.vmap(layer))
        loss = lambda x, w, b, layer=layer: jnp.sum(jax.vmap(layer)(x, w, b) ** 2)  # noqa: E731
        step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        for piece, fn in (("forward", fwd), ("forward_and_backward", step)):
            try:
                seconds = _timed(fn, x, w, b)
                record[f"{piece}_ms"] = seconds * 1e3
                passes = 1 if piece == "forward" else 3
                record[f"{piece}_tflops_per_s"] = passes * flops / seconds / 1e12
            except Exception as e:  # noqa: BLE001
                record[f"{piece}_error"] = _error(e)
        part.add(record)
    pallas_conv.GPU_COMPILER_PARAMS = triton


def sweep_projection(log: str, runs: int, networks: int, setting_config) -> dict:
    """The sweep's logged training rates and the projected wall time of the whole sweep:
    every network's initial training plus every run's rounds, one per removable filter
    (the most a run can take), at the median logged rate after the first."""
    # One run logs "steps/s", several "seed-steps/s"; the first rate holds the compilation.
    rates = [float(r) for r in re.findall(r"([\d.]+) (?:seed-)?steps/s", log)]
    steady = rates[1:] if len(rates) > 1 else rates
    c = setting_config
    removable = int(c.model.num_filters) * (int(c.model.num_layers) - 1)
    seed_steps = networks * int(c.train.initial_steps) + runs * removable * int(
        c.minimize.round_steps
    )
    record = {
        "logged_seed_steps_per_s": rates,
        "runs": runs,
        "networks": networks,
        "seed_steps_at_most": seed_steps,
    }
    if steady:
        rate = statistics.median(steady)
        record["seed_steps_per_s"] = rate
        record["projected_minutes"] = seed_steps / rate / 60
    return record


def part_sweep(part: Part, setting: dict, out_dir: Path, conv: str) -> None:
    """`configs/sweep.py` for the part's seconds, with `conv` as `model.conv`."""
    from jaxshrink.config import loader

    config_arg, *overrides = setting["sweep"]
    overrides = [*overrides, f"--config.model.conv={conv}"]
    workdir = tempfile.mkdtemp(prefix="gpu_check_sweep_")
    command = [
        sys.executable,
        "-m",
        "jaxshrink.main",
        f"--config={config_arg}",
        f"--workdir={workdir}",
        *overrides,
    ]
    log_path = out_dir / "sweep.log"
    seconds = max(1.0, part.left())
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        # The sweep takes the card as any run would (the part's own process was told
        # not to preallocate it).
        env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
    text = log_path.read_text()
    first = re.search(r"= (\d+) runs on (\d+) trained networks", text)
    config = loader.load(config_arg)
    for item in overrides:  # the same overrides, for the projection's counts
        key, _, value = item.removeprefix("--config.").partition("=")
        section, name = key.split(".")
        config[section][name] = type(config[section][name])(_literal(value))
    runs, networks = (int(first[1]), int(first[2])) if first else (0, 0)
    record = {
        "command": shlex.join(command[2:]),
        "seconds": time.monotonic() - t0,
        "finished": rc == 0,
        "exit_code": rc,
        **sweep_projection(text, runs, networks, config),
    }
    part.add(record)


def _literal(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_part(name: str, out: Path, scratch: Path, seconds: float, tiny: bool, conv: str) -> None:
    """One part, its records written to `scratch` (the sweep's log to `out`)."""
    setting = TINY if tiny else FULL
    part = Part(name, scratch / f"part-{name}.json", seconds)
    if name == "grid":
        part_grid(part, setting)
    elif name in LAYOUT_FLAGS:
        part_grid(part, setting, only_cudnn_at=(setting["sizes"][0], setting["runs"][0]))
    elif name == "profile":
        part_profile(part, setting)
    elif name == "kernels":
        part_kernels(part, setting)
    elif name == "sweep":
        part_sweep(part, setting, out, conv)


# --- the driver ------------------------------------------------------------------------


def fastest_form(grid_records: list[dict]) -> str:
    """The form with the highest rate at the grid's first size and most runs measured
    ('xla' when nothing was measured)."""
    rows = [r for r in grid_records if "seed_steps_per_s" in r and r.get("precision") == "highest"]
    if not rows:
        return "xla"
    size = rows[0]["size"]
    rows = [r for r in rows if r["size"] == size]
    most = max(r["runs"] for r in rows)
    return max((r for r in rows if r["runs"] == most), key=lambda r: r["seed_steps_per_s"])["conv"]


def tables(report: dict) -> str:
    """The check's tables in Markdown (`gpu_check.md`)."""
    head = report["provenance"]
    lines = [
        "# GPU check",
        "",
        f"{head.get('device', '?')}, jax {head.get('jax', '?')}, {head.get('date', '?')}: "
        f"`{head.get('command', '')}`",
        "",
    ]
    parts = report["parts"]
    grid = [r for r in parts.get("grid", {}).get("records", []) if "size" in r]
    if grid:
        lines += [
            "## Seed-steps per second (vmap, summed gradient)",
            "",
            "| size | runs | conv | precision | seed-steps/s | TFLOP/s | of FP32 peak | MiB/run |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in grid:
            if "error" in r:
                lines.append(
                    f"| {r['size']} | {r['runs']} | {r['conv']} | {r['precision']} | "
                    f"failed: {r['error'][:80]} | | | |"
                )
                continue
            frac = r.get("fraction_of_fp32_peak")
            lines.append(
                f"| {r['size']} | {r['runs']} | {r['conv']} | {r['precision']} | "
                f"{r['seed_steps_per_s']:.0f} | {r['tflops_per_s']:.2f} | "
                f"{'' if frac is None else f'{100 * frac:.1f}%'} | {r['mib_per_run']:.1f} |"
            )
        lines.append("")
    for layout in LAYOUT_FLAGS:
        rows = [r for r in parts.get(layout, {}).get("records", []) if "seed_steps_per_s" in r]
        if rows:
            lines += [f"## With {LAYOUT_FLAGS[layout]}", "", "| size | runs | conv | precision "
                      "| seed-steps/s |", "|---|---|---|---|---|"]  # fmt: skip
            lines += [
                f"| {r['size']} | {r['runs']} | {r['conv']} | {r['precision']} | "
                f"{r['seed_steps_per_s']:.0f} |"
                for r in rows
            ]
            lines.append("")
    profile = parts.get("profile", {}).get("records", [])
    if profile:
        lines += [
            "## One step's pieces per layer (ms)",
            "",
            "| conv | layer | forward | input gradient | filter gradient |",
            "|---|---|---|---|---|",
        ]
        for r in profile:
            cells_ = [
                f"{r[k + '_ms']:.3f}" if k + "_ms" in r else "failed"
                for k in ("forward", "input_gradient", "filter_gradient")
            ]
            lines.append(f"| {r['conv']} | {r['layer']} | " + " | ".join(cells_) + " |")
        lines.append("")
    kernels = parts.get("kernels", {}).get("records", [])
    if kernels:
        lines += ["## The Pallas layer alone (ms)", "",
                  "| kernel | forward | forward and backward |", "|---|---|---|"]  # fmt: skip
        for r in kernels:
            f, fb = (
                f"{r[p + '_ms']:.3f}" if p + "_ms" in r else r.get(p + "_error", "-")[:80]
                for p in ("forward", "forward_and_backward")
            )
            lines.append(f"| {r['kernel']} | {f} | {fb} |")
        lines.append("")
    sweep = parts.get("sweep", {}).get("records", [])
    if sweep:
        s = sweep[-1]
        lines += ["## Figure 4.2 sweep", "", f"`{s['command']}` for {s['seconds']:.0f} s: "]
        if "seed_steps_per_s" in s:
            lines[-1] += (
                f"{s['seed_steps_per_s']:.0f} seed-steps/s (median of the logged rates); "
                f"the whole sweep ({s['seed_steps_at_most'] / 1e6:.1f} M seed-steps at most) "
                f"projects to {s['projected_minutes']:.1f} minutes."
            )
        else:
            lines[-1] += "no training rate was logged."
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all parts")
    parser.add_argument("--tiny", action="store_true", help="the CPU rehearsal's sizes")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--part", default="", help=argparse.SUPPRESS)  # one part, internal
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sweep-conv", default="xla", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if args.part:
        run_part(args.part, out, Path(args.scratch), args.seconds, args.tiny, args.sweep_conv)
        return {}
    return drive(args, out, argv)


def drive(args, out: Path, argv) -> dict:
    """Runs the parts in order, each under its share of the budget, and writes the report."""
    from jaxshrink.core import files

    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_parts_"))
    command = "python experiments/gpu_check.py"
    report = {
        "provenance": _provenance(command, sys.argv[1:] if argv is None else argv),
        "budget_s": args.budget,
        "tiny": args.tiny,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "parts": {},
    }
    start = time.monotonic()
    names = [n for n in args.parts.split(",") if n]
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        raise SystemExit(f"gpu_check: unknown parts {unknown}; allowed: {PARTS}")
    for name in names:
        left = args.budget - (time.monotonic() - start)
        seconds = left if name == "sweep" else min(left, SHARES[name] * args.budget)
        if seconds <= 0:
            report["parts"][name] = {"skipped": "no time left"}
            continue
        report["parts"][name] = _run_subprocess(name, out, scratch, seconds, args, report)
        report["elapsed_s"] = time.monotonic() - start
        files.write_json(out / "gpu_check.json", report)
        files.write_text(out / "gpu_check.md", tables(report))
    print(tables(report))
    return report


def _provenance(command: str, argv) -> dict:
    """`files.provenance` (device, jax version, date, command) read in a process of its
    own: JAX on a GPU takes most of the card's memory for the process that first uses
    it, and the driver must leave the card to the parts."""
    code = (
        "import json, sys; from jaxshrink.core import files; "
        "print(json.dumps(files.provenance(sys.argv[1], sys.argv[2:])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, command, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode:
        return {"command": " ".join([command, *argv]), "error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_subprocess(name: str, out: Path, scratch: Path, seconds: float, args, report) -> dict:
    """Part `name` in a process of its own (its XLA flags), stopped `GRACE` s after its
    share; its records, exit code and seconds."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if name in LAYOUT_FLAGS:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {LAYOUT_FLAGS[name]}".strip()
    if name == "sweep":  # the part only watches the sweep's process: leave it the card
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    grid = report["parts"].get("grid", {}).get("records", [])
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        str(out),
        f"--part={name}",
        f"--scratch={scratch}",
        f"--seconds={seconds}",
        f"--sweep-conv={fastest_form(grid)}",
        *(["--tiny"] if args.tiny else []),
    ]
    t0 = time.monotonic()
    print(f"gpu_check: part {name} ({seconds:.0f} s)", flush=True)
    proc = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
    try:
        rc = proc.wait(timeout=seconds + GRACE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    path = scratch / f"part-{name}.json"
    result = json.loads(path.read_text()) if path.exists() else {"records": []}
    result.update(exit_code=rc, seconds=time.monotonic() - t0, xla_flags=env.get("XLA_FLAGS", ""))
    return result


if __name__ == "__main__":
    main()
