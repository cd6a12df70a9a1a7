"""Config validation, in one place, before any work starts.

`validate(config)` checks every field a run reads against the registries that define
the allowed values (`tasks.TASKS`, `data.DATASETS`, `models.FAMILIES`,
`optim.OPTIMIZERS`, `strategies.STRATEGIES`, ...) and builds the model once, without
allocating it, so sizes that cannot work (a crop smaller than a kernel, a pooling or
the UIQI window) are caught here and not after minutes of compute. Every problem is
one `errors.ConfigError` line naming the field, its value and what is allowed; the
command line prints it and exits with status 2. `check_workdir` does the same for
the output folder. The modules that use the values trust them.
"""

from __future__ import annotations

import math
import os

import ml_collections

from jaxshrink import data
from jaxshrink.config import schema as config_lib
from jaxshrink.core import augment, convs, errors, metrics, models, optim, tasks
from jaxshrink.core.models import sequential
from jaxshrink.deploy import onnx as onnx_export
from jaxshrink.search import batching, minimize, strategies


def _check(ok: bool, field: str, value, allowed: str) -> None:
    if not ok:
        raise errors.ConfigError(f"{field}: got {value!r}; allowed: {allowed}")


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _int(c, field: str, minimum: int = 1) -> None:
    section, name = field.split(".")
    value = c[section][name]
    _check(_is_int(value, minimum), field, value, f"an integer >= {minimum}")


def _one_of(value, field: str, allowed) -> None:
    _check(value in allowed, field, value, str(tuple(allowed)))


def _finite_positive(value, field: str) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    _check(ok, field, value, "a finite number > 0")


def validate(c: ml_collections.ConfigDict, model=None) -> ml_collections.ConfigDict:
    """Checks `c` (see the module docstring); returns it unchanged.

    With `model` (a researcher's own `models.Model`), `c.model` is not read; the
    model's input shape must be the data's.
    """
    _one_of(c.get("task"), "task", tasks.TASKS)
    task = tasks.TASKS[c.task]
    _one_of(c.data.get("dataset"), "data.dataset", data.DATASETS)
    _one_of(c.data.get("source"), "data.source", data.DATASETS[c.data.dataset].SOURCES)
    if model is None:
        _check_model(c)
    _check_optim(c)
    _one_of(c.train.loss or task.losses[0], "train.loss", task.losses)
    for field in ("train.batch_size", "train.log_every", "train.eval_every"):
        _int(c, field)
    _int(c, "train.eval_batch_size")
    _int(c, "train.initial_steps", 0)
    _check_minimize(c)
    b = c.batch
    _one_of(b.method, "batch.method", batching.METHODS)
    _one_of(b.grad, "batch.grad", batching.GRADS)
    _one_of(b.get("steps", "auto"), "batch.steps", batching.STEPS)
    _int(c, "batch.group_size", 0)
    _int(c, "batch.devices", 0)
    if "sweep" in c:
        _int(c, "sweep.num_seeds")
        for name in c.sweep.strategies:
            _one_of(name, "sweep.strategies", strategies.STRATEGIES)
        for t in c.sweep.thresholds:
            _check(0.0 < t <= 1.0, "sweep.thresholds", t, "ratios in (0, 1]")
        # A repeated name would pair a seed with itself in the tests, after the compute.
        for field in ("strategies", "thresholds"):
            values = tuple(c.sweep[field])
            ok = 0 < len(values) == len(set(values))
            _check(ok, f"sweep.{field}", values, "a non-empty list without repeats")
        _one_of(c.sweep.get("design"), "sweep.design", config_lib.SWEEP_DESIGNS)
    if "correlation" in c:
        for field in ("correlation.repetitions", "correlation.second_steps"):
            _int(c, field)
        _int(c, "correlation.eval_every")
    if "relearn" in c:
        _int(c, "relearn.repetitions")
        _check(len(c.relearn.modes) > 0, "relearn.modes", c.relearn.modes, str(minimize.MODES))
        for mode in c.relearn.modes:
            _one_of(mode, "relearn.modes", minimize.MODES)
        _check(len(c.relearn.fills) > 0, "relearn.fills", c.relearn.fills, "('zero', 'reinit')")
        for how in c.relearn.fills:
            _one_of(how, "relearn.fills", ("zero", "reinit"))
    _check_shapes(c, model)
    if c.get("deploy") is not None and c.deploy.enabled:
        _check_deploy(c, model)
    return c


def _check_deploy(c, model=None) -> None:
    d = c.deploy
    bits = tuple(d.bits)
    ok = len(bits) > 0 and all(_is_int(b, 2) and b <= 8 for b in bits)
    _check(ok, "deploy.bits", bits, "a non-empty list of integers from 2 to 8")
    qb = d.quant_bits
    _check(_is_int(qb, 0) and (qb == 0 or 2 <= qb <= 8), "deploy.quant_bits", qb, "0 or 2..8")
    if d.threshold is not None:
        _check(0.0 < d.threshold <= 1.0, "deploy.threshold", d.threshold, "a ratio in (0, 1]")
    for field in ("deploy.finetune_steps", "deploy.threads"):
        _int(c, field, 0)
    _int(c, "deploy.repeats")
    _finite_positive(d.budget_s, "deploy.budget_s")
    sizes = tuple(d.batch_sizes)
    ok = len(sizes) > 0 and all(_is_int(b, 1) for b in sizes)
    _check(ok, "deploy.batch_sizes", sizes, "a non-empty list of positive integers")
    shape = tuple(d.input_shape)
    if shape:
        example = _augmented_shape(c, data.input_shape(c.data))
        model = model or models.get_model(c.model, example)
        own = tuple(model.spec.input_shape)
        # Only a network without dense layers runs on images of another size.
        convolutional = all(layer.kind != "dense" for layer in model.spec.layers)
        ok = all(_is_int(v, 1) for v in shape) and (
            shape == own or (convolutional and len(shape) == len(own) == 3 and shape[-1] == own[-1])
        )
        allowed = f"() or {own}" + (" or (H, W, its channels)" if convolutional else "")
        _check(ok, "deploy.input_shape", shape, allowed)
    if d.onnx:
        onnx_export.require()


def _check_model(c) -> None:
    m = c.model
    _one_of(m.get("name"), "model.name", models.FAMILIES)
    _one_of(m.get("conv", "auto"), "model.conv", convs.IMPLEMENTATIONS)
    if m.get("conv", "auto") == "auto":
        _one_of(convs.AUTO_ON_CPU, "JAXSHRINK_AUTO_CONV (environment)", convs.AUTO_CHOICES)
    _check(m.init_std >= 0, "model.init_std", m.init_std, "a number >= 0 (0 = Flax's defaults)")
    precisions = ("highest", "high", "default")
    _one_of(m.get("precision", "highest"), "model.precision", precisions)
    if m.name == "fcn":
        for field in ("model.num_filters", "model.out_channels"):
            _int(c, field)
        _int(c, "model.num_layers", 2)
        k = m.kernel_size
        _check(
            _is_int(k, 1) and k % 2 == 1,
            "model.kernel_size",
            k,
            "an odd integer >= 1 (SAME padding needs a centre)",
        )
    elif m.name == "mlp":
        for h in m.hidden:
            _check(_is_int(h, 1), "model.hidden", h, "integers >= 1")
        _int(c, "model.out_features")
    layers, _ = models.layer_strings(m)
    for token in layers:
        try:
            kind, args = sequential.parse(token)
            if kind in sequential.MASKABLE:
                _check(_is_int(int(args[0]), 1), "model.layers", token, "units >= 1")
        except (ValueError, IndexError) as e:
            raise errors.ConfigError(
                f"model.layers: got {token!r}; allowed: 'conv:F:K[:valid][:sN]', "
                f"'convT:F:K[:sN]', 'dense:N', 'maxpool:W', 'dropout:R' ({e})"
            ) from None
    _check(
        len(sequential.layer_names(layers)) >= 2,
        "model.layers",
        tuple(layers),
        "at least two maskable layers (a hidden one and the output)",
    )


def _check_optim(c) -> None:
    o = c.optim
    _one_of(o.get("name", "adam"), "optim.name", optim.OPTIMIZERS)
    _finite_positive(o.learning_rate, "optim.learning_rate")
    wd = o.get("weight_decay", 0.0)
    _check(wd >= 0 and math.isfinite(wd), "optim.weight_decay", wd, "a finite number >= 0")
    l1 = o.get("l1", 0.0)
    _check(l1 >= 0 and math.isfinite(l1), "optim.l1", l1, "a finite number >= 0")


def _check_minimize(c) -> None:
    m = c.minimize
    _one_of(m.strategy, "minimize.strategy", strategies.STRATEGIES)
    _one_of(m.aggregation, "minimize.aggregation", strategies.AGGREGATIONS)
    _one_of(m.mode, "minimize.mode", minimize.MODES)
    if m.enabled or "sweep" in c:
        _check(
            m.mode in minimize.GATED_MODES,
            "minimize.mode",
            m.mode,
            f"{minimize.GATED_MODES} for a minimization (in the relearning modes the "
            "tested unit stays in the network, so a round cannot remove it; "
            "configs/relearn.py measures them)",
        )
    _one_of(m.reference, "minimize.reference", minimize.REFERENCES)
    _check(0.0 < m.threshold <= 1.0, "minimize.threshold", m.threshold, "a ratio in (0, 1]")
    _one_of(m.get("group", "auto"), "minimize.group", ("auto", *strategies.GROUPS))
    _int(c, "minimize.group_size", 1)
    fraction = m.get("group_fraction", 0.1)
    _check(0.0 < fraction <= 1.0, "minimize.group_fraction", fraction, "a fraction in (0, 1]")
    _int(c, "minimize.round_steps")
    _int(c, "minimize.max_rounds", -1)
    _int(c, "minimize.max_failures", -1)
    distort = m.get("distort", 0.0)
    _check(distort >= 0 and math.isfinite(distort), "minimize.distort", distort, "a number >= 0")
    _one_of(m.get("depth", "off"), "minimize.depth", strategies.LAYER_RULES)
    _one_of(m.get("grow", False), "minimize.grow", (True, False))
    margin = m.get("grow_margin", 0.0)
    ok = isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0
    _check(ok, "minimize.grow_margin", margin, "a finite number >= 0")
    if "depth" in c:
        d = c.depth
        _int(c, "depth.num_seeds")
        _one_of(d.rule, "depth.rule", strategies.LAYER_RULES[1:])
        for field, allowed in (
            ("targets", config_lib.DEPTH_TARGETS),
            ("variants", config_lib.DEPTH_VARIANTS),
        ):
            values = tuple(d[field])
            ok = 0 < len(values) == len(set(values)) and set(values) <= set(allowed)
            _check(ok, f"depth.{field}", values, f"a non-empty list from {allowed} without repeats")
        for field in ("thesis_widths", "grow_widths"):
            _check(len(d[field]) > 0, f"depth.{field}", tuple(d[field]), "widths per layer")


def _check_widths(c, model) -> None:
    """`train.start_widths`, the depth experiment's widths and the layer rule fit `model`."""
    spec = model.spec
    fields = [("train.start_widths", tuple(c.train.get("start_widths", ())))]
    if "depth" in c:
        fields += [(f"depth.{f}", tuple(c.depth[f])) for f in ("thesis_widths", "grow_widths")]
    for field, widths in fields:
        if not widths:
            continue
        ok = len(widths) == len(spec.layers) and all(
            _is_int(w, 0)
            and w <= layer.units
            and (w >= 1 or layer.bypass)
            and (w == layer.units or layer.candidate)
            for w, layer in zip(widths, spec.layers)
        )
        allowed = (
            f"{len(spec.layers)} widths (layers {spec.names}), each at most the layer's "
            f"units {[layer.units for layer in spec.layers]}, 0 only for a bypassable layer "
            f"{[layer.name for layer in spec.bypassable]}, the output layer full"
        )
        _check(ok, field, widths, allowed)
    rules = set(minimize.depth_rules(c)) - {"off"}
    if rules and not spec.bypassable:
        _check(
            False,
            "minimize.depth" if "depth" not in c else "depth.rule",
            sorted(rules)[0],
            "'off' for a model without bypassable layers (set model.bypass=True, and give "
            "it hidden layers that keep their input's shape)",
        )


def _check_shapes(c, model=None) -> None:
    """Builds the model for the data's input shape (traced, nothing allocated)."""
    shape = _augmented_shape(c, data.input_shape(c.data))
    if c.task == "edges":
        side = min(shape[:2])
        _check(
            side >= metrics.UIQI_WINDOW,
            "data.crop_size",
            c.data.crop_size,
            f"at least {metrics.UIQI_WINDOW} (the UIQI window)",
        )
    if model is not None:
        _check(
            tuple(model.spec.input_shape) == tuple(shape),
            "model",
            f"a model for inputs of shape {tuple(model.spec.input_shape)}",
            f"a model for the data's examples of shape {tuple(shape)}",
        )
        _check_frozen_layers(c, model)
        _check_widths(c, model)
        return
    try:
        model = models.get_model(c.model, shape)
    except (ValueError, TypeError, ZeroDivisionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise errors.ConfigError(
            f"model: cannot be built for inputs of shape {tuple(shape)} ({first}); "
            "allowed: layers whose kernels and poolings fit the input (see data.crop_size)"
        ) from None
    _check_frozen_layers(c, model)
    _check_widths(c, model)


def _augmented_shape(c, shape) -> tuple:
    """The examples' shape after the `augment` section; ConfigError if it cannot apply."""
    aug = c.get("augment")
    if not augment.enabled(aug):
        return tuple(shape)
    # The distortions change the inputs only: a target that is an image of the input
    # (edges, reconstruction) would no longer match it.
    _check(
        c.task == "classification",
        "augment",
        f"on for task {c.task!r}",
        "off unless the task is 'classification' (it distorts the inputs, not the targets)",
    )
    try:
        augment.make_augment(aug)
        return augment.output_shape_of(aug, shape)
    except (ValueError, TypeError) as e:
        raise errors.ConfigError(
            f"augment: {e} (examples of shape {tuple(shape)}); allowed: a crop that fits, "
            "brightness >= 0, contrast () or (lower, upper) with 0 <= lower <= upper"
        ) from None


def _check_frozen_layers(c, model) -> None:
    for name in c.optim.get("frozen_layers", ()):
        _one_of(name, "optim.frozen_layers", model.spec.names)


def check_workdir(workdir: str) -> None:
    """The output folder exists as a folder or can be created; raises ConfigError."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise errors.ConfigError(f"workdir: {path} is a file; allowed: a folder or a new path")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise errors.ConfigError(
            f"workdir: cannot create {path} ({parent} is not a writable folder); "
            "allowed: a path inside a writable folder"
        )
