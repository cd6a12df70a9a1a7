"""Several finished runs in one figure, as thesis 004 compares its Models A, B and C.

    python -m jaxshrink.report.overlay WORKDIR_A WORKDIR_B WORKDIR_C --out=DIR \\
        [--labels=A,B,C]

Reads each workdir's `results.json` (its initial training's curve) and writes, in
`DIR`, `loss_normalised.png` (004, 3.6.1: each loss divided by its first value, so
networks of different size compare; the raw losses beside them) and, for classifiers
whose curve holds the training accuracy, `accuracy.png` (train solid, validation
dashed, one colour per run; Figures 4.5, 4.9, 4.13 side by side).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

from jaxshrink.report import plots


def curves(workdirs: Sequence[str], labels: Sequence[str] | None = None) -> dict[str, dict]:
    """``{label: curve}`` of each workdir's `results.json` (label: the folder's name)."""
    labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
    if len(labels) != len(workdirs):
        raise ValueError(f"{len(labels)} labels for {len(workdirs)} workdirs")
    out = {}
    for label, workdir in zip(labels, workdirs):
        path = os.path.join(workdir, "results.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no results.json (is the run finished?)")
        with open(path) as f:
            results = json.load(f)
        curve = results.get("curve")
        if not curve or not curve.get("step"):
            raise ValueError(f"{path}: the run recorded no training curve")
        out[label] = {**curve, "eval_split": results.get("data", {}).get("eval_split", "eval")}
    return out


def draw(workdirs: Sequence[str], out: str, labels: Sequence[str] | None = None) -> list[str]:
    """Writes the overlays of `workdirs` into `out`; returns the paths written."""
    runs = curves(workdirs, labels)
    os.makedirs(out, exist_ok=True)
    written = [
        plots.save_normalised_loss(
            os.path.join(out, "loss_normalised.png"),
            {label: (c["step"], c["loss"]) for label, c in runs.items()},
            title="initial training",
        )
    ]
    with_accuracy = {k: c for k, c in runs.items() if c.get("train_score")}
    if with_accuracy:
        splits = {c["eval_split"] for c in with_accuracy.values()}
        written.append(
            plots.save_accuracy_curves(
                os.path.join(out, "accuracy.png"),
                {k: (c["eval_step"], c["train_score"], c["eval_score"])
                 for k, c in with_accuracy.items()},  # fmt: skip
                title="initial training: accuracy",
                eval_label=splits.pop() if len(splits) == 1 else "eval",
            )
        )
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="finished runs' workdirs")
    parser.add_argument("--out", required=True, help="folder for the pictures")
    parser.add_argument("--labels", default="", help="comma-separated, one per workdir")
    args = parser.parse_args(argv)
    labels = [x for x in args.labels.split(",") if x] or None
    try:
        written = draw(args.workdirs, args.out, labels)
    except (OSError, ValueError) as err:
        raise SystemExit(f"jaxshrink.report.overlay: error: {err}") from None
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
