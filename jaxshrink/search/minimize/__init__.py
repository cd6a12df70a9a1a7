"""The self-scaling loop (thesis 2.4.2): select, alter, reset Adam, retrain, accept or roll back.

`make_round(config, engine, plan)` returns `round_fn(mstate, spec, data, eval_data)`,
one whole round of a batch of runs as a pure function of their states. Each run has
its own `RunSpec` (threshold, strategy, stopping rule) and decides on its own; a
single run is the batch of one. `plan` (`search.plan.Plan`) is what the runs of the
batch may do at all (their strategies, layer rules, growth), fixed when the round is
built. It is jit-compiled once: masks, thresholds, strategies, keys and flags are
traced data, so rounds never recompile.

Rollback is in memory: the previous state is kept and the new one is merged with
``jnp.where(accept, new, old)`` leaf by leaf, so a rejected round leaves params,
masks and Adam state bit for bit as they were. Every round starts by resetting Adam
(the thesis resets "every time the network is altered or reverted"). Orbax only
persists `MinState` between rounds so a run can resume.

Modes (2.4.1). The thesis has three switches for a unit: *disabling* gives it zero
values (or, optionally, re-drawn initial ones: "reinitializing the masks instead of
giving them zero values"), *freezing* gives it zero gradient, and an output switch
makes a disabled unit "always produce an output of zeros". Its three ways to test the
worth of a unit combine them:

* ``disabled_frozen`` (the thesis's choice, the default): the unit's output is gated
  to exactly zero and its weights get no update; everything else trains and may
  compensate. A round measures the network without the unit, so an accepted round
  removes it, and the export leaves it out. With `reinit` its (unused) values are
  re-drawn; the network computes the same function either way.
* ``disabled``: the unit's values are set to zero (or re-drawn with `reinit`) and it
  stays in the network, training with everything else ("observe what the optimizer
  will train this mask the next time").
* ``disabled_others_frozen``: as ``disabled``, but every other unit is frozen, so the
  network cannot compensate "but lets the mask relearn".

The last two let the unit come back, so a round cannot remove it: they are
measurements (`jaxshrink.experiments.relearn`, `configs/relearn.py`), not minimization
modes, and `validate` refuses them for a minimization. Under ReLU a unit whose weights and bias
are all zero outputs relu(0) = 0 and gets exactly zero gradient (JAX, like TensorFlow,
takes relu'(0) = 0), so with zero values it never relearns; only re-drawn values can.

``disabled_frozen_others_frozen`` (not in the thesis) gates the unit and freezes every
unit: nothing trains, so a round measures the immediate loss of the unit with no
compensation (its `round_steps` update nothing). It was this package's earlier
``disabled_others_frozen`` and is kept as a cheap minimization mode.

Depth and growth (not in the thesis's final implementation; its stated aim is
"minimizing the number of layers and the number of masks in the layers"). A round
proposes one of three kinds of change (`KINDS`), all under the same Adam reset,
retraining, accept/roll-back, checkpoints and round records:

* ``unit``: the thesis's round, above.
* ``layer`` (``minimize.depth`` not 'off', a model with bypassable layers, see
  `spec`): every live unit of one layer is disabled at once, which bypasses the
  layer (its output becomes its input). The layer is chosen by
  `strategies.LAYER_RULES`; the rule to keep it is the unit rule (``score >=
  threshold * reference``). Layer rounds come first: while a bypassable layer
  has not failed since the last accepted layer removal, a round proposes a layer;
  then units. So depth is settled first and widths after, and each layer is tried
  at least once.
* ``grow`` (``minimize.grow``): a run that starts inside its envelope with only
  some units alive (``train.start_widths``) first grows. A growth round enables one
  dead unit, freshly initialised (values re-drawn as at the start of training), of
  the computing layer with the fewest live units among those not failed since the
  last accepted growth (ties: the earlier layer; the unit: its first dead one). It
  is kept when the unit pays for itself: ``score >= (1 + grow_margin) *
  reference``. The growth phase ends at the first round with no layer left to grow
  (each failed once, or full), and never resumes; the run then shrinks as above.

Only failed unit rounds count towards `max_failures`; every round counts towards
`max_rounds`. Shapes never change: a layer or a unit is removed or restored by its
masks, so one compiled round serves every kind.

The package's modules: `state` (the state a run carries, its `RunSpec`, a round's
record), `alter` (disabling, enabling and distorting units), `rules` (group size and
choice, accept or roll back, stopping) and `round` (`make_round`, `make_host_round`).
"""

from jaxshrink.search.minimize.alter import alter, distort, distort_live, enable
from jaxshrink.search.minimize.round import (
    Context,
    RoundParts,
    context,
    make_host_round,
    make_parts,
    make_round,
)
from jaxshrink.search.minimize.rules import choose_group, decide, group_size
from jaxshrink.search.minimize.state import (
    GATED_MODES,
    GROW,
    KINDS,
    LAYER,
    MODES,
    REFERENCES,
    RELEARN_MODES,
    UNIT,
    MinState,
    Proposal,
    RoundRecord,
    RunSpec,
    init_state,
    run_spec,
)

__all__ = [
    "GATED_MODES",
    "GROW",
    "KINDS",
    "LAYER",
    "MODES",
    "REFERENCES",
    "RELEARN_MODES",
    "UNIT",
    "Context",
    "RoundParts",
    "MinState",
    "Proposal",
    "RoundRecord",
    "RunSpec",
    "alter",
    "choose_group",
    "context",
    "decide",
    "distort",
    "distort_live",
    "enable",
    "group_size",
    "init_state",
    "make_host_round",
    "make_parts",
    "make_round",
    "run_spec",
]
