"""The plain-Flax networks' quick runs on this machine: what each shrinks to.

    python experiments/plain_models.py [--out experiments/results/plain_models_cpu.json]

Runs `configs/resnet.py:quick`, `configs/unet.py:quick` and `configs/mobilenet.py:quick`
(each a wrapped module whose layers are its channel groups), and the ResNet once more
with the depth search on (`minimize.depth='cost'`: its residual branches are tried
whole first, then channels), in temporary workdirs, and writes one JSON record
(device, command, date, and per run: score before and after, parameters, FLOPs,
channels per group before and after, branches removed, seconds per 1000 training
steps, wall time) and `docs/plain_models.md`, the table made from it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import sys
import tempfile
import time

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (config, overrides of its quick preset)
CASES = (
    ("resnet", {}),
    ("unet", {}),
    ("mobilenet", {}),
    ("resnet", {"minimize.depth": "cost", "minimize.max_rounds": 14}),
)


class Tee(io.TextIOBase):
    """Writes to a buffer and to the real stdout (the progress stays visible)."""

    def __init__(self, buffer):
        self.buffer, self.out = buffer, sys.__stdout__

    def write(self, text):
        self.buffer.write(text)
        return self.out.write(text)


def _one(name: str, overrides: dict) -> dict:
    from jaxshrink.config import loader
    from jaxshrink.experiments import runner

    config = loader.load(os.path.join(ROOT, "configs", f"{name}.py:quick"))
    for field, value in overrides.items():
        section, key = field.split(".")
        config[section][key] = value
    log = io.StringIO()
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(Tee(log)):
            results = runner.run(config, workdir)
        wall = time.perf_counter() - t0
    # The training stage's own rate: its last progress line ("... 22.4 steps/s").
    rates = re.findall(r"train: step .*?([0-9.]+) steps/s", log.getvalue())
    return {
        "config": f"configs/{name}.py:quick",
        "overrides": dict(overrides),
        "score_name": results["score"]["name"],
        "trained": results["trained"]["eval"]["score"],
        "final": results["final"]["eval"]["score"],
        "params": results["params"],
        "flops": results["flops"],
        "layers": results["layers"],
        "widths": results["widths"],
        "rounds": len(results["rounds"]),
        "kept_rounds": sum(1 for r in results["rounds"] if r.get("accepted")),
        "branches_removed": [
            n for n, w in zip(results["layers"], results["widths"]["after"]) if w == 0
        ],
        "seconds_per_1000_steps": 1000.0 / float(rates[-1]) if rates else None,
        "wall_seconds": wall,
        "max_abs_diff": results["export"]["max_abs_diff"],
    }


def table(record: dict) -> str:
    lines = [
        f"Quick runs on {record['device']} ({record['cpu_count']} CPU cores, {record['date']}),",
        f"`{record['command']}`; JSON: `experiments/results/plain_models_cpu.json`.",
        "",
        "| config | score before -> after | params before -> after | FLOPs before -> after "
        "| rounds (kept) | branches removed | s / 1000 steps | run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        per = r["seconds_per_1000_steps"]
        lines.append(
            f"| {_label(r)} | {r['trained']:.4g} -> {r['final']:.4g} | "
            f"{r['params']['before']:,} -> {r['params']['after']:,} | "
            f"{r['flops']['before']:,} -> {r['flops']['after']:,} | "
            f"{r['rounds']} ({r['kept_rounds']}) | {len(r['branches_removed'])} | "
            f"{'-' if per is None else f'{per:.1f}'} | "
            f"{r['wall_seconds']:.0f} |"
        )
    lines += [
        "",
        "A branch is a group the data can do without (a residual block's inner channels);",
        "with `minimize.depth='cost'` each is tried whole before any channel, and a removed",
        "one leaves its block the shortcut. The score rule compares each change with the",
        "last kept network, so the accuracy given up adds over the kept removals.",
        "",
        "Channels per group (the layers are the groups), before -> after:",
        "",
    ]
    for r in record["runs"]:
        lines.append(f"- {_label(r)}:")
        for name, a, b in zip(r["layers"], r["widths"]["before"], r["widths"]["after"]):
            lines.append(f"  - {name}: {a} -> {b}")
    return "\n".join(lines) + "\n"


def _label(run: dict) -> str:
    extra = " ".join(f"{k}={v}" for k, v in run.get("overrides", {}).items())
    return f"`{run['config']}`" + (f" `{extra}`" if extra else "")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    out = os.path.join(ROOT, "experiments/results/plain_models_cpu.json")
    parser.add_argument("--out", default=out)
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs/plain_models.md"))
    args = parser.parse_args(argv)
    record = {
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "command": "python experiments/plain_models.py",
        "runs": [_one(name, overrides) for name, overrides in CASES],
    }
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    with open(args.docs, "w") as f:
        f.write("# Plain Flax networks, shrunk by their channel groups\n\n" + table(record))
    print(table(record), file=sys.stdout)


if __name__ == "__main__":
    main()
