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
# # The thesis's results: Table 4.1, Figure 4.1 and Figure 4.2
#
# This notebook reproduces the three results of *Implementing a self-scaling
# convolutional neural network* (2018), section 4, with `jaxshrink`:
#
# * **Table 4.1** -- how cosine-similarity statistics of a mask relate to the score
#   lost when it is disabled (`jaxshrink.experiments.correlation`);
# * **Figure 4.1** -- the immediate drop after disabling against the best score
#   reached later;
# * **Figure 4.2** -- CosMax, Random and Seq at five thresholds, with paired
#   Wilcoxon tests (`jaxshrink.experiments.sweep`, `jaxshrink.stats`).
#
# It stays thin: every number comes from the library. By default it runs the
# `quick` presets (minutes on a laptop CPU). Point `SWEEP_DIR` / `CORRELATION_DIR`
# at the workdirs of full runs (e.g. made on a GPU with
# `python -m jaxshrink.main --config=configs/sweep.py`) to plot those instead.
#
# In Colab: clone the repository, then `%pip install -e .` in its folder (add
# `".[cuda12]"` on a GPU runtime).

# %%
import os

from IPython.display import Image, Markdown, display

from jaxshrink import stats
from jaxshrink.core import files
from jaxshrink.experiments import correlation, runner, sweep

SWEEP_DIR = None  # a finished sweep's workdir, or None to run the quick sweep here
CORRELATION_DIR = None  # a finished correlation run's workdir, or None to run it here
PRESET = "quick"
# CI sets this to shrink everything further, so the notebook is executed on every
# change and cannot drift from the code.
SMOKE = bool(os.environ.get("JAXSHRINK_NOTEBOOK_SMOKE"))


def smoke(c):
    """Seconds-sized sizes for CI."""
    c.data.crop_size, c.data.train_size, c.data.eval_size = 16, 24, 6
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 40, 20, 40
    c.train.eval_batch_size = 6
    return c


# %% [markdown]
# ## Table 4.1 and Figure 4.1: mask correlations

# %%
if CORRELATION_DIR is None:
    c = correlation.get_preset("canny", PRESET)
    if SMOKE:
        smoke(c)
        c.correlation.repetitions, c.correlation.second_steps = 3, 20
        c.correlation.eval_every = 10
    CORRELATION_DIR = os.path.abspath("runs/notebook-correlation")
    runner.run(c, CORRELATION_DIR)

# Both readings of the thesis's sample: one scalar per repetition, and every
# (repetition, mask) pair pooled (`table_4_1.md` holds both, labelled).
with open(os.path.join(CORRELATION_DIR, "table_4_1.md")) as f:
    display(Markdown(f.read()))

# %% [markdown]
# The thesis found weak correlations throughout (|r| <= 0.32), `cos:min` most
# negatively correlated with *loss*, and `cos:max` best correlated with *best*,
# which is why CosMax was chosen. Compare the rows above.

# %%
rows = files.read_csv(os.path.join(CORRELATION_DIR, "correlation.csv"))
correlation.plot_figure_4_1(rows, os.path.join(CORRELATION_DIR, "figure_4_1.png"))
display(Image(os.path.join(CORRELATION_DIR, "figure_4_1.png")))

# %% [markdown]
# ## Figure 4.2: strategies and thresholds

# %%
if SWEEP_DIR is None:
    c = sweep.get_preset("canny", PRESET)
    if SMOKE:
        smoke(c)
        c.minimize.round_steps, c.sweep.num_seeds = 5, 2
        c.sweep.thresholds = (0.9, 1.0)
    SWEEP_DIR = os.path.abspath("runs/notebook-sweep")
    runner.run(c, SWEEP_DIR)

figure = stats.figure_4_2(files.read_csv(os.path.join(SWEEP_DIR, "runs.csv")), SWEEP_DIR)
print(stats.format_table(figure["summary"]))
display(Image(figure["paths"]["figure"]))

# %% [markdown]
# Paired Wilcoxon signed-rank tests (pairs = seeds; every strategy of a seed starts
# from the same trained network). The thesis's reading was "Random seems to be the
# most efficient strategy"; the p-values say how much of that the data supports.

# %%
print(figure["findings"])
tests = [t for t in figure["tests"] if t["metric"] == "disabled"]
for t in tests:
    print(
        f"threshold {t['threshold']:.2f}  {t['a']:>10} vs {t['b']:<10} "
        f"median diff {t['median_difference']:+.2f}  p={t['p_value']:.3g}  better: {t['better']}"
    )
