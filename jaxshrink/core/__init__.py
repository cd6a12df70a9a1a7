"""The model-level pieces every run is made of; nothing here knows experiments, files of
results or pictures, and nothing here imports another subpackage.

* `spec`: the static description of a model's maskable layers (what each unit owns and
  feeds); `masks`: per-unit trees and candidates; `models/`: the registered networks and
  `Model`, the interface of any maskable Flax module;
* `tasks`: loss, metrics, the compared score, and how a task is summarised and pictured
  (by name; the drawing is `jaxshrink.report`'s); `metrics`: losses and image scores;
* `optim`: optimizers with per-unit freezing, reset by re-running `init`; `train`: the pure
  single-run step and evaluation; `augment`: distortions inside the compiled step;
  `convs`: the few-channel convolution forms, with `packed_conv` (runs packed into
  block-diagonal groups) and `pallas_conv` (a Pallas kernel) for batched runs on GPUs;
  `compact`: the compact storage of inputs;
* `graph`: the channel dependency graph of any function, read from its jaxpr (the
  groups of parameter slices that must be removed together); `shrink`: the physically
  smaller program of any traced function with some groups removed (its jaxpr rewritten
  at the new shapes);
* `results`: the typed results at the package's boundaries (rounds, runs, exports,
  deploy forms, sweep rows), each with `to_json()`;
* `checks`: the validation of the core's config sections; `errors`: the user's errors
  (one line each); `files`: atomic writes and the cache folder.
"""
