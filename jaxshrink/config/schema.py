"""The config schema: the theses' defaults, shared by `configs/*.py`.

Every field a run reads is created here with its thesis's value (section in
brackets; seed 001 unless another thesis is named), so a config file only states
what it changes. Departures from a thesis are options whose comment says why.
`jaxshrink.config.validate` checks a config in one place before any work starts, and
`jaxshrink.config.resolve` then replaces its automatic values (the markers: '' loss,
-1 rules, 'auto', None) by the concrete ones a run uses.

Sections: `task` (`tasks.TASKS`), `data` (`data.DATASETS`), `model`
(`models.FAMILIES`), `optim` (`optim.OPTIMIZERS`), `train`, `minimize`
(`strategies.STRATEGIES`), `batch` (`batching`), `output`, `deploy`. An experiment
adds its own section (`sweep`, `correlation`, `relearn`, `depth`), whose defaults and
presets live in its module (`jaxshrink.experiments.sweep`, ...).
"""

from __future__ import annotations

import ml_collections

from jaxshrink import data
from jaxshrink.core import augment, errors

EDGE_LOSSES = {
    # Sobel targets are continuous: the thesis trains them with L1/L2 losses and notes
    # that squaring "achieves shorter training times" (2.3.1), so MSE.
    "sobel": "mse",
    # Canny targets are binary: the thesis introduces the soft F1 loss for them (2.3.1).
    "canny": "f1",
}


def model_section() -> ml_collections.ConfigDict:
    """The `model` section's shared fields, without a family's (a config that swaps the
    network starts from this)."""
    return _model()


def _model() -> ml_collections.ConfigDict:
    # The fields of every family (`models.FAMILIES`); a config adds `name` and the
    # family's own (`layers`, `init_std`, ...). A model of your own reads none of them.
    m = ml_collections.ConfigDict()
    # True: a hidden layer with no live unit passes its input on, so a minimization can
    # remove whole layers (`minimize.depth`); False: the thesis's fixed depth.
    m.bypass = False
    # 'highest' = true float32 convolutions; 'default' lets GPUs use TF32 (faster).
    m.precision = "highest"
    # How convolutions are computed (`jaxshrink.core.convs`; the same function, different
    # float rounding): 'auto' = 'direct' on a CPU for few-channel layers (shifted planes
    # times kernel scalars; the FCN's host step 1.1-2.1x faster than with XLA's in
    # experiments/results/bench_direct_cpu.json, more since: README),
    # XLA's elsewhere; or 'xla', 'taps' (per-tap kernel gradient), 'direct' everywhere;
    # for batched runs on GPUs, 'packed' / 'packed:K' (K runs per block-diagonal group)
    # and 'pallas' (a Pallas kernel); `experiments/gpu_check.py` measures them.
    # `jaxshrink.config.resolve` records which one 'auto' is (`convs.auto_form`).
    m.conv = "auto"
    # Chain families: 'default' (`init_std` > 0: a truncated normal of that std; 0:
    # Flax's LeCun normal) or 'he' (thesis 004's, 2.6 and A.4: std sqrt(2 / fan-in),
    # the first layer sqrt(1 / fan-in)).
    m.init_scheme = "default"
    return m


def _optim() -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    o.name = "adam"  # see `optim.OPTIMIZERS`
    # Thesis 001 uses TensorFlow 1.6's Adam and names no hyper-parameters, so these
    # are that optimizer's defaults.
    o.learning_rate = 1e-3
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    o.momentum = 0.0  # momentum / rmsprop only
    o.decay = 0.9  # rmsprop only: decay of the mean square (TensorFlow 1's default)
    o.weight_decay = 0.0  # L2: loss + weight_decay / 2 * sum of squared kernels (004 2.5.1)
    # How the decay enters: 'l2' (the loss term's gradient, before the optimizer) or
    # 'decoupled' (004's update, eq. 2.41: w <- (1 - lr * weight_decay) w - lr * step).
    o.weight_decay_mode = "l2"
    o.l1 = 0.0  # L1: loss + l1 * sum |w|, biases too (003's "regularized" pruning, 2.8.1)
    o.frozen_layers = ()  # layers never trained (static, via optax.masked)
    return o


def _minimize() -> ml_collections.ConfigDict:
    m = ml_collections.ConfigDict()
    m.enabled = True
    m.strategy = "cosine"  # CosMax, the thesis's choice [4.1, 4.3]
    m.aggregation = "max"  # how a unit's similarities to its layer reduce
    m.absolute = False  # compare |cos| instead of signed cos
    m.mode = "disabled_frozen"  # [2.4.1]
    m.reinit = False  # redraw the tested unit's weights [2.4]
    # Keep a change when new/old score >= threshold; the thesis tests 0.85, 0.9,
    # 0.95, 0.98 and 1.0 [2.4.2] and names no default, so the middle one.
    m.threshold = 0.95
    m.reference = "last_accepted"  # "old" score: last accepted [2.4.2] or "baseline"
    m.round_steps = 2000  # [2.4.2]
    m.max_rounds = -1  # -1: the strategy's rule (random: 10) [4.3]
    m.max_failures = -1  # -1: the strategy's rule (cosine: 2) [4.3]
    # Units per round (not in the thesis, which disables one): 'auto' (the strategy's
    # rule; 'one' for the thesis's three), 'one', 'fixed' (group_size), 'fraction'
    # (group_fraction of the live candidates), 'threshold' (every candidate whose
    # score >= group_threshold) or 'adaptive' (starts at group_size, doubles after an
    # accepted round, halves after a rollback, down to one).
    m.group = "auto"
    m.group_size = 1
    m.group_fraction = 0.1
    m.group_threshold = ml_collections.config_dict.placeholder(float)  # None: the strategy's
    # Thesis 003's "distorted" pruning (2.8.1), off by default: before a round
    # retrains, every kernel w gets distort * U(-1, 1) * (1 - var(w)) added
    # (`minimize.distort`; 003 uses distort = 1), disabled units' kernels excepted.
    # Its "regularized" pruning is `optim.l1`.
    m.distort = 0.0
    # What the scores read: 'eval' (the first eval batch) or 'train' (the first
    # `score_examples` training examples, 0 = all: thesis 003 counts activations over
    # the training data, 2.8.1; all of them hold every pre-activation in memory).
    m.score_split = "eval"
    m.score_examples = 0
    # Depth and growth (not in the thesis's final implementation, whose aim was also
    # "minimizing the number of layers"; see `minimize`): 'off' keeps the thesis's
    # widths-only search; 'cost' or 'fewest' (`strategies.LAYER_RULES`) first tries to
    # bypass whole layers (needs a model with bypassable layers, `model.bypass`).
    m.depth = "off"
    # Grow before shrinking: a run started narrower than its envelope
    # (`train.start_widths`) enables one fresh unit per round while it raises the score
    # by more than `grow_margin` (relative), then shrinks.
    m.grow = False
    m.grow_margin = 0.01
    return m


def _batch() -> ml_collections.ConfigDict:
    # How a batch of runs executes (see `jaxshrink.search.batching`). A run's numbers do not
    # depend on the devices or processes (`jaxshrink.runtime.determinism`); the method,
    # group size and steps change only their rounding. 'auto' picks the measured faster one.
    b = ml_collections.ConfigDict()
    b.method = "auto"  # 'loop' (lax.map over runs), 'vmap', or 'auto'
    b.group_size = 0  # vmap: runs per vmapped group (0 = all; lower to save memory)
    b.grad = "auto"  # vmap: 'sum' (grad of summed loss) or 'vmap' (vmap of grad)
    b.devices = 0  # local devices the run axis is sharded over (0 = all)
    # Where training steps loop: 'compiled' (inside one program per chunk of steps),
    # 'host' (one compiled step called from Python per step and run), or 'auto' (the
    # measured faster one, `batching.resolve_steps`: 'host' for one process on one CPU
    # device when the training step holds XLA convolutions, else 'compiled').
    b.steps = "auto"
    # XLA's CPU thread pool (0: the machine's cores, at least the devices of a process):
    # its size sets the rounding of XLA's CPU convolutions, so a fixed N gives the same
    # bits on every layout of up to N devices per process and on every machine.
    b.cpu_threads = 0
    # GPUs: deterministic kernels (some sum in a different order on every call); a speed
    # cost. CPUs are deterministic already.
    b.deterministic = False
    return b


def _deploy() -> ml_collections.ConfigDict:
    # After a run: quantize, factorize, export to ONNX and time (`jaxshrink.deploy.stage`).
    # Off by default: the export and the timings take minutes on a CPU.
    d = ml_collections.ConfigDict()
    d.enabled = False
    d.bits = (8, 7, 6, 5, 4, 3, 2)  # weight bit widths scored and sized [003 2.1]
    d.quant_bits = 0  # the quantized variant's width: 0 = the smallest that clears the rule
    d.symmetric = True  # symmetric grid (zero point 0); False: asymmetric (min/max)
    d.per_channel = True  # one scale per output unit; False: one per kernel
    d.lowrank = True  # SVD factorization, rank per layer by the threshold rule [003 2.4]
    d.finetune_steps = 0  # Adam steps on the factors after factorizing (0: none)
    # Keep a cheaper form when its score >= threshold * the last accepted one (the unit
    # search's rule); None: minimize.threshold.
    d.threshold = ml_collections.config_dict.placeholder(float)
    d.onnx = True  # write and check ONNX files, and time them with onnxruntime
    d.onnxruntime_int8 = True  # also onnxruntime's static int8 form (integer kernels)
    d.opset = 21
    d.input_shape = ()  # latency inputs, one example; (): the model's own input shape
    d.batch_sizes = (1, 64)  # latency batches: one example, and a throughput batch
    d.repeats = 100  # timed calls per latency (median), after 2 untimed ones
    d.budget_s = 10.0  # stop timing one latency after this many seconds (>= 3 calls)
    d.threads = 0  # onnxruntime intra-op threads (0: its default, one per core)
    return d


def common_config(task: str, dataset: str) -> ml_collections.ConfigDict:
    """The sections every run has, with thesis 001's training and minimization."""
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = 0
    c.data = data.default_config(dataset)
    c.model = _model()
    c.optim = _optim()
    c.train = ml_collections.ConfigDict()
    c.train.loss = ""  # '' = the task's default (`tasks.TASKS[task].losses[0]`)
    c.train.batch_size = 3  # [2.2]
    c.train.initial_steps = 10000  # [2.4.2]
    c.train.log_every = 500  # progress line every this many steps
    c.train.eval_every = 2000  # eval-split score every this many steps (thesis: ~10x rarer)
    c.train.eval_batch_size = 16  # examples per compiled eval batch (memory only)
    # SIGTERM or SIGINT: a checkpoint at the next end of a chunk of `log_every` steps
    # (rounds included), then exit 75; no such point within this many seconds: exit 76,
    # the previous checkpoint stands (`jaxshrink.runtime.preemption`).
    c.train.grace_seconds = 30.0
    # Units alive at the start, per maskable layer (the first ones; 0 bypasses a
    # bypassable layer): a run that starts small inside its envelope and may grow
    # (`minimize.grow`). (): every unit, the thesis's start.
    c.train.start_widths = ()
    c.minimize = _minimize()
    # Distortions of the train images inside the compiled step (`augment`); all off.
    c.augment = augment.default_config()
    c.batch = _batch()
    c.output = ml_collections.ConfigDict()
    c.output.num_examples = 3  # eval examples drawn with their predictions
    # A classifier's confusion matrix: 'predicted' (thesis 004, 3.6.3: rows the
    # predicted classes, each divided by its total), 'true' (rows the true classes,
    # each divided by its total) or 'none' (colour = count).
    c.output.confusion_normalize = "predicted"
    c.deploy = _deploy()
    return c


def base_config(dataset: str) -> ml_collections.ConfigDict:
    """Thesis 001's edge-detection run for `dataset` ('sobel' or 'canny')."""
    if dataset not in EDGE_LOSSES:
        raise errors.ConfigError(
            f"data.dataset: unknown edge target {dataset!r}; allowed: {sorted(EDGE_LOSSES)}"
        )
    c = common_config("edges", dataset)  # crop 256 [2.2]
    c.model.name = "fcn"
    c.model.num_layers = 3  # [2.3]
    c.model.num_filters = 5  # masks per hidden layer [2.3]
    c.model.kernel_size = 5  # [2.3]
    c.model.out_channels = 1  # one edge map
    c.model.init_std = 0.05  # truncated normal, mean 0 [2.3]
    c.train.loss = EDGE_LOSSES[dataset]
    c.deploy.input_shape = (256, 256, 1)  # the thesis's image size [2.2], whatever the crops
    return c


def thesis_004_training(
    c: ml_collections.ConfigDict, *, learning_rate: float, validation_fraction: float
) -> ml_collections.ConfigDict:
    """Sets thesis 004's training in place (Tables 4.1-4.4, which differ only in the
    rate, the batch of Model C and the split): Adam with betas 0.9 / 0.999, the
    regularisation 1e-3 as eq. 2.41's decoupled decay, batch 100, the initialisation of
    2.6 and A.4, and a validation split of the training data (4.1, 4.2)."""
    c.model.init_scheme = "he"
    c.optim.name = "adam"
    c.optim.learning_rate = learning_rate
    c.optim.b1, c.optim.b2 = 0.9, 0.999
    c.optim.weight_decay = 1e-3
    c.optim.weight_decay_mode = "decoupled"
    c.train.batch_size = 100
    c.data.validation_fraction = validation_fraction
    return c


def make_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks `c` in place to a run of about a minute on a 2-core CPU."""
    c.data.crop_size = 64
    c.data.train_size = 400
    c.data.eval_size = 48
    c.train.initial_steps = 1500
    c.train.log_every = 250
    c.train.eval_every = 500
    # 1500 initial steps leave the network further from convergence than the thesis's
    # 10000, and 300-step rounds (its 1:5 ratio) rolled back every first proposal on
    # the built-in data; 500 steps let a round recover.
    c.minimize.round_steps = 500
    return c


PRESETS = {"quick": make_quick}


def narrow_layers(layers, factor: int, minimum: int = 4) -> tuple[str, ...]:
    """Layer strings with every maskable layer but the output `factor` times narrower.

    A quick preset keeps a network's shape (kinds, kernels, poolings) at a CPU size.
    """
    maskable = [i for i, t in enumerate(layers) if t.split(":")[0] in ("conv", "convT", "dense")]
    out = []
    for i, token in enumerate(layers):
        kind, *args = token.split(":")
        if i in maskable[:-1]:
            args[0] = str(max(minimum, int(args[0]) // factor))
        out.append(":".join([kind, *args]))
    return tuple(out)


def apply_presets(config, presets: dict, arg: str | None) -> ml_collections.ConfigDict:
    """Applies the presets named in `arg` ('a,b': a then b; None: none) to `config`."""
    for name in (arg or "").split(","):
        if not name:
            continue
        if name not in presets:
            raise errors.ConfigError(
                f"config argument: unknown preset {name!r}; allowed: {sorted(presets)}"
            )
        presets[name](config)
    return config


def get_preset(dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`base_config(dataset)` with the presets named by `arg` ('quick', or None)."""
    return apply_presets(base_config(dataset), PRESETS, arg)
