"""jaxshrink: self-scaling neural networks in JAX.

A network shrinks itself during training: disable one unit, reset Adam, retrain
briefly, and roll back whenever the evaluation score falls below a threshold of the
last accepted one (Jenei, "Implementing a self-scaling convolutional neural network",
2018). The edge-detecting FCN of that thesis, the MNIST classifiers and the summation
network of two related theses, and any Flax model a researcher brings go through the
same machinery.

Modules, in the order data flows through them:

* `data`: the dataset registry (edge images with Sobel/Canny targets, MNIST digits,
  summation pairs), sources, cache.
* `spec`: the static description of a model's maskable layers (what each unit owns
  and feeds); `models`: the registered networks and `Model`, the interface of any
  maskable Flax module.
* `tasks`: loss, metrics, the compared score and pictures per task.
* `masks`: per-unit trees and candidates; `metrics`: losses and image scores.
* `optim`: optimizers with per-unit freezing; reset by re-running `init`.
* `train`: the pure single-run step and evaluation.
* `batching`: many runs as one compiled program (loop or vmap, sharded over devices).
* `strategies`: the registry of scoring functions that choose a unit.
* `minimize`: one select / disable / retrain / accept-or-roll-back round of a batch.
* `checkpoint`: orbax persistence of run state; `files`: atomic output writes.
* `export`: the physically smaller network; `gradcheck`: autodiff against finite
  differences; `visualize`, `plots`: pictures; `report`: results and summary.
* `pipeline`: `run(config, workdir, model=None)`, one run; `sweep`: Figure 4.2's
  batched experiment, with statistics in `analysis`; `correlation`: Table 4.1 and
  Figure 4.1.
* `config`: the theses' defaults; `validate`: every config check before any work;
  `errors`, `workdir`: user errors, the workdir lock and the resume check; `bench`:
  speed; `main`: the command line.
"""

__version__ = "0.1.0"
