"""The checks of the sections the core owns: `task`, `model`, `optim`, `train`, `augment`,
and whether the model can be built for the data's examples.

`jaxshrink.config.validate.validate` calls them in order, before any work starts; each
problem is one `errors.ConfigError` line naming the field, its value and what is
allowed. The helpers (`check_field`, `check_int`, `check_one_of`, ...) are the ones
every section's check uses, in `search.checks`, `deploy.checks` and the experiments.
"""

from __future__ import annotations

import math

from jaxshrink.core import augment, convs, errors, metrics, models, optim, tasks
from jaxshrink.core.models import sequential, zoo

PRECISIONS = ("highest", "high", "default")


def check_field(ok: bool, field: str, value, allowed: str) -> None:
    """Raises ``ConfigError('<field>: got <value>; allowed: <allowed>')`` unless `ok`."""
    if not ok:
        raise errors.ConfigError(f"{field}: got {value!r}; allowed: {allowed}")


def is_int(value, minimum: int) -> bool:
    """Whether `value` is an integer (not a bool) of at least `minimum`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_int(c, field: str, minimum: int = 1) -> None:
    """``<section>.<name>`` of config `c` is an integer >= `minimum`."""
    section, name = field.split(".")
    value = c[section][name]
    check_field(is_int(value, minimum), field, value, f"an integer >= {minimum}")


def check_one_of(value, field: str, allowed) -> None:
    """`value` is one of `allowed`."""
    check_field(value in allowed, field, value, str(tuple(allowed)))


def check_finite_positive(value, field: str) -> None:
    """`value` is a finite number > 0."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    check_field(ok, field, value, "a finite number > 0")


def check_task(c) -> None:
    """`task` names a registered task (`tasks.TASKS`)."""
    check_one_of(c.get("task"), "task", tasks.TASKS)


def check_model(c) -> None:
    """The `model` section of a configured network (not read for a model of your own)."""
    m = c.model
    check_one_of(m.get("name"), "model.name", models.FAMILIES)
    try:
        convs.split_name(m.get("conv"))
    except ValueError:
        allowed = f"one of {convs.IMPLEMENTATIONS}, or 'packed:K' (K runs per group)"
        check_field(False, "model.conv", m.get("conv"), allowed)
    if m.name in models.PLAIN:
        _check_plain(c)
        return
    if m.conv == "auto":
        check_one_of(convs.AUTO_ON_CPU, "JAXSHRINK_AUTO_CONV (environment)", convs.AUTO_CHOICES)
    std = m.init_std
    check_field(std >= 0, "model.init_std", std, "a number >= 0 (0 = Flax's defaults)")
    check_one_of(m.get("init_scheme"), "model.init_scheme", sequential.INITS)
    check_one_of(m.get("precision"), "model.precision", PRECISIONS)
    check_one_of(m.get("bypass"), "model.bypass", (True, False))
    if m.name == "fcn":
        for field in ("model.num_filters", "model.out_channels"):
            check_int(c, field)
        check_int(c, "model.num_layers", 2)
        k = m.kernel_size
        check_field(
            is_int(k, 1) and k % 2 == 1,
            "model.kernel_size",
            k,
            "an odd integer >= 1 (SAME padding needs a centre)",
        )
    elif m.name == "mlp":
        for h in m.hidden:
            check_field(is_int(h, 1), "model.hidden", h, "integers >= 1")
        check_int(c, "model.out_features")
    _check_layers(models.layer_strings(m)[0])


def _check_plain(c) -> None:
    """A plain module's fields; the chain-only options must keep their defaults."""
    m = c.model
    check_field(
        not m.bypass,
        "model.bypass",
        m.bypass,
        "False for a plain module (its channel graph says which groups are branches "
        "that minimize.depth may remove whole)",
    )
    check_one_of(m.conv, "model.conv", ("auto", "xla"))  # it computes with its own nn.Conv
    check_one_of(m.get("bypass"), "model.bypass", (True, False))
    if m.name in ("resnet", "mobilenet"):
        check_int(c, "model.num_classes", 2)
    if m.name == "resnet":
        try:
            zoo.blocks_per_stage(int(m.depth))
        except (ValueError, TypeError) as e:
            raise errors.ConfigError(f"model.depth: got {m.depth!r}; {e}") from None
        check_field(len(m.widths) == 3, "model.widths", tuple(m.widths), "three widths")
    if m.name in ("resnet", "unet"):
        for w in m.widths:
            check_field(is_int(w, 1), "model.widths", tuple(m.widths), "integers >= 1")
    if m.name == "unet":
        levels = "two or more: the levels, then the bottleneck"
        check_field(len(m.widths) >= 2, "model.widths", tuple(m.widths), levels)
        check_int(c, "model.out_channels")
    if m.name == "decomposeme":
        check_int(c, "model.num_classes", 2)
        ok = len(m.convs) >= 1 and all(
            len(v) == 4 and all(is_int(n, 1) for n in v[:3]) and v[3] in ("SAME", "VALID")
            for v in m.convs
        )
        allowed = "(features, kernel, inner channels, 'SAME' or 'VALID') per convolution"
        check_field(ok, "model.convs", tuple(map(tuple, m.convs)), allowed)
        check_field(is_int(m.pools, 0), "model.pools", m.pools, "an integer >= 0")
    if m.name == "mobilenet":
        check_int(c, "model.stem_width")
        check_one_of(m.stem_stride, "model.stem_stride", (1, 2))
        for block in m.blocks:
            check_field(
                len(block) == 3 and all(is_int(v, 1) for v in block) and block[2] in (1, 2),
                "model.blocks",
                tuple(block),
                "(expand >= 1, features >= 1, stride 1 or 2) per block",
            )


def _check_layers(layers) -> None:
    for token in layers:
        try:
            kind, args = sequential.parse(token)
            if kind in sequential.MASKABLE:
                check_field(is_int(int(args[0]), 1), "model.layers", token, "units >= 1")
        except (ValueError, IndexError) as e:
            raise errors.ConfigError(
                f"model.layers: got {token!r}; allowed: 'conv:F:K[:valid][:sN]', "
                f"'convT:F:K[:sN]', 'dense:N', 'maxpool:W', 'dropout:R' ({e})"
            ) from None
    check_field(
        len(sequential.layer_names(layers)) >= 2,
        "model.layers",
        tuple(layers),
        "at least two maskable layers (a hidden one and the output)",
    )


def check_optim(c) -> None:
    """The `optim` section: a registered optimizer, a learning rate, the penalties."""
    o = c.optim
    check_one_of(o.get("name"), "optim.name", optim.OPTIMIZERS)
    check_finite_positive(o.learning_rate, "optim.learning_rate")
    wd = o.weight_decay
    check_field(wd >= 0 and math.isfinite(wd), "optim.weight_decay", wd, "a finite number >= 0")
    check_one_of(o.get("weight_decay_mode"), "optim.weight_decay_mode", optim.DECAY_MODES)
    l1 = o.l1
    check_field(l1 >= 0 and math.isfinite(l1), "optim.l1", l1, "a finite number >= 0")


def check_train(c) -> None:
    """The `train` section: a loss of the task ('' = its default), the step counts and
    the grace period of a stop request."""
    task = tasks.TASKS[c.task]
    check_one_of(c.train.loss or task.losses[0], "train.loss", task.losses)
    for field in ("train.batch_size", "train.log_every", "train.eval_every"):
        check_int(c, field)
    check_int(c, "train.eval_batch_size")
    check_int(c, "train.initial_steps", 0)
    check_finite_positive(c.train.grace_seconds, "train.grace_seconds")


def augmented_shape(c, shape) -> tuple:
    """The examples' shape after the `augment` section; ConfigError if it cannot apply."""
    aug = c.augment
    if not augment.enabled(aug):
        return tuple(shape)
    # The distortions change the inputs only: a target that is an image of the input
    # (edges, reconstruction) would no longer match it.
    check_field(
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


def check_shapes(c, shape, model=None) -> models.Model:
    """Builds the model for examples of `shape` (traced, nothing allocated) and checks
    what depends on it (`optim.frozen_layers`, `train.start_widths`); returns the model.

    `shape` is the data's example shape after augmentation (`augmented_shape`). With
    `model` (your own), its input shape must be `shape`.
    """
    if c.task == "edges":
        check_field(
            min(shape[:2]) >= metrics.UIQI_WINDOW,
            "data.crop_size",
            c.data.crop_size,
            f"at least {metrics.UIQI_WINDOW} (the UIQI window)",
        )
    if model is not None:
        check_field(
            tuple(model.spec.input_shape) == tuple(shape),
            "model",
            f"a model for inputs of shape {tuple(model.spec.input_shape)}",
            f"a model for the data's examples of shape {tuple(shape)}",
        )
    else:
        try:
            model = models.get_model(c.model, shape)
        except (ValueError, TypeError, ZeroDivisionError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise errors.ConfigError(
                f"model: cannot be built for inputs of shape {tuple(shape)} ({first}); "
                "allowed: layers whose kernels and poolings fit the input (see data.crop_size)"
            ) from None
    for name in c.optim.frozen_layers:
        check_one_of(name, "optim.frozen_layers", model.spec.names)
    check_widths("train.start_widths", tuple(c.train.start_widths), model.spec)
    return model


def check_widths(field: str, widths: tuple, spec) -> None:
    """`widths` (units alive per layer; () = all) fit the model `spec`: one per layer, at
    most its units, 0 only for a bypassable layer, the non-candidate layers full."""
    if not widths:
        return
    ok = len(widths) == len(spec.layers) and all(
        is_int(w, 0)
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
    check_field(ok, field, widths, allowed)
