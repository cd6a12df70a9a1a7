"""Shrink the 2-1000-1 summation network (thesis 003, section 2.7.1).

    python -m jaxshrink.main --config=configs/summation.py          # thesis sizes
    python -m jaxshrink.main --config=configs/summation.py:quick    # a CPU-sized run
    python -m jaxshrink.main --config=configs/summation.py:momentum # 003's optimizer
    python -m jaxshrink.main --config=configs/summation.py:t003     # 003's pruning

Two inputs, one dense layer of 1000 ReLU units, one linear output; y = i1 + i2 with
inputs drawn uniformly from [0, 1]; MSE loss; batch 1000; 10000 steps (003: 10
epochs of 1,000,000 samples). The known optimum is one hidden unit (weights 1, bias
0), so the self-scaling rounds have a known target. The score is 1 / MSE: a round is
kept when the eval MSE grows by at most a factor 1 / threshold (`tasks`).

Optimizer: 003 used Momentum (learning rate 0.01, momentum 0.3) and reports that
the loss "didn't converge to 0"; that is the `momentum` preset. The default is Adam
(1e-3), which converges (the quick preset's network of seed 0 trains to an eval MSE
of 4.6e-7: the baseline score 1 / MSE in `experiments/results/compare_summation_cpu.json`).

`quick`: 20000 samples, batch 100, 1500 steps, 200-step rounds; well under two
minutes on a 2-core CPU. One unit per round cannot empty a 1000-unit layer:

Thesis 003's own pruning (2.8.1): `cycle` (its activation-count cycle with Adam),
`t003` (the same with its Momentum, as it ran), `distorted` and `l1` (its distorted
and regularized variants, added to either): `summation.py:quick,t003,distorted`.
003 reports about 950 of the 1000 units pruned and, after distorted pruning, one
unit left with w1 [0.743, 0.650], b1 7.809, w2 -6.752, b2 7.809
(`docs/results/theses.md` sets jaxshrink's beside them).

`shrink` (e.g. `summation.py:quick,shrink`): many units per round, the way to the
known optimum. Adaptive groups (1, 2, 4, ... units after each accepted round, halved
after a rollback), the smallest-L2-norm units first, every round compared with the
trained network (`reference='baseline'`) and kept while the MSE stays within twice
its value (threshold 0.5; the MSE is ~5e-7 here, so the sums stay exact to ~1e-3),
1000-step rounds so that the last units can re-fit, at most 100 rounds, stop after 4
failed single units in a row. Measured on a 2-core CPU (`quick,shrink`, ~45 s):
1000 -> 2 hidden units in 45 rounds, eval MSE 4.6e-7 -> 6.7e-7.
"""

import ml_collections

from jaxshrink.config import schema as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = config_lib.common_config("regression", "summation")
    c.model.name = "mlp"
    c.model.hidden = (1000,)
    c.model.out_features = 1
    c.model.init_std = 0.0  # Flax's defaults (LeCun normal); 003 names none
    c.model.precision = "highest"
    c.data.train_size = 1_000_000
    c.train.batch_size = 1000
    c.train.initial_steps = 10000
    c.train.eval_every = 1000
    c.train.eval_batch_size = 1000
    c.output.num_examples = 200
    return config_lib.apply_presets(c, PRESETS, arg)


def momentum(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """003's optimizer, which it reports did not converge."""
    c.optim.name = "momentum"
    c.optim.learning_rate = 0.01
    c.optim.momentum = 0.3
    return c


def quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    c.data.train_size = 20000
    c.data.eval_size = 1000
    c.train.batch_size = 100
    c.train.initial_steps = 1500
    c.train.log_every = 250
    c.train.eval_every = 500
    c.minimize.round_steps = 200
    return c


def shrink(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Many units per round, down to the optimum (see the module doc)."""
    c.minimize.group = "adaptive"
    c.minimize.strategy = "l2_norm"
    c.minimize.reference = "baseline"
    c.minimize.threshold = 0.5
    c.minimize.round_steps = 1000
    c.minimize.max_rounds = 100
    c.minimize.max_failures = 4
    return c


def cycle(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Thesis 003's pruning cycle (2.8.1, "vanilla pruning"), with Adam: train, count
    every hidden unit's activations over the training data, prune every unit whose
    count is at or under the activation threshold t = 0, train again, and stop when a
    cycle prunes nothing. No accept test: 003 keeps every cycle's pruning
    (`minimize.threshold=0`, every change kept). A cycle trains one epoch (003: "for
    some epochs"); with `quick`, give `quick` first (`quick,cycle`) so the epoch is
    the quick data's. The counts read at most 100000 training examples: all 1,000,000
    at once would hold 4 GB of pre-activations (`minimize.score_examples`).
    """
    c.minimize.strategy = "activation_count"
    c.minimize.group = "threshold"
    c.minimize.group_threshold = -0.0  # count <= t with t = 0
    c.minimize.threshold = 0.0
    c.minimize.score_split = "train"
    c.minimize.score_examples = min(int(c.data.train_size), 100_000)
    c.minimize.round_steps = max(1, int(c.data.train_size) // int(c.train.batch_size))
    c.minimize.max_rounds = 100
    c.minimize.max_failures = 1
    return c


def t003(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """003's cycle with 003's optimizer (Momentum 0.01, 0.3): as it ran it (2.8.1)."""
    return cycle(momentum(c))


def distorted(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """003's "distorted pruning" (2.8.1): before a cycle retrains, every kernel w gets
    U(-1, 1) * (1 - var(w)) added (`minimize.distort=1`, 003's
    "rand(weights.shape)*(1-var(weights))"). Add it to `cycle` or `t003`."""
    c.minimize.distort = 1.0
    return c


def l1(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """003's "regularized distorted pruning" (2.8.1): an L1 term on the loss "to push
    the high bias and w2 values closer to 0". 003 gives no strength; ours is 1e-5
    (`optim.l1`). Add it to `cycle,distorted` or `t003,distorted`."""
    c.optim.l1 = 1e-5
    return c


PRESETS = {
    "momentum": momentum,
    "quick": quick,
    "shrink": shrink,
    "cycle": cycle,
    "t003": t003,
    "distorted": distorted,
    "l1": l1,
}
