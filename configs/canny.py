"""Mimic the Canny edge detector (thesis 001, sections 2.2-2.4).

    python -m jaxshrink.main --config=configs/canny.py
    python -m jaxshrink.main --config=configs/canny.py:quick

Default: 256x256 crops, batch 3, the soft F1 loss E/(2TP+E), 10000 initial steps,
then CosMax minimization (threshold 0.95, 2000 steps per round).
Targets come from `skimage.feature.canny` (sigma sqrt(2), MATLAB's default, which the
thesis's MATLAB scripts used; skimage's default thresholds), see
`config.data.canny_*`. Canny is the harder task (its later steps are not
convolutions), so scores are lower than for Sobel.

`quick` (`jaxshrink.config.schema.make_quick`): 64x64 crops, 400 / 48 images, 1500
initial steps, 500 steps per round; a minute or two on a 2-core CPU. Prints progress
every 250 steps (eval F1 about 0.48 after training), one line per round and a summary
(5 of 10 hidden filters removed, F1 at 103% of the trained score).
"""

from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None):
    return config_lib.get_preset("canny", arg)
