"""What a job's round program must be able to do: the static plan of a batch of runs.

One compiled round serves every run of a batch (`minimize.make_round`); each run picks
its strategy, layer rule and growth switch with traced data (`minimize.RunSpec`). What
the program holds at all is static and fixed when it is built: the strategies whose
scores it computes, the layer rules it can apply, and whether any run grows. The caller
states them with a `Plan`: `Plan.single` for the single run of `config.minimize`, and
an experiment with many kinds of run (a sweep over strategies, the depth experiment's
variants) widens it to cover them all.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Plan:
    """The strategies, layer rules and growth one compiled round must cover.

    Attributes:
      strategies: names in `strategies.STRATEGIES` whose scores the round computes (in
        this order: a run's strategy outside them gets the first).
      layer_rules: names in `strategies.LAYER_RULES` the runs may use ('off': none).
      grows: whether any run may grow (the round then draws fresh values).
    """

    strategies: tuple[str, ...]
    layer_rules: tuple[str, ...]
    grows: bool

    def __post_init__(self):
        # Tuples (a config's lists included), so that a plan is hashable and static.
        object.__setattr__(self, "strategies", tuple(self.strategies))
        object.__setattr__(self, "layer_rules", tuple(self.layer_rules))
        object.__setattr__(self, "grows", bool(self.grows))

    @classmethod
    def single(cls, minimize_cfg) -> Plan:
        """The plan of the one run that `minimize_cfg` (`config.minimize`) describes."""
        return cls(
            strategies=(minimize_cfg.strategy,),
            layer_rules=(minimize_cfg.depth,),
            grows=bool(minimize_cfg.grow),
        )

    def replace(self, **changes) -> Plan:
        """This plan with the fields in `changes` replaced."""
        return dataclasses.replace(self, **changes)
