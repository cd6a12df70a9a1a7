"""Opening one split of a prepared TensorFlow Datasets dataset, with one-line errors.

``tfds.data_source`` gives random access to a dataset prepared in the ArrayRecord format and
needs no TensorFlow. It is always called with ``download=False``: preparing a dataset needs
TensorFlow and the internet, which a training machine may lack, and an attempt would only fail
half way with an unrelated ImportError. A dataset that is not prepared is instead a
`jaxshrink.core.errors.DataError` saying how to prepare it.

The config fields read are shared by every dataset with a tfds source: ``tfds_name``,
``tfds_data_dir`` ('' = the tfds default) and ``tfds_train_split`` / ``tfds_eval_split``.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from jaxshrink.core import errors


@contextlib.contextmanager
def _quiet():
    """tfds logs a warning per variant folder it probes; the error we raise says it all."""
    from absl import logging

    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(level)


def open_split(data_cfg, split: str):
    """Returns the random-access source of the `split` ('train' or 'eval') split of `data_cfg`.

    Raises:
      errors.ConfigError: on an unknown dataset name or split name.
      errors.DataError: when the dataset is not prepared (in the ArrayRecord format) in the
        data dir.
    """
    import tensorflow_datasets as tfds  # Lazy: a slow import, and only this source needs it.

    name, data_dir = data_cfg.tfds_name, data_cfg.tfds_data_dir or None
    tfds_split = data_cfg[f"tfds_{split}_split"]
    try:
        with _quiet():
            return tfds.data_source(name, split=tfds_split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise errors.ConfigError(
            f"data.tfds_name: got {name!r}; allowed: a tfds dataset name "
            f"({str(err).splitlines()[0]})"
        ) from err
    # What tfds raises here depends on what is missing: no data at all reads as data in the
    # TFRecord format (NotImplementedError) or, in the default data dir, as a KeyError on an
    # empty list of splits; an unknown split is a ValueError. Tell them apart by asking the
    # builder, only on this error path.
    except (NotImplementedError, ValueError, KeyError, AssertionError, OSError) as err:
        with _quiet():
            explained = _explain(tfds, data_cfg, split, err)
        raise explained from err


def _explain(tfds, data_cfg, split: str, err: Exception) -> errors.UserError:
    name, data_dir = data_cfg.tfds_name, data_cfg.tfds_data_dir or None
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        return errors.DataError(
            f"data.tfds_name={name!r} is not prepared in {where} (looked in {builder.data_dir}); "
            f"prepare it on a machine with internet and TensorFlow: `tfds build {name} "
            "--file_format=array_record --data_dir=DIR`, copy DIR here and set "
            "--config.data.tfds_data_dir=DIR"
        )
    splits = list(builder.info.splits)
    if "Unknown split" in str(err):
        field = f"tfds_{split}_split"
        return errors.ConfigError(f"data.{field}: got {data_cfg[field]!r}; allowed: {splits}")
    first_line = " ".join(str(err).split("\n", 1)[0].split())
    return errors.DataError(
        f"data.tfds_name={name!r} in {builder.data_dir} cannot be read at random "
        f"({type(err).__name__}: {first_line}); rebuild it with `tfds build {name} "
        "--file_format=array_record`"
    )


def check_size(data_cfg, split: str) -> int:
    """`data.<split>_size` as an integer >= 0 (0 = all); raises ConfigError otherwise."""
    size = data_cfg[f"{split}_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise errors.ConfigError(
            f"data.{split}_size: got {size!r}; allowed: an integer >= 0 (0 = all)"
        )
    return size


def subset(count: int, limit: int, seed: int, stream: int) -> np.ndarray:
    """Indices of `limit` of `count` examples chosen by (`seed`, `stream`); all if 0 or more."""
    if not limit or limit >= count:
        return np.arange(count)
    # A seeded subset rather than the first examples, which may not be a fair sample; sorted so
    # that records are read in file order.
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(count, size=limit, replace=False))


def read_labelled_images(source, indices, prefix: str, data_cfg, shape, num_classes: int):
    """Reads the records at `indices` of a classification dataset.

    Each record's image (feature `data.tfds_image_key`) must hold `prod(shape)` uint8
    pixels (MNIST's (28, 28, 1) is read as (28, 28)); its label (`data.tfds_label_key`)
    must be in 0..num_classes-1.

    Returns:
      (N, *shape) uint8 pixels, (N,) int32 labels, and the names 'prefix[index]'.
    """
    if not len(indices):
        raise errors.DataError(f"tfds {prefix} has no record")
    keys = {"tfds_image_key": data_cfg.tfds_image_key, "tfds_label_key": data_cfg.tfds_label_key}
    pixels = np.empty((len(indices), *shape), np.uint8)
    labels = np.empty(len(indices), np.int32)
    for n, index in enumerate(indices):
        record = source[int(index)]
        for field, key in keys.items():
            if key not in record:
                raise errors.ConfigError(
                    f"data.{field}: got {key!r}, not a feature of {prefix}; "
                    f"allowed: {sorted(record)}"
                )
        image = np.asarray(record[keys["tfds_image_key"]])
        if image.size != np.prod(shape) or image.dtype != np.uint8:
            raise errors.DataError(
                f"tfds {prefix}[{index}] has a {image.dtype} image of shape {image.shape}; "
                f"expected uint8 {tuple(shape)}"
            )
        pixels[n] = image.reshape(shape)
        labels[n] = int(record[keys["tfds_label_key"]])
    if labels.min() < 0 or labels.max() >= num_classes:
        raise errors.DataError(f"tfds {prefix} has labels outside 0..{num_classes - 1}")
    return pixels, labels, tuple(f"{prefix}[{index}]" for index in indices)
