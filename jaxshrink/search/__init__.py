"""How a batch of runs shrinks, as compiled programs over a leading run axis.

* `strategies/`: the registry of scoring functions that choose a unit, one module per
  family (cosine, order, activity, norms, taylor, layers);
* `minimize/`: one select / alter / retrain / accept-or-roll-back round (`round`), its
  state (`state`), the alterations (`alter`) and the accept, roll-back and stopping rules
  (`rules`);
* `plan`: the static plan an experiment hands the round (strategies, layer rules, growth);
* `batching`: many runs as one program (loop or vmap, groups, devices);
* `checks`: the validation of the `minimize` and `batch` sections.
"""
