"""Resolution: a validated config's automatic values made concrete, once, before work.

A config leaves some values to jaxshrink with a *marker*. `resolve(config, model)`
returns a copy with every marker replaced by the value the run uses, computed by the
marker's owner (so each rule is written once, there), and the code that reads these
fields trusts them:

============================  ==========  =============================================
field                         marker      resolved to
============================  ==========  =============================================
train.loss                    ''          the task's default loss (`tasks.TASKS`)
minimize.max_rounds           -1          the strategy's stopping rule
minimize.max_failures         -1            (`strategies.stopping_rule`)
minimize.group                'auto'      the strategy's group rule
minimize.group_threshold      None          (`strategies.group_rule`)
model.conv                    'auto'      the form 'auto' takes on this backend under
                                            JAXSHRINK_AUTO_CONV (`convs.auto_form`)
batch.method, .grad           'auto'      the backend's measured faster one, and the
batch.group_size              (loop: 1)     loop's groups of one (`batching.resolve`)
batch.steps                   'auto'      `batching.resolve_steps`: the backend, the
                                            device and process count, and whether a
                                            training step holds XLA convolutions
deploy.threshold              None        `minimize.threshold`
deploy.input_shape            ()          the model's input shape
============================  ==========  =============================================

A sweep keeps the `minimize` markers: each of its strategies runs under its own rules
(`strategies.stopping_rule(minimize_cfg, name)`), which one value cannot record. With
a model of your own, `model` is not read and is left as it is. Zeros that are values,
not markers, stay: `batch.devices` 0 (every device; a job of several processes needs
0), `batch.group_size` 0 under vmap (all runs in one group), `deploy.quant_bits` 0 (the
smallest width the rule keeps, found by scoring after the run), `deploy.threads` 0
(onnxruntime's own default), `model.init_std` 0 (Flax's initializers).

The resolved config is what a workdir records (`config.json`, `runtime.workdir.claim`)
and what a resume is compared with, resolved the same way: the user's fields must
match, and so must what the markers meant, so a resume under another
JAXSHRINK_AUTO_CONV (or, with model.conv 'auto', on another backend) is refused in one
line naming `model.conv`; set it to the recorded form to go on. The `batch` fields may
change on resume (`workdir.RESUMABLE`). A workdir started before markers were resolved
recorded them as markers: `as_resolved` reads those as what they mean now.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import ml_collections

from jaxshrink import data
from jaxshrink.core import augment, convs, models, tasks, train
from jaxshrink.core import spec as spec_lib
from jaxshrink.search import batching, strategies

# field -> its marker: the values `resolve` replaces (`batch.group_size` has none: it
# follows `batch.method`).
MARKERS = {
    "train.loss": "",
    "minimize.max_rounds": -1,
    "minimize.max_failures": -1,
    "minimize.group": "auto",
    "minimize.group_threshold": None,
    "model.conv": "auto",
    "batch.method": "auto",
    "batch.grad": "auto",
    "batch.steps": "auto",
    "deploy.threshold": None,
    "deploy.input_shape": (),
}


def resolve(
    config: ml_collections.ConfigDict, model=None, *, backend: str | None = None
) -> ml_collections.ConfigDict:
    """`config` (validated) with every marker replaced by its concrete value.

    Args:
      config: a validated config (`validate.validate`); it is not changed.
      model: your own `models.Model`, if the run has one (`config.model` is then not
        read and not resolved).
      backend: the JAX backend to resolve for (default: JAX's default backend).

    Returns:
      A new `ConfigDict` without markers (see the module docstring); resolving it again
      changes nothing.
    """
    backend = backend or jax.default_backend()
    c = copy.deepcopy(config)
    if not c.train.loss:
        c.train.loss = tasks.TASKS[c.task].losses[0]
    if "sweep" not in c:
        _resolve_rules(c.minimize)
    if model is None:
        if c.model.conv == "auto":
            c.model.conv = convs.auto_form(backend)
        model = models.get_model(c.model, _example_shape(c))
    if c.deploy.threshold is None:
        c.deploy.threshold = float(c.minimize.threshold)
    if not tuple(c.deploy.input_shape):
        c.deploy.input_shape = tuple(int(n) for n in model.spec.input_shape)
    _resolve_batch(c, model, backend)
    return c


def _example_shape(c) -> tuple[int, ...]:
    """One example's shape as the configured model sees it (after `augment`)."""
    return augment.output_shape_of(c.augment, data.input_shape(c.data))


def _resolve_rules(m: ml_collections.ConfigDict) -> None:
    """The strategy's group and stopping rules, where `m` leaves them to it."""
    group, group_threshold = strategies.group_rule(m)
    max_rounds, max_failures, _ = strategies.stopping_rule(m)
    m.group, m.group_threshold = group, float(group_threshold)
    m.max_rounds, m.max_failures = int(max_rounds), int(max_failures)


def _resolve_batch(c: ml_collections.ConfigDict, model, backend: str) -> None:
    """`batch.method`, `grad`, `group_size` and `steps` as `batching` decides them here."""
    b = c.batch
    b.method, b.group_size, b.grad = batching.resolve(b, backend)
    xla_convs = True  # what `resolve_steps` assumes where the count does not matter
    if batching.needs_convolution_count(b, backend):
        xla_convs = _has_xla_convolutions(c, model)
    b.steps = batching.resolve_steps(b, backend, xla_convs=xla_convs)


def _has_xla_convolutions(c: ml_collections.ConfigDict, model) -> bool:
    """Whether one training step of `c` holds XLA convolutions (`batching.xla_convolutions`),
    traced from shapes only: the data's examples are float32 once a step samples them,
    the targets labels for a classifier and the model's outputs' shape otherwise."""
    trainer = train.make_trainer(c, model, tasks.get_task(c.task, c.train.loss))
    n = int(c.train.batch_size)
    inputs = jax.ShapeDtypeStruct((n, *data.input_shape(c.data)), jnp.float32)
    if c.task == "classification":
        targets = jax.ShapeDtypeStruct((n,), jnp.int32)
    else:
        out = jax.eval_shape(lambda: _forward(model))
        targets = jax.ShapeDtypeStruct((n, *out.shape[1:]), jnp.float32)
    return bool(batching.xla_convolutions(trainer, train.TrainData(inputs, targets)))


def _forward(model):
    params, state = model.init_variables(jax.random.PRNGKey(0))
    x = jnp.zeros((1, *model.spec.input_shape), jnp.float32)
    return model.apply(params, spec_lib.full(model.spec), x, state=state)


def as_resolved(saved: dict, config: ml_collections.ConfigDict) -> dict:
    """A saved `config.json` with the markers it holds, recorded by a workdir started
    before markers were resolved, replaced by what they resolve to under `config` (a
    resolved config); the `batch` fields, which may change on resume, stay.

    A marker means the same under the saved config as under `config` when the fields it
    depends on are equal, and those are compared on their own.
    """
    out = copy.deepcopy(saved)
    for field, marker in MARKERS.items():
        section, name = field.split(".")
        if section == "batch" or name not in out.get(section, {}):
            continue
        if out[section][name] != _json(marker) or _json(config[section][name]) == _json(marker):
            continue
        probe = copy.deepcopy(config)
        probe[section][name] = marker
        out[section][name] = _json(_meaning(probe, section, name))
    return out


def _meaning(probe: ml_collections.ConfigDict, section: str, name: str):
    """What the marker in `probe[section][name]` resolves to (the rest of `probe` resolved)."""
    if section == "train":
        return tasks.TASKS[probe.task].losses[0]
    if section == "minimize":
        _resolve_rules(probe.minimize)
        return probe.minimize[name]
    if section == "model":
        return convs.auto_form()
    if name == "threshold":  # deploy.threshold
        return float(probe.minimize.threshold)
    return tuple(_example_shape(probe))  # deploy.input_shape


def _json(value):
    """`value` as `config.json` holds it (tuples as lists)."""
    return list(_json(v) for v in value) if isinstance(value, tuple) else value
