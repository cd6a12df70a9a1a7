"""Writes docs/performance.md from the measured JSON files in experiments/results/.

    python experiments/docs_tables.py            # rewrites docs/performance.md
    python experiments/docs_tables.py --check    # exit 1 if the page is not up to date

Every number on that page is read here from the JSON file named above its table, so
the page cannot drift from the measurements (`tests/test_docs.py` regenerates it and
compares). Per case the page shows the newest measurement only; older generations stay
in experiments/results/ as history. To add a measurement, store the JSON that
`python -m jaxshrink.bench --out=...` (or `jaxshrink.bench.stepbench`) wrote under
experiments/results/, point the case's entry below at it and rerun this script.
Standard library only, so it runs without jax.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "experiments/results"
PAGE = ROOT / "docs" / "performance.md"

# The current measurement of each case (by date; see each file's `date` and `command`).
FCN_CPU = {64: "bench_rows_cpu.json", 128: "bench_rows_cpu.json", 256: "bench_auto_cpu.json"}
MNIST_CPU = {
    "MNIST `:quick` (4-8-128, batch 32)": "bench_layout_mnistq_cpu.json",
    "MNIST, thesis 004 (32-64-1024, batch 50)": "bench_layout_mnist_cpu.json",
}
RUN_AXIS_CPU = "bench-cpu-2026-11-22.json"
STEPBENCH = {
    "CIFAR-10, 004 Model A": "stepbench_cifar_a_memory_cpu.json",
    "CIFAR-10, 004 Model B": "stepbench_cifar_b_memory_cpu.json",
    "CIFAR-10, 004 Model C": "stepbench_cifar_c_memory_cpu.json",
    "CIFAR-10, 003 (batch norm, 24x24 crops)": "stepbench_cifar_t003_cpu.json",
    "MNIST autoencoder, 003 (32/64/32/1)": "stepbench_autoencoder_cpu.json",
}
GPU_GRID = [
    "gpu_h100/bench_64.json",
    "gpu_h100/bench_128_256.json",
    "gpu_h100/bench_256_default.json",
    "gpu_h100/bench_256_vmapgrad.json",
]
GPU_TAPS = "gpu_h100/bench_256_taps.json"
GPU_SWEEP_LOG = "gpu_h100/sweep_full_first_210s.log"
# configs/sweep.py at full size: 750 runs x at most 10 rounds x 2000 steps, plus the
# initial 10000 steps of its 250 trained networks.
SWEEP_SEED_STEPS = 750 * 10 * 2000 + 250 * 10000

# What `batch.steps='auto'` runs for the FCN on one CPU device (`search.batching.
# resolve_steps`): the compiled loop when the step holds no XLA convolution (the direct
# form covers every layer up to 128 px at batch 3), steps from the host otherwise.
FCN_AUTO_STEPS = {64: "loop", 128: "loop", 256: "host"}
GPU_FORMS = [("loop", "-"), ("vmap", "sum"), ("vmap", "vmap")]
GPU_PRECISIONS = ["highest", "default"]


def load(name: str) -> dict:
    """One JSON file of experiments/results/ (`name` relative to that folder)."""
    return json.loads((ROOT / RESULTS / name).read_text())


def ref(name: str) -> str:
    """The repository path of a results file, as the page cites it."""
    return f"`{RESULTS}/{name}`"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def source(names, what: str = "") -> str:
    """The line above a table naming its JSON files and how they were made."""
    files = sorted(dict.fromkeys(names))
    dates = sorted({str(load(n).get("date", "?"))[:10] for n in files})
    cited = ", ".join(ref(n) for n in files)
    return f"Source: {cited} (measured {', '.join(dates)}{'; ' + what if what else ''})."


def rate(x: float, bold: bool = False) -> str:
    """A CPU rate to one decimal, in bold for the default form."""
    return f"**{x:.1f}**" if bold else f"{x:.1f}"


def peer_cell(peer: dict) -> str:
    """PyTorch's median rate with the range of its timed calls."""
    calls = peer.get("seed_steps_per_s_all") or [peer["seed_steps_per_s"]]
    if len(calls) == 1:
        return rate(peer["seed_steps_per_s"])
    return f"{rate(peer['seed_steps_per_s'])} ({min(calls):.0f}-{max(calls):.0f})"


def find(rows: list[dict], **want) -> dict | None:
    """The one row of a bench JSON with the given fields, or None."""
    hits = [r for r in rows if all(r.get(k) == v for k, v in want.items())]
    return hits[0] if hits else None


def fcn_cpu() -> list[str]:
    """The thesis FCN on the CPU, host steps and compiled loop, PyTorch beside."""
    rows = []
    for size, name in FCN_CPU.items():
        data = load(name)["rows"]
        for seeds in (1, 8):
            host = find(data, size=size, seeds=seeds, method="host", conv="auto")
            loop = find(data, size=size, seeds=seeds, method="loop", conv="auto")
            default = loop if FCN_AUTO_STEPS[size] == "loop" else host
            cells = [
                rate(r["seed_steps_per_s"], bold=r is default) for r in (host, loop)
            ]
            peer = default["peer"]
            ratio = default["seed_steps_per_s"] / peer["seed_steps_per_s"]
            rows.append([f"{size}x{size}", seeds, *cells, peer_cell(peer), f"{ratio:.2f}"])
    header = ["size", "runs", "host steps", "compiled loop", "PyTorch (range of calls)",
              "default / PyTorch"]  # fmt: skip
    return [
        "### The thesis FCN beside PyTorch",
        "",
        "Seed-steps/s of the thesis network (1-5-5-1, 5x5, batch 3, soft F1 loss, Adam) "
        "with the CPU's default convolutions. Bold: what `batch.steps='auto'` runs (the "
        "compiled loop while every convolution of the step is the direct form, host steps "
        "once one is XLA's, as at 256 px). PyTorch: `experiments/peers/torch_fcn_bench.py`, "
        "the same training as a loop over runs.",
        "",
        source(FCN_CPU.values(), "`model.conv='auto'`, median of 3 timed calls each"),
        "",
        *table(header, rows),
    ]


def mnist_cpu() -> list[str]:
    """The MNIST classifiers on the CPU, XLA's convolutions and 'auto', PyTorch beside."""
    rows = []
    for label, name in MNIST_CPU.items():
        data = load(name)["rows"]
        for seeds in sorted({r["seeds"] for r in data}):
            xla = find(data, seeds=seeds, method="host", conv="xla")
            auto = find(data, seeds=seeds, method="host", conv="auto")
            loop = find(data, seeds=seeds, method="loop", conv="auto")
            peer = auto["peer"]
            ratio = auto["seed_steps_per_s"] / peer["seed_steps_per_s"]
            rows.append([
                label, seeds, rate(xla["seed_steps_per_s"]), rate(auto["seed_steps_per_s"], True),
                rate(loop["seed_steps_per_s"]) if loop else "-", peer_cell(peer), f"{ratio:.2f}",
            ])  # fmt: skip
    header = ["network", "runs", "host, XLA convs", "host, `auto`", "compiled loop, `auto`",
              "PyTorch (range of calls)", "default / PyTorch"]  # fmt: skip
    return [
        "### The MNIST classifiers beside PyTorch",
        "",
        "Seed-steps/s. Bold: the default (host steps, since the step holds XLA "
        "convolutions; `model.conv='auto'`). The thesis network's layers all stay with "
        "XLA, so its two host columns are one program measured twice: their difference is "
        "this machine's noise. PyTorch: `experiments/peers/torch_mnist_bench.py`.",
        "",
        source(MNIST_CPU.values(), "median of 3 timed calls each"),
        "",
        *table(header, rows),
    ]


def run_axis_cpu() -> list[str]:
    """Loop against vmap on the CPU: why `batch.method='auto'` is 'loop' there."""
    data = load(RUN_AXIS_CPU)["rows"]
    rows = []
    for size in sorted({r["size"] for r in data}):
        for seeds in sorted({r["seeds"] for r in data if r["size"] == size}):
            pick = {
                form: find(data, size=size, seeds=seeds, method=form[0], grad=form[1])
                for form in GPU_FORMS
            }
            rows.append([
                f"{size}x{size}", seeds, *(rate(pick[f]["seed_steps_per_s"]) for f in GPU_FORMS),
                f"{pick[('loop', '-')]['eval_images_per_s']:.0f}",
            ])  # fmt: skip
    header = ["size", "runs", "loop", "vmap, grad sum", "vmap, grad vmap", "loop eval images/s"]
    return [
        "### Runs batched by loop or vmap",
        "",
        "Seed-steps/s of the thesis FCN per way of executing the run axis "
        "(`batch.method`, `batch.grad`). This is the measurement behind `auto` = `loop` on "
        "a CPU; it predates the direct convolutions, so its absolute rates are not "
        "today's (the table above is).",
        "",
        source([RUN_AXIS_CPU], "XLA's convolutions, steps in the compiled loop"),
        "",
        *table(header, rows),
    ]


def stepbench_cpu() -> list[str]:
    """One training step of the larger networks: time and XLA's memory per group."""
    rows = []
    for label, name in STEPBENCH.items():
        data = load(name)
        for r in data["rows"]:
            step = r["step_seconds_per_run"]
            rows.append([
                label, f"`{data['config']}`", data["batch_size"], f"{r['params_per_run']:,}",
                r["runs"], f"{step:.3g}" if step else "-", f"{r['peak_gib']:.2f}",
                f"{r['peak_gib'] / r['runs']:.2f}",
            ])  # fmt: skip
    header = ["network", "config", "batch", "params per run", "runs per group",
              "s per step and run", "GiB per group", "GiB per run"]  # fmt: skip
    return [
        "### One training step of the larger networks",
        "",
        "XLA's memory analysis of one vmapped group (params, Adam's moments, gradients and "
        "activations) and, where timed, the step time. \"-\": memory only, not timed. The "
        "`:b` and `:c` presets set `batch.group_size` to 8 from these figures.",
        "",
        source(STEPBENCH.values(), "`python -m jaxshrink.bench.stepbench`, synthetic data"),
        "",
        *table(header, rows),
    ]


def gpu_rows() -> list[tuple[str, dict]]:
    """Every XLA-convolution row of the H100 grid with the file it came from."""
    return [
        (name, r) for name in GPU_GRID for r in load(name)["rows"] if r.get("conv", "xla") == "xla"
    ]


def gpu_grid() -> list[str]:
    """Seed-steps/s of every form and precision on the H100."""
    cells = {}
    for _, r in gpu_rows():
        cells[(r["size"], r["seeds"], r["method"], r["grad"], r["precision"])] = r
    keys = sorted({(r["size"], r["seeds"]) for _, r in gpu_rows()})
    rows = []
    for size, seeds in keys:
        row = [size, seeds]
        for precision in GPU_PRECISIONS:
            for method, grad in GPU_FORMS:
                r = cells.get((size, seeds, method, grad, precision))
                row.append(f"{r['seed_steps_per_s']:.0f}" if r else "-")
        rows.append(row)
    header = ["size", "runs"] + [
        f"{m}{'/' + g if g != '-' else ''} {p}" for p in GPU_PRECISIONS for m, g in GPU_FORMS
    ]
    return [
        "### Seed-steps/s per form and precision",
        "",
        "The thesis FCN on synthetic images. `highest` is float32, `default` lets cuDNN use "
        "TF32. \"-\": not measured (the lease ran out). "
        f"{ref('gpu_h100/README.md')} lists the command of each file.",
        "",
        source(GPU_GRID, "one NVIDIA H100 80GB HBM3, jax 0.11.2"),
        "",
        *table(header, rows),
    ]


def _peak(name: str, precision: str) -> float:
    return load(name)["matmul_gflops_per_s"][precision]


def gpu_best() -> list[str]:
    """The fastest form per size and run count, with its share of the matmul peak."""
    best = {}
    for name, r in gpu_rows():
        key = (r["size"], r["seeds"])
        if key not in best or r["seed_steps_per_s"] > best[key][1]["seed_steps_per_s"]:
            best[key] = (name, r)
    rows = []
    for (size, seeds), (name, r) in sorted(best.items()):
        form = r["method"] + ("/" + r["grad"] if r["grad"] != "-" else "")
        gflops = r["gflops_per_s"]
        rows.append([
            size, seeds, f"{form}, {r['precision']}", f"{r['seed_steps_per_s']:.0f}",
            f"{gflops / 1000:.2f}", f"{100 * gflops / _peak(name, 'highest'):.1f}%",
            f"{100 * gflops / _peak(name, 'default'):.2f}%",
            f"{r['train_bytes_per_run'] / 2**20:.1f}",
        ])  # fmt: skip
    fp32, tf32 = ([_peak(n, p) / 1000 for n in GPU_GRID] for p in GPU_PRECISIONS)
    header = ["size", "runs", "best form", "seed-steps/s", "TFLOP/s", "of FP32 peak",
              "of TF32 peak", "MiB per run"]  # fmt: skip
    return [
        "### The best form per size and run count",
        "",
        "Peaks: a measured 8192^3 float32 matrix product per file, "
        f"{min(fp32):.1f}-{max(fp32):.1f} TFLOP/s at `highest` and {min(tf32):.0f}-{max(tf32):.0f} "
        "at `default` (TF32). MiB per run: XLA's peak estimate for the training program over "
        "the runs.",
        "",
        source(GPU_GRID, "FLOPs per seed-step from XLA's count of the step, made on the CPU"),
        "",
        *table(header, rows),
        "",
        *gpu_tf32_sentence(),
    ]


def gpu_tf32_sentence() -> list[str]:
    """TF32 against float32 for vmap/sum at the largest run counts measured at both."""
    parts = []
    for size in (64, 128, 256):
        pair = {}
        for _, r in gpu_rows():
            if (r["size"], r["seeds"], r["method"], r["grad"]) == (size, 64, "vmap", "sum"):
                pair[r["precision"]] = r["seed_steps_per_s"]
        parts.append(f"{pair['default'] / pair['highest']:.2f}x at {size} px")
    return [
        "TF32 (`model.precision='default'`) over float32 for vmap/sum with 64 runs: "
        + ", ".join(parts) + ". The configs keep the thesis's float32."
    ]


def gpu_fit_and_taps() -> list[str]:
    """The largest group that fits, and `model.conv='taps'` on the GPU."""
    fits = [(n, g) for n in GPU_GRID for g in load(n).get("largest_group", [])]
    rows = [
        [g["size"], g["precision"], f"{g['method']}/{g['grad']}",
         f"{g['bytes_per_run'] / 2**20:.1f}", f"{g['bytes_limit'] / 2**30:.1f}",
         f"{g['largest_group']:,}", "yes" if g["fits"] else "no"]
        for _, g in fits
    ]  # fmt: skip
    taps = load(GPU_TAPS)["rows"]
    xla = load("gpu_h100/bench_128_256.json")["rows"]
    trows = []
    for method, grad in (("vmap", "sum"), ("loop", "-")):
        t = find(taps, size=256, seeds=64, method=method, grad=grad, precision="highest")
        x = find(xla, size=256, seeds=64, method=method, grad=grad, precision="highest")
        trows.append([method + ("/" + grad if grad != "-" else ""),
                      f"{x['seed_steps_per_s']:.0f}", f"{t['seed_steps_per_s']:.0f}"])  # fmt: skip
    return [
        "### The largest group of runs",
        "",
        source([n for n, _ in fits], "`--fit`: a 2-step run of that many runs went through"),
        "",
        *table(["size", "precision", "form", "MiB per run", "GiB allocatable", "runs in one group",
                "ran"], rows),  # fmt: skip
        "",
        "### `model.conv='taps'` on the GPU",
        "",
        source([GPU_TAPS, "gpu_h100/bench_128_256.json"], "256 px, 64 runs, `highest`"),
        "",
        *table(["form", "XLA convolutions", "`taps`"], trows),
        "",
        "`taps` is slower on the GPU: it is a CPU-only choice.",
    ]


def gpu_sweep() -> list[str]:
    """Figure 4.2 at full size: the measured rate of its first minutes, projected."""
    log = (ROOT / RESULTS / GPU_SWEEP_LOG).read_text()
    rates = [float(x) for x in re.findall(r"([\d.]+) seed-steps/s", log)]
    steady = statistics.median(rates)
    hours = SWEEP_SEED_STEPS / steady / 3600
    return [
        "### Figure 4.2 at full size",
        "",
        f"Source: {ref(GPU_SWEEP_LOG)} (the first 210 s of "
        "`python -m jaxshrink.main --config=configs/sweep.py`, vmap/sum, `highest`).",
        "",
        *table(
            ["measured", "value"],
            [
                ["initial training of the 250 networks (median of the logged rates)",
                 f"{steady:.0f} seed-steps/s"],
                ["the whole sweep at most (750 runs x 10 rounds x 2000 steps + 250 x 10000)",
                 f"{SWEEP_SEED_STEPS / 1e6:.1f} M seed-steps"],
                ["projected wall time at that rate", f"about {hours:.1f} hours"],
            ],
        ),  # fmt: skip
        "",
        "The projection is from the measured rate, not a completed run. The batched step "
        "reaches a few percent of the card's peak: XLA lowers the vmapped runs to grouped "
        "cuDNN convolutions of 1 to 5 channels, which do little arithmetic per byte.",
    ]


def all_sources() -> list[str]:
    names = [*FCN_CPU.values(), *MNIST_CPU.values(), RUN_AXIS_CPU, *STEPBENCH.values(),
             *GPU_GRID, GPU_TAPS, GPU_SWEEP_LOG]  # fmt: skip
    return sorted(dict.fromkeys(names))


def page() -> str:
    """The whole of docs/performance.md."""
    head = [
        "# Measured speed",
        "",
        "<!-- Generated by `python experiments/docs_tables.py`; do not edit by hand. -->",
        "",
        "This page is generated by `python experiments/docs_tables.py` from these files "
        f"in `{RESULTS}/` (each holds its command, date, device and versions): "
        + ", ".join(f"`{n}`" for n in all_sources())
        + ". Per case it shows the newest measurement; older ones stay in that folder as "
        "history. A *seed-step* is one training step of one run; seed-steps/s add up over "
        "the runs trained together. How the run axis executes (`batch.method`, `batch.grad`, "
        "`batch.steps`, `model.conv`) is described in [the architecture](architecture.md), "
        "section 4.",
        "",
        "## CPU: 2 cores",
        "",
        "A 2-core CI-class x86 CPU, jax 0.10.2, float32 at precision `highest`; the "
        "PyTorch peers ran with torch 2.14 on the same 2 threads. The machine was shared, "
        "so ratios near 1 are ties. `python -m jaxshrink.bench --peer=COMMAND` times another "
        "implementation of the same training in the same minute (`{size}`, `{seeds}` and "
        "`{steps}` in COMMAND are filled in) and adds its rate and the ratio to the table; "
        "`experiments/peers/` holds the PyTorch ones, which need only `torch` and `numpy`.",
        "",
    ]
    sections = [fcn_cpu(), mnist_cpu(), run_axis_cpu(), stepbench_cpu()]
    gpu = [gpu_grid(), gpu_best(), gpu_fit_and_taps(), gpu_sweep()]
    lines = head
    for block in sections:
        lines += block + [""]
    lines += ["## GPU: one H100", ""]
    for block in gpu:
        lines += block + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        same = PAGE.exists() and PAGE.read_text() == text
        print("docs/performance.md is " + ("up to date" if same else "out of date"))
        return 0 if same else 1
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
