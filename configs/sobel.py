"""Mimic the Sobel edge detector (thesis 001, sections 2.2-2.4).

    python -m jaxshrink.main --config=configs/sobel.py          # the thesis's sizes
    python -m jaxshrink.main --config=configs/sobel.py:quick    # a CPU-sized run

Default: 256x256 crops, batch 3, MSE loss, 10000 initial Adam steps on the built-in
photographs (or `--config.data.source=folder --config.data.folder=.../JPEGImages`
for VOC2012, the thesis's data). On a 2-core CPU a step at 256x256 takes about a
quarter of a second, so use a GPU for this one.

`quick`: 64x64 crops, 1500 steps; about a minute on a 2-core CPU. It prints a
progress line every 250 steps and ends with the eval F1 (about 0.8); the workdir
gets `results.json` and `samples_trained.png` (input / target / output).
"""

from jaxshrink import config as config_lib


def get_config(arg: str | None = None):
    config = config_lib.base_config("sobel")
    if arg == "quick":
        config_lib.make_quick(config)
    elif arg:
        raise ValueError(f"config argument: unknown preset {arg!r}; allowed: 'quick' or none")
    return config
