"""Shrink a small U-Net written in plain Flax on the edge task (thesis 001's Sobel data).

    python -m jaxshrink.main --config=configs/unet.py          # 256x256 crops
    python -m jaxshrink.main --config=configs/unet.py:quick    # a CPU-sized run

The network is `jaxshrink.core.models.zoo.UNet` (Ronneberger et al. 2015): per level two
3x3 convolutions with ReLU, max-pooling, a bottleneck, and per level back up a 2x2
transposed convolution whose output is concatenated after the skip, then two more
convolutions; a 1x1 convolution gives the edge map. It takes no masks: its layers are
its channel groups (`Model.wrap`). A concatenation keeps each input's channels in
their own group, at their offset in the next convolution's input axis, so a skip's
channels and the upsampled ones shrink separately.

The task is thesis 001's Sobel mimicry (`configs/sobel.py`: its data, MSE loss, F1
score, Adam, CosMax rounds at threshold 0.95), with the U-Net in place of the 3-layer
network, 10 % of the live channels per round. Widths 16 and 32 with a bottleneck of
64 by default.

`quick` (`jaxshrink.config.schema.make_quick`): 64x64 crops, widths (8, 16), 600
initial steps, at most 8 rounds of 100 steps, one channel per round; under a minute
on a 2-core CPU.
"""

import ml_collections

from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.base_config("sobel")
    c.model = config_lib.model_section()
    c.model.name = "unet"
    c.model.widths = (16, 32, 64)
    c.model.out_channels = 1
    c.minimize.group = "fraction"
    c.minimize.group_fraction = 0.1
    # The deploy stage times the crops the network trained on: a plain module's smaller
    # program is written for its own example shape, not the thesis's 256 x 256 images.
    c.deploy.input_shape = ()
    return config_lib.apply_presets(c, PRESETS, arg)


def quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """64x64 crops, widths (8, 16), 600 steps, 8 rounds of 100: under a minute on a CPU."""
    config_lib.make_quick(c)
    c.model.widths = (8, 16)
    c.train.initial_steps = 600
    c.train.log_every = 200
    c.train.eval_every = 300
    c.minimize.round_steps = 100
    c.minimize.max_rounds = 8
    # 10 % of 72 channels at once (7) cost this small network a third of its F1 in
    # every trial; one channel per round, as the thesis does, passes the rule.
    c.minimize.group = "one"
    return c


PRESETS = {"quick": quick}
