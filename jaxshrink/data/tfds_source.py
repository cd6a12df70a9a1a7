"""Opening one split of a prepared TensorFlow Datasets dataset, with one-line errors.

``tfds.data_source`` gives random access to a dataset prepared in the ArrayRecord format and
needs no TensorFlow. It is always called with ``download=False``: preparing a dataset needs
TensorFlow and the internet, which a training machine may lack, and an attempt would only fail
half way with an unrelated ImportError. A dataset that is not prepared is instead a
`jaxshrink.errors.DataError` saying how to prepare it.

The config fields read are shared by every dataset with a tfds source: ``tfds_name``,
``tfds_data_dir`` ('' = the tfds default) and ``tfds_train_split`` / ``tfds_eval_split``.
"""

from __future__ import annotations

import os

from jaxshrink import errors


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
        raise _explain(tfds, data_cfg, split, err) from err


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
