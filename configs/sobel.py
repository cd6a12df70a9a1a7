"""Mimic the Sobel edge detector (thesis 001, sections 2.2-2.4).

    python -m jaxshrink.main --config=configs/sobel.py          # the thesis's sizes
    python -m jaxshrink.main --config=configs/sobel.py:quick    # a CPU-sized run

Default: 256x256 crops, batch 3, MSE loss, 10000 initial Adam steps, then CosMax
minimization (threshold 0.95, 2000 steps per round) on the built-in photographs
(or `--config.data.source=folder --config.data.folder=.../JPEGImages` for VOC2012,
the thesis's data). On a 2-core CPU the thesis network trains at about 14 steps/s at
256x256 (`experiments/results/bench_auto_cpu.json`): about 12 minutes for the 10000
initial steps, then minutes per round, so use a GPU for this one.

`quick` (`jaxshrink.config.schema.make_quick`): 64x64 crops, 400 / 48 images, 1500
initial steps, 500 steps per round; a minute or two on a 2-core CPU. It prints a
progress line every 250 steps (eval F1 about 0.40 after training; Sobel maps are
mostly dark, which keeps F1 low), one line per round, and a summary with the
kept-filter matrix (4 of 10 hidden filters removed, F1 above the trained score: the
README shows the output). The workdir gets `results.json`, the sample, mask, filter
output and timeline pictures, and `export/`.
"""

from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None):
    return config_lib.get_preset("sobel", arg)
