"""The checks of the sections the search owns: `minimize` (strategies, modes and the
rules of a round) and `batch` (how a batch of runs executes).

`jaxshrink.config.validate.validate` calls them in order, before any work starts; each
problem is one `errors.ConfigError` line naming the field, its value and what is allowed.
"""

from __future__ import annotations

import math

from jaxshrink.core.checks import check_field, check_int, check_one_of, is_int
from jaxshrink.search import batching, minimize, strategies


def check_minimizing(c) -> None:
    """`minimize.mode` can minimize: a run or an experiment that removes units needs a
    mode in which the tested unit leaves the network."""
    m = c.minimize
    check_field(
        m.mode in minimize.GATED_MODES,
        "minimize.mode",
        m.mode,
        f"{minimize.GATED_MODES} for a minimization (in the relearning modes the "
        "tested unit stays in the network, so a round cannot remove it; "
        "configs/relearn.py measures them)",
    )


def check_minimize(c) -> None:
    """The `minimize` section (`check_minimizing` too when it is enabled; an experiment
    that minimizes calls that itself)."""
    m = c.minimize
    check_one_of(m.strategy, "minimize.strategy", strategies.STRATEGIES)
    check_one_of(m.aggregation, "minimize.aggregation", strategies.AGGREGATIONS)
    check_one_of(m.mode, "minimize.mode", minimize.MODES)
    if m.enabled:
        check_minimizing(c)
    check_one_of(m.reference, "minimize.reference", minimize.REFERENCES)
    allowed = "a ratio in [0, 1] (0: every change kept, thesis 003's cycles)"
    check_field(0.0 <= m.threshold <= 1.0, "minimize.threshold", m.threshold, allowed)
    check_one_of(m.group, "minimize.group", ("auto", *strategies.GROUPS))
    check_int(c, "minimize.group_size", 1)
    fraction = m.group_fraction
    check_field(0.0 < fraction <= 1.0, "minimize.group_fraction", fraction, "a fraction in (0, 1]")
    check_int(c, "minimize.round_steps")
    check_int(c, "minimize.max_rounds", -1)
    check_int(c, "minimize.max_failures", -1)
    distort = m.distort
    ok = distort >= 0 and math.isfinite(distort)
    check_field(ok, "minimize.distort", distort, "a number >= 0")
    check_one_of(m.get("score_split"), "minimize.score_split", ("eval", "train"))
    n = m.get("score_examples")
    check_field(is_int(n, 0), "minimize.score_examples", n, "an integer >= 0 (0 = all)")
    check_one_of(m.depth, "minimize.depth", strategies.LAYER_RULES)
    check_one_of(m.grow, "minimize.grow", (True, False))
    margin = m.grow_margin
    ok = isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0
    check_field(ok, "minimize.grow_margin", margin, "a finite number >= 0")


def check_batch(c) -> None:
    """The `batch` section: a method, gradient form and step loop of `batching`, group
    and device counts (0 = all), a CPU thread count (0 = the machine's) and the
    deterministic switch."""
    b = c.batch
    check_one_of(b.method, "batch.method", batching.METHODS)
    check_one_of(b.grad, "batch.grad", batching.GRADS)
    check_one_of(b.steps, "batch.steps", batching.STEPS)
    check_int(c, "batch.group_size", 0)
    check_int(c, "batch.devices", 0)
    check_int(c, "batch.cpu_threads", 0)
    check_one_of(b.deterministic, "batch.deterministic", (True, False))


def check_layer_rule(field: str, rule: str, model_spec) -> None:
    """The layer rule `rule` (`strategies.LAYER_RULES`, the value of `field`) fits the
    model: any rule but 'off' needs bypassable layers in `model_spec`."""
    if rule != "off" and not model_spec.bypassable:
        check_field(
            False,
            field,
            rule,
            "'off' for a model without bypassable layers (set model.bypass=True, and give "
            "it hidden layers that keep their input's shape)",
        )
