"""Shrink a CIFAR-10 classifier (thesis 004, Tables 3.3-3.5: Models A, B and C).

    python -m jaxshrink.main --config=configs/cifar10.py                 # Model A
    python -m jaxshrink.main --config=configs/cifar10.py:b               # Model B
    python -m jaxshrink.main --config=configs/cifar10.py:c               # Model C
    python -m jaxshrink.main --config=configs/cifar10.py:quick \\
        --config.data.source=folder --config.data.folder=PATH/cifar-10-batches-py

Data: CIFAR-10 through a prepared `tfds` dataset (`tfds build cifar10
--file_format=array_record` on a machine with internet) or the authors'
`cifar-10-batches-py` folder (`data.source=folder`); neither ships in a package, so
without one the run stops at once with one line saying how to prepare it. Pixels are
scaled to [-1, 1] and the training set's mean image is subtracted (004 3.5.1).

Networks (5x5 'SAME' convolutions, 2x2 max-pooling, ReLU, dropout 0.5 before every
hidden dense layer's successor, Adam; 004 found its hyper-parameters "similar to that
of the successful MNIST trials", so they are `configs/mnist.py`'s):

* A (Table 3.3): conv 32, pool, conv 64, pool, dense 1024, dropout, dense 10.
* B (Table 3.4): conv 96, pool, conv 192, pool, dense 2048, dropout, dense 2048,
  dropout, dense 10 (about 30 million parameters).
* C (Table 3.5): B with a second convolution before each pooling.

Thesis 003's CIFAR network (Table 2.4: batch norm, 3x3/2 pooling, on-device
distortions) needs batch-norm state, which is not implemented yet.

`quick`: Model A at an eighth of its widths on 2000 / 500 images; about a minute on
a 2-core CPU once the data is there.
"""

import ml_collections

from jaxshrink import config as config_lib

MODELS = {
    "a": ("conv:32:5", "maxpool:2", "conv:64:5", "maxpool:2", "dense:1024", "dropout:0.5",
          "dense:10"),
    "b": ("conv:96:5", "maxpool:2", "conv:192:5", "maxpool:2", "dense:2048", "dropout:0.5",
          "dense:2048", "dropout:0.5", "dense:10"),
    "c": ("conv:96:5", "conv:96:5", "maxpool:2", "conv:192:5", "conv:192:5", "maxpool:2",
          "dense:2048", "dropout:0.5", "dense:2048", "dropout:0.5", "dense:10"),
}  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.common_config("classification", "cifar10")
    c.model.name = "cnn"
    c.model.layers = MODELS["a"]
    c.model.init_std = 0.0  # Flax's defaults (LeCun normal); 004 names no std
    c.model.precision = "highest"
    c.optim.weight_decay = 1e-4
    c.train.batch_size = 50
    c.train.initial_steps = 10000
    c.train.eval_every = 1000
    c.train.eval_batch_size = 250
    c.output.num_examples = 8
    return config_lib.apply_presets(c, PRESETS, arg)


def _model(name: str):
    def choose(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        c.model.layers = MODELS[name]
        return c

    return choose


def quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An eighth of every width, 2000 / 500 images, 400 steps, at most 10 rounds."""
    c.model.layers = config_lib.narrow_layers(c.model.layers, 8)
    c.data.train_size, c.data.eval_size = 2000, 500
    c.train.batch_size = 32
    c.train.initial_steps = 400
    c.train.log_every = 100
    c.train.eval_every = 200
    c.minimize.round_steps = 50
    c.minimize.max_rounds = 10
    return c


PRESETS = {"a": _model("a"), "b": _model("b"), "c": _model("c"), "quick": quick}
