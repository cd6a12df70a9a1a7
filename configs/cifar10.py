"""Shrink a CIFAR-10 classifier (thesis 004, Tables 3.3-3.5: Models A, B and C).

    python -m jaxshrink.main --config=configs/cifar10.py                 # Model A
    python -m jaxshrink.main --config=configs/cifar10.py:b               # Model B
    python -m jaxshrink.main --config=configs/cifar10.py:c               # Model C
    python -m jaxshrink.main --config=configs/cifar10.py:t003            # thesis 003's
    python -m jaxshrink.main --config=configs/cifar10.py:quick \\
        --config.data.source=folder --config.data.folder=PATH/cifar-10-batches-py

Data: CIFAR-10 through a prepared `tfds` dataset (`tfds build cifar10
--file_format=array_record` on a machine with internet) or the authors'
`cifar-10-batches-py` folder (`data.source=folder`); neither ships in a package, so
without one the run stops at once with one line saying how to prepare it. Pixels are
scaled to [-1, 1] and the training set's mean image is subtracted (004 3.5.1).

Networks (5x5 'SAME' convolutions, 2x2 max-pooling, ReLU, dropout before every hidden
dense layer's successor, Adam), trained as Tables 4.2-4.4 print:

    Learning rate (eta) 0.0005, Regularization (lambda) 0.001, Decay rate 1 (beta1) 0.9,
    Decay rate 2 (beta2) 0.999, Minibatch size (B) 100 (Model C: 50), Dropout rate (p) 0.5

with 004's decoupled weight decay (eq. 2.41, `optim.weight_decay_mode`), its
initialisation (2.6, A.4: `model.init_scheme='he'`) and p read as the probability of
keeping a unit (eq. 2.42), as `configs/mnist.py` explains. Split (4.2): 90% of the
training data to train on, 10% for validation (`data.validation_fraction=0.1`), which
every score of the run reads; the test set is scored before and after only. Steps:
Models A and B train 20 epochs, C 40 ("run for 40 epochs rather than 20", 4.2.4.3):
20 x 45000 / 100 = 9000 steps for A and B, 40 x 45000 / 50 = 36000 for C.

* A (Table 3.3): conv 32, pool, conv 64, pool, dense 1024, dropout, dense 10.
* B (Table 3.4): conv 96, pool, conv 192, pool, dense 2048, dropout, dense 2048,
  dropout, dense 10 (about 30 million parameters).
* C (Table 3.5): B with a second convolution before each pooling.

`t003` (thesis 003, 2.7.4 and Table 2.4): conv 64 + batch norm, max-pool 3 stride 2
('SAME'), conv 64 + batch norm, pool, dense 384 + batch norm, dense 192 + batch norm,
dense 10; every convolution and dense layer has a bias; truncated normal init (std
0.1); Adam with its default settings. Inputs are pixels / 255, distorted on the device
inside the compiled step (`augment`, section ``augment``): random 24x24 crop,
left-right flip, brightness +-63/255, contrast in [0.2, 1.8], then per-image
standardisation; evaluation takes the central 24x24 crop, standardised. 003 does not
give its steps or batch ("N steps with batch size M"): ours are batch 128 (the
TensorFlow CIFAR-10 tutorial's) and 10000 steps.

`quick`: the chosen model (A by default) at an eighth of its widths on 2000 / 500
images; about a minute on a 2-core CPU once the data is there.

Runs per vmapped group (`batch.group_size`) for B and C, about 30 million parameters
each: one run holds params, Adam's two moments and the gradient (4 x 4 bytes per
parameter, about 0.5 GB) plus its activations and XLA's temporaries. XLA's memory
analysis of one training step (`experiments/results/stepbench_cifar_b_memory_cpu.json`
and `stepbench_cifar_c_memory_cpu.json`) gives about 1.1 GiB per run of B and 1.2 GiB
of C in a group of 8, 9.0 and 9.6 GiB per group. The `b` and `c` presets set
`group_size` 8: inside a 24 GB CPU machine's memory and far inside an 80 GB GPU (which
could hold roughly 60 runs of B by the same count, not measured there).
"""

import ml_collections

from jaxshrink.config import schema as config_lib
from jaxshrink.core import augment

MODELS = {
    "a": ("conv:32:5", "maxpool:2", "conv:64:5", "maxpool:2", "dense:1024", "dropout:0.5",
          "dense:10"),
    "b": ("conv:96:5", "maxpool:2", "conv:192:5", "maxpool:2", "dense:2048", "dropout:0.5",
          "dense:2048", "dropout:0.5", "dense:10"),
    "c": ("conv:96:5", "conv:96:5", "maxpool:2", "conv:192:5", "conv:192:5", "maxpool:2",
          "dense:2048", "dropout:0.5", "dense:2048", "dropout:0.5", "dense:10"),
}  # fmt: skip


THESIS_003 = (
    "conv:64:5:bn", "maxpool:3:s2:same", "conv:64:5:bn", "maxpool:3:s2:same",
    "dense:384:bn", "dense:192:bn", "dense:10",
)  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.common_config("classification", "cifar10")
    c.model.name = "cnn"
    c.model.layers = MODELS["a"]
    c.model.init_std = 0.0  # not read: 004's initialisation below (`init_scheme`)
    c.model.precision = "highest"
    config_lib.thesis_004_training(c, learning_rate=5e-4, validation_fraction=0.1)
    c.train.initial_steps = 9000  # 20 epochs of 45000 at batch 100
    c.train.eval_every = 900
    c.train.eval_batch_size = 250
    c.output.num_examples = 8
    return config_lib.apply_presets(c, PRESETS, arg)


def _model(name: str):
    def choose(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        c.model.layers = MODELS[name]
        if name == "c":  # Table 4.4 and 4.2.4.3: batch 50, 40 epochs
            c.train.batch_size = 50
            c.train.initial_steps = 36000
            c.train.eval_every = 1800
        if name in ("b", "c"):
            c.batch.group_size = 8  # about 30M parameters per run: see the docstring
        return c

    return choose


def thesis_003(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Thesis 003's CIFAR-10 network (Table 2.4), its distortions and training."""
    c.model.layers = THESIS_003
    c.model.init_scheme = "default"
    c.model.init_std = 0.1  # truncated normal, mean 0, std 0.1
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3  # Adam's defaults
    c.optim.weight_decay = 0.0
    c.optim.weight_decay_mode = "l2"
    c.data.normalize = "unit"  # the distortions work on [0, 1] pixels
    c.data.validation_fraction = 0.0  # 003 scores on the test set
    c.augment = augment.thesis_003_cifar()
    c.train.batch_size = 128
    c.train.initial_steps = 10000
    c.train.eval_every = 1000
    return c


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


PRESETS = {
    "a": _model("a"),
    "b": _model("b"),
    "c": _model("c"),
    "t003": thesis_003,
    "quick": quick,
}
