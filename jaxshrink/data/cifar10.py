"""The 'cifar10' dataset: 32x32 colour photographs in 10 classes, and their labels 0 to 9.

No copy ships with any package, so the data must be prepared once on a machine with internet.

Sources:
  * ``tfds`` (default): CIFAR-10 (50000 train, 10000 test images) from TensorFlow Datasets, read
    with ``tfds.data_source``, which needs no TensorFlow. The dataset must already be prepared in
    the ArrayRecord format (``tfds build cifar10 --file_format=array_record``); nothing is
    downloaded (see `jaxshrink.data.tfds_source`).
  * ``folder``: the folder the CIFAR-10 authors distribute, ``cifar-10-batches-py`` (unpacked
    from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), or a folder holding it. Train
    is ``data_batch_1`` .. ``data_batch_5`` and eval ``test_batch``: pickled dicts whose
    ``b'data'`` is (rows, 3072) uint8, each row one image in CHW order (1024 red, 1024 green,
    1024 blue values, each plane row-major), and whose ``b'labels'`` is a list of ints. Only
    these six files are opened, nothing else in the folder, and they are unpickled by an
    unpickler that builds nothing but plain containers and numpy arrays, so a planted file
    cannot run code. The folder is only read.

The train and eval splits are the authors' (the tfds splits and the files), so they share no
image. A size limit takes a subset chosen by the seed. Inputs are float32 (N, 32, 32, 3), NHWC,
and targets int32 (N,) class labels (`CLASS_NAMES`). Normalisation:
  * ``mean_image`` (default, thesis 004 section 3.5.1): pixels are scaled to [-1, 1], then the
    mean image of the train split (the mean of every pixel and channel over the train images,
    (32, 32, 3)) is subtracted from every train and eval image, so no eval statistic leaks into
    training. `Dataset.info` records the mean image's per-channel means and range.
  * ``unit``: pixels / 255, in [0, 1]; for a per-image standardisation done later, on the device,
    together with the augmentation (thesis 003 section 2.7.4).

Random crops and flips are not applied here: `input_shape` is always (32, 32, 3).
Nothing is cached: the folder's batches are read in about a second.

Fields of ``data_cfg`` (an ``ml_collections.ConfigDict``; `default_config` has them all):
  dataset: 'cifar10'.
  source: 'tfds' or 'folder'.
  seed: seeds the subsets taken when a size is set.
  train_size, eval_size: at most this many images of the split, 0 meaning all (50000 / 10000).
  normalize: 'mean_image' or 'unit', see above.
  folder: folder only; the authors' cifar-10-batches-py, or a folder that holds it.
  tfds_name: tfds only; dataset name ('cifar10'; another must have the same features).
  tfds_data_dir: tfds only; where the prepared data lives ('' = the tfds default).
  tfds_train_split, tfds_eval_split: tfds only; split names ('train', 'test').
  tfds_image_key, tfds_label_key: tfds only; the features holding the image and the label.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

from jaxshrink.core import errors
from jaxshrink.data import tfds_source
from jaxshrink.data.split import Dataset, Split, make_info

NAME = "cifar10"
SOURCES = ("tfds", "folder")
NORMALIZATIONS = ("mean_image", "unit")
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{k}" for k in range(1, 6))
EVAL_FILES = ("test_batch",)
# How to get the data, ending every "not found" error.
HOW_TO_PREPARE = (
    f"prepare it with `tfds build {NAME} --file_format=array_record --data_dir=DIR` on a machine "
    "with internet (copy DIR here and set --config.data.tfds_data_dir=DIR), or download and "
    f"unpack the authors' {FOLDER_NAME} (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) "
    "and set --config.data.source=folder --config.data.folder=PATH"
)
# The only globals a CIFAR-10 batch needs: numpy arrays (as pickled by numpy 1 and 2, with
# protocols 0 to 5) and the byte strings protocols 0 to 2 encode through _codecs.
_SAFE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


def default_config(name: str = NAME) -> ml_collections.ConfigDict:
    """Returns the CIFAR-10 data config with every field at its default; see the module doc."""
    if name != NAME:
        raise errors.ConfigError(f"data.dataset: got {name!r}; allowed here: {NAME!r}")
    return ml_collections.ConfigDict(
        {
            "dataset": NAME,
            "source": "tfds",
            "seed": 0,
            "train_size": 0,
            "eval_size": 0,
            "normalize": "mean_image",
            "folder": "",
            "tfds_name": NAME,
            "tfds_data_dir": "",
            "tfds_train_split": "train",
            "tfds_eval_split": "test",
            "tfds_image_key": "image",
            "tfds_label_key": "label",
        }
    )


def input_shape(data_cfg) -> tuple[int, ...]:
    """One example's shape: a 32 x 32 colour image (augmentation crops later, on the device)."""
    del data_cfg
    return IMAGE_SHAPE


def load(data_cfg) -> Dataset:
    """Returns the images of `data_cfg`'s source, subset, normalised and described.

    Raises:
      errors.ConfigError: on a bad field of `data_cfg`, naming it.
      errors.DataError: when the data is not prepared (tfds) or not found (folder), saying how
        to prepare it, or cannot be read.
    """
    if data_cfg.source not in SOURCES:
        raise errors.ConfigError(f"data.source: got {data_cfg.source!r}; allowed: {SOURCES}")
    if data_cfg.normalize not in NORMALIZATIONS:
        raise errors.ConfigError(
            f"data.normalize: got {data_cfg.normalize!r}; allowed: {NORMALIZATIONS}"
        )
    sizes = [tfds_source.check_size(data_cfg, split) for split in ("train", "eval")]
    if data_cfg.source == "tfds":
        train_part, eval_part = _tfds_splits(data_cfg, sizes)
        where = (
            f"from tfds {data_cfg.tfds_name!r} splits {data_cfg.tfds_train_split} / "
            f"{data_cfg.tfds_eval_split}"
        )
    else:
        folder = _batches_folder(data_cfg)
        train_part, eval_part = _folder_splits(folder, data_cfg.seed, sizes)
        where = f"from the authors' batches in {str(folder)!r}"
    if any(sizes):
        where += f", subsets chosen with seed {data_cfg.seed}"
    # Each part is (pixels, labels, sources).
    train_inputs, eval_inputs, normalization = _normalize(
        train_part[0], eval_part[0], data_cfg.normalize
    )
    train = Split(train_inputs, train_part[1], train_part[2])
    eval_split = Split(eval_inputs, eval_part[1], eval_part[2])
    pixels = {
        "mean_image": "scaled to [-1, 1] less the train mean image",
        "unit": "scaled to [0, 1]",
    }[data_cfg.normalize]
    description = (
        f"CIFAR-10: {len(train)} train / {len(eval_split)} eval 32x32 colour images {where}, "
        f"pixels {pixels}"
    )
    info = make_info(
        data_cfg,
        train,
        eval_split,
        description,
        normalization=normalization,
        num_classes=NUM_CLASSES,
        class_names=list(CLASS_NAMES),
    )
    return Dataset(train, eval_split, info)


# ------------------------------------------------------------------------------------ folder


def _batches_folder(data_cfg) -> Path:
    """The folder holding the batch files: data.folder, or its cifar-10-batches-py subfolder."""
    if not data_cfg.folder:
        raise errors.DataError(
            f"CIFAR-10 not found: data.source='folder' needs data.folder, the authors' "
            f"{FOLDER_NAME}; {HOW_TO_PREPARE}"
        )
    folder = Path(data_cfg.folder).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise errors.DataError(
            f"CIFAR-10 not found: data.folder={data_cfg.folder!r} {what}; {HOW_TO_PREPARE}"
        )
    inner = folder / FOLDER_NAME
    if not (folder / TRAIN_FILES[0]).exists() and inner.is_dir():
        return inner
    return folder


def _folder_splits(folder: Path, seed: int, sizes: Sequence[int]):
    missing = [name for name in TRAIN_FILES + EVAL_FILES if not (folder / name).is_file()]
    if missing:
        raise errors.DataError(
            f"CIFAR-10 not found: {str(folder)!r} lacks {', '.join(missing)} (the authors' "
            f"{FOLDER_NAME} holds {', '.join(TRAIN_FILES + EVAL_FILES)}); {HOW_TO_PREPARE}"
        )
    splits = []
    for stream, (names, limit) in enumerate(zip((TRAIN_FILES, EVAL_FILES), sizes, strict=True)):
        batches = [read_batch(folder / name) for name in names]
        pixels = np.concatenate([batch[0] for batch in batches])
        labels = np.concatenate([batch[1] for batch in batches])
        sources = [f"{name}[{row}]" for name, b in zip(names, batches) for row in range(len(b[1]))]
        indices = tfds_source.subset(len(labels), limit, seed, stream)
        splits.append((pixels[indices], labels[indices], tuple(sources[i] for i in indices)))
    return splits


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one of the authors' batch files into (N, 32, 32, 3) uint8 pixels, (N,) int32 labels.

    Raises:
      errors.DataError: if the file is not a CIFAR-10 batch.
    """
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
        data, labels = np.asarray(data), np.asarray(labels)
    except Exception as err:  # A truncated or foreign file can fail in many ways.
        first_line = " ".join(str(err).split("\n", 1)[0].split())
        raise errors.DataError(
            f"{str(path)!r} is not a CIFAR-10 batch ({type(err).__name__}: {first_line}); "
            f"unpack the authors' {FOLDER_NAME} again"
        ) from err
    width = int(np.prod(IMAGE_SHAPE))
    if (
        data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != width
        or labels.shape != (len(data),)
        or not np.issubdtype(labels.dtype, np.integer)
    ):
        raise errors.DataError(
            f"{str(path)!r} holds data {data.dtype} {data.shape} and labels {labels.dtype} "
            f"{labels.shape}; expected uint8 (N, {width}) and N integers"
        )
    if not len(labels):
        raise errors.DataError(f"{str(path)!r} holds no image")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise errors.DataError(f"{str(path)!r} has labels outside 0..{NUM_CLASSES - 1}")
    # Rows are CHW (the red plane, then green, then blue); the network takes HWC.
    height, width_px, channels = IMAGE_SHAPE
    pixels = data.reshape(-1, channels, height, width_px).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(pixels), labels.astype(np.int32)


# ------------------------------------------------------------------------------------- tfds


def _tfds_splits(data_cfg, sizes: Sequence[int]):
    splits = []
    for stream, (split, limit) in enumerate(zip(("train", "eval"), sizes, strict=True)):
        try:
            source = tfds_source.open_split(data_cfg, split)
        except errors.DataError as err:
            # Not prepared, or prepared but unreadable: either way the folder is a way out.
            found = "not found" if "is not prepared" in str(err) else "unreadable"
            raise errors.DataError(
                f"CIFAR-10 {found}: {err}; or download and unpack the authors' {FOLDER_NAME} "
                "(https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) and set "
                "--config.data.source=folder --config.data.folder=PATH"
            ) from err
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
    """Returns float32 (N, 32, 32, 3) train and eval inputs and a JSON-able account of how.

    Args:
      train, eval_pixels: (N, 32, 32, 3) uint8 pixels of each split.
      method: 'mean_image' or 'unit'.

    The arithmetic is float32 and in place: 50000 images take 600 MB as float32 already.
    """
    inputs = [train.astype(np.float32), eval_pixels.astype(np.float32)]
    if method == "unit":
        for x in inputs:
            x /= np.float32(255)
        return (*inputs, {"method": "unit", "scale": "pixels / 255"})
    # The mean image in float64 (accumulated without a float64 copy of the pixels), so it does
    # not depend on summation order or float32 round-off; then one float32 image for both.
    mean_image = (train.mean(axis=0, dtype=np.float64) / 127.5 - 1.0).astype(np.float32)
    for x in inputs:
        x /= np.float32(127.5)
        x -= np.float32(1)
        x -= mean_image
    how = {
        "method": "mean_image",
        "scale": "pixels / 127.5 - 1, less the train split's mean image (32, 32, 3)",
        "channel_means": [float(m) for m in mean_image.mean(axis=(0, 1), dtype=np.float64)],
        "mean_image_range": [float(mean_image.min()), float(mean_image.max())],
    }
    return (*inputs, how)
