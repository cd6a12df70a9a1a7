"""jaxshrink: self-scaling convolutional networks in JAX.

A small fully convolutional network (FCN) learns to mimic an edge detector, then
shrinks itself during training by disabling filters and rolling back whenever the
evaluation score falls below a threshold (Jenei, "Implementing a self-scaling
convolutional neural network", 2018).

Modules, in the order data flows through them:

* `data`: images and edge-map targets (built-in photos, a folder, or tfds).
* `models`: `init(rng, config)` and the pure `apply(params, masks, x)`.
* `masks`: helpers over the boolean per-unit mask pytree.
* `metrics`: losses (MAE, MSE, soft F1) and scores (F1, UIQI).
* `optim`: Adam with per-unit freezing; reset by re-running `init`.
* `train`: the pure single-run step (batch, loss, Adam update) and evaluation.
* `batching`: many runs as one compiled program (loop or vmap, sharded over devices).
* `strategies`: which unit to try (cosine, random, sequential) as scoring functions.
* `minimize`: one select / disable / retrain / accept-or-roll-back round of a batch.
* `checkpoint`: orbax persistence of run state; `files`: atomic output writes.
* `export`: the physically smaller network; `visualize`: the thesis's pictures.
* `pipeline`: `run(config, workdir)`, one run; `sweep`: Figure 4.2's batched
  experiment, with statistics in `analysis`; `correlation`: Table 4.1 and Figure 4.1.
* `config`: the thesis's defaults and validation; `errors`, `workdir`: user errors,
  the workdir lock and the resume check; `bench`: speed; `main`: the command line.
"""

__version__ = "0.1.0"
