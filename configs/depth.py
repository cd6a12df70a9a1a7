"""Depth and width found by the search, from above (layers removed) and from below (grown).

    python -m jaxshrink.main --config=configs/depth.py          # 256x256, 10 seeds
    python -m jaxshrink.main --config=configs/depth.py:quick    # a CPU-sized run

The edge FCN given twice the thesis's depth: 6 'SAME' 5x5 convolutions of 5 filters
(`model.bypass=True`: each hidden 5-to-5 layer can be bypassed). For each edge target
(Sobel with MSE, Canny with the soft F1 loss) every seed runs three variants in one
batch: 'thesis' (the thesis's 3-layer network inside the envelope, widths only),
'depth' (the whole envelope, layers first by the 'cost' rule, then units with CosMax)
and 'grow' (2 filters per layer at the start, grown one unit per round while it pays,
then minimized like 'depth'). The workdir gets `depth.csv` (one row per run: final
layers, widths, score ratio), `depth.md` (the tables) and `results.json`.

`quick`: 3 seeds on 32x32 crops, 2000 initial steps, 200-step rounds; 12 minutes on
2 CPU cores when measured (`experiments/results/depth/`, docs/results/depth.md).
"""

from jaxshrink.experiments import depth


def get_config(arg: str | None = None):
    return depth.get_preset(arg)
