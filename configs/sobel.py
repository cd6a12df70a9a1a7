"""Mimic the Sobel edge detector (thesis 001, sections 2.2-2.4).

    python -m jaxshrink.main --config=configs/sobel.py          # the thesis's sizes
    python -m jaxshrink.main --config=configs/sobel.py:quick    # a CPU-sized run

Default: 256x256 crops, batch 3, MSE loss, 10000 initial Adam steps, then CosMax
minimization (threshold 0.95, 2000 steps per round) on the built-in photographs
(or `--config.data.source=folder --config.data.folder=.../JPEGImages` for VOC2012,
the thesis's data). On a 2-core CPU a step at 256x256 takes about 0.2 s (10000
steps: about 35 minutes before minimization), so use a GPU for this one.

`quick`: 64x64 crops, 1500 initial steps, 300 steps per round; about 60 s on a
2-core CPU. It prints a progress line every 250 steps (eval F1 about 0.36 after
training; Sobel maps are mostly dark, which keeps F1 low), one line per round,
and a summary with the kept-filter matrix (measured: 5 of 10 hidden filters
removed, F1 above the trained score). The workdir gets `results.json`,
`samples_trained.png`, `samples_minimized.png` and `export/`.
"""

from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None):
    return config_lib.get_preset("sobel", arg)
