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
* `train`: jitted training steps in one compiled loop, and evaluation.
* `checkpoint`: orbax persistence of run state.
* `visualize`: PNG pictures of inputs, targets and outputs.
* `pipeline`: `run(config, workdir)`, the whole job; `main` is its command line.
"""

__version__ = "0.1.0"
