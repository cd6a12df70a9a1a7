"""Config validation, in one place, before any work starts.

`validate(config)` is the one entry point: it runs every section's check, each kept
beside the section's owner (`core.checks`: task, model, optim, train, augment and the
model's shapes; `search.checks`: minimize and batch; `deploy.checks`: deploy), against
the registries that define the allowed values (`tasks.TASKS`, `data.DATASETS`,
`models.FAMILIES`, `optim.OPTIMIZERS`, `strategies.STRATEGIES`, ...). It builds the
model once, without allocating it, so sizes that cannot work (a crop smaller than a
kernel, a pooling or the UIQI window) are caught here and not after minutes of
compute. An experiment's own section (`sweep`, `correlation`, ...) is checked by its
module (`Experiment.check`) with the same helpers, re-exported here. Every problem is
one `errors.ConfigError` line naming the field, its value and what is allowed; the
command line prints it and exits with status 2. `check_workdir` does the same for the
output folder. The modules that use the values trust them; `jaxshrink.config.resolve`
then makes the automatic values concrete (`jaxshrink.config.prepare` does both).
"""

from __future__ import annotations

import os
import tempfile

import ml_collections

from jaxshrink import data
from jaxshrink.core import checks as core_checks
from jaxshrink.core import errors, metrics, models
from jaxshrink.core.checks import (  # the helpers every section's check uses
    check_field,
    check_finite_positive,
    check_int,
    check_one_of,
    check_widths,
    is_int,
)
from jaxshrink.deploy import checks as deploy_checks
from jaxshrink.search import checks as search_checks
from jaxshrink.search.checks import check_layer_rule, check_minimizing

__all__ = [
    "check_field",
    "check_finite_positive",
    "check_int",
    "check_layer_rule",
    "check_minimizing",
    "check_one_of",
    "check_widths",
    "check_workdir",
    "is_int",
    "model_of",
    "validate",
]


def validate(c: ml_collections.ConfigDict, model=None) -> ml_collections.ConfigDict:
    """Checks `c` (see the module docstring); returns it unchanged.

    With `model` (a researcher's own `models.Model`), `c.model` is not read; the
    model's input shape must be the data's.
    """
    core_checks.check_task(c)
    check_one_of(c.data.get("dataset"), "data.dataset", data.DATASETS)
    check_one_of(c.data.get("source"), "data.source", data.DATASETS[c.data.dataset].SOURCES)
    fraction = c.data.get("validation_fraction", 0.0)
    check_field(
        isinstance(fraction, (int, float)) and 0 <= fraction < 1,
        "data.validation_fraction",
        fraction,
        "a number in [0, 1) (0 = no validation split)",
    )
    check_one_of(
        c.output.get("confusion_normalize"),
        "output.confusion_normalize",
        metrics.CONFUSION_NORMALIZATIONS,
    )
    if model is None:
        core_checks.check_model(c)
    core_checks.check_optim(c)
    core_checks.check_train(c)
    search_checks.check_minimize(c)
    search_checks.check_batch(c)
    model = model_of(c, model)
    check_layer_rule("minimize.depth", c.minimize.depth, model.spec)
    if c.deploy.enabled:
        deploy_checks.check(c, model)
    return c


def model_of(c: ml_collections.ConfigDict, model=None) -> models.Model:
    """The run's model for the data's examples (after `augment`), traced, nothing
    allocated: `c.model`'s network, or `model` (your own) checked against the data;
    with the fields that depend on it checked (`core.checks.check_shapes`)."""
    shape = core_checks.augmented_shape(c, data.input_shape(c.data))
    return core_checks.check_shapes(c, shape, model)


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
    # Permissions do not tell everything (a pseudo-filesystem such as /proc, a
    # read-only mount, a full disk): make a file there and take it away again.
    try:
        fd, probe = tempfile.mkstemp(prefix=".jaxshrink-probe-", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise errors.ConfigError(
            f"workdir: cannot create {path}: {parent} cannot hold files "
            f"({err.strerror or err}); allowed: a path inside a writable folder"
        ) from None
