"""Tests for the 'cifar10' dataset (jaxshrink.data.cifar10) on mocked data: nothing downloads."""

import json
import os
import pickle

import numpy as np
import pytest

from jaxshrink import data
from jaxshrink.core import errors
from jaxshrink.data import cifar10

# Rows per fake batch file: data_batch_1 .. data_batch_5, then test_batch.
TRAIN_ROWS = (3, 2, 4, 1, 2)
EVAL_ROWS = 5


def _config(**overrides):
    cfg = data.default_config("cifar10")
    cfg.update(overrides)
    return cfg


def _hand_row() -> np.ndarray:
    """One image as the authors store it: the red plane, then green, then blue, row-major."""
    red = np.arange(1024) % 251
    green = (np.arange(1024) * 7) % 253
    blue = 255 - np.arange(1024) % 256
    red[0], green[0], blue[0] = 10, 20, 30  # Pixel (0, 0).
    return np.concatenate([red, green, blue]).astype(np.uint8)


def _write_folder(folder, protocols=(2, 3, 4, 5, 4, 2)):
    """A tiny cifar-10-batches-py; returns {file name: (rows (N, 3072) uint8, labels)}."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(42)
    names = [*cifar10.TRAIN_FILES, "test_batch"]
    written = {}
    for k, (name, rows) in enumerate(zip(names, [*TRAIN_ROWS, EVAL_ROWS], strict=True)):
        pixels = rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
        pixels[:, 0] = k  # Every image distinct across files, so inputs can tell splits apart.
        pixels[:, 1] = np.arange(rows)
        if name == "data_batch_1":
            pixels[0] = _hand_row()
        labels = [int(v) for v in rng.integers(0, 10, size=rows)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": pixels}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocols[k])
        written[name] = (pixels, labels)
    names = [n.encode() for n in cifar10.CLASS_NAMES]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    return written


def _hwc(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _expected(written, sources):
    """The uint8 HWC pixels and labels of the fake examples named by `sources`."""
    pixels, labels = [], []
    for source in sources:
        name, row = source.removesuffix("]").split("[")
        pixels.append(_hwc(written[name][0][int(row)])[0])
        labels.append(written[name][1][int(row)])
    return np.stack(pixels), np.array(labels)


@pytest.fixture
def fake_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    return folder, _write_folder(folder)


# -------------------------------------------------------------------------------- registry


def test_registered_with_defaults():
    assert data.DATASETS["cifar10"] is cifar10 and cifar10.SOURCES == ("tfds", "folder")
    cfg = data.default_config("cifar10")
    assert (cfg.dataset, cfg.source, cfg.seed, cfg.folder) == ("cifar10", "tfds", 0, "")
    assert (cfg.train_size, cfg.eval_size, cfg.normalize) == (0, 0, "mean_image")
    assert (cfg.tfds_name, cfg.tfds_data_dir) == ("cifar10", "")
    assert (cfg.tfds_train_split, cfg.tfds_eval_split) == ("train", "test")
    assert (cfg.tfds_image_key, cfg.tfds_label_key) == ("image", "label")
    assert data.input_shape(cfg) == (32, 32, 3)
    assert data.input_shape(_config(source="folder")) == (32, 32, 3)
    with pytest.raises(errors.ConfigError, match="allowed here: 'cifar10'"):
        cifar10.default_config("mnist")


# ---------------------------------------------------------------------------------- folder


def test_folder_reads_every_batch_as_nhwc(fake_folder, capsys):
    folder, written = fake_folder
    dataset = data.load_dataset(_config(source="folder", folder=str(folder), normalize="unit"))
    assert (len(dataset.train), len(dataset.eval)) == (sum(TRAIN_ROWS), EVAL_ROWS)
    assert dataset.train.sources == tuple(
        f"data_batch_{k + 1}[{row}]" for k, rows in enumerate(TRAIN_ROWS) for row in range(rows)
    )
    assert dataset.eval.sources == tuple(f"test_batch[{row}]" for row in range(EVAL_ROWS))
    for split in (dataset.train, dataset.eval):
        assert split.inputs.shape == (len(split), 32, 32, 3) and split.inputs.dtype == np.float32
        assert split.targets.shape == (len(split),) and split.targets.dtype == np.int32
        pixels, labels = _expected(written, split.sources)
        np.testing.assert_array_equal(split.inputs, (pixels / 255).astype(np.float32))
        np.testing.assert_array_equal(split.targets, labels)
    # CHW rows to HWC by hand: pixel (0, 0) is (10, 20, 30); (i, j) is plane[c][32 i + j].
    first = np.rint(dataset.train.inputs[0] * 255).astype(np.int64)
    np.testing.assert_array_equal(first[0, 0], [10, 20, 30])
    planes = _hand_row().astype(np.int64).reshape(3, 1024)
    for i, j in [(0, 1), (1, 0), (5, 17), (31, 31)]:
        np.testing.assert_array_equal(first[i, j], planes[:, 32 * i + j])
    # Train and eval share no example.
    assert not set(dataset.train.sources) & set(dataset.eval.sources)
    train_rows = {row.tobytes() for row in dataset.train.inputs}
    assert len(train_rows) == len(dataset.train)
    assert not train_rows & {row.tobytes() for row in dataset.eval.inputs}
    info = json.loads(json.dumps(dataset.info))
    assert (info["dataset"], info["source"], info["num_classes"]) == ("cifar10", "folder", 10)
    assert (info["train_examples"], info["eval_examples"]) == (sum(TRAIN_ROWS), EVAL_ROWS)
    assert info["normalization"]["method"] == "unit" and len(info["class_names"]) == 10
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and info["description"] in out
    assert f"{sum(TRAIN_ROWS)} train / {EVAL_ROWS} eval" in info["description"]


def test_folder_mean_image_normalization(fake_folder):
    folder, written = fake_folder
    dataset = cifar10.load(_config(source="folder", folder=str(folder)))
    train_pixels, _ = _expected(written, dataset.train.sources)
    eval_pixels, _ = _expected(written, dataset.eval.sources)
    mean_image = (train_pixels / 127.5 - 1).mean(axis=0)  # float64, (32, 32, 3)
    np.testing.assert_allclose(
        dataset.train.inputs, train_pixels / 127.5 - 1 - mean_image, atol=1e-6
    )
    # Eval is shifted by the train mean image, not its own.
    np.testing.assert_allclose(dataset.eval.inputs, eval_pixels / 127.5 - 1 - mean_image, atol=1e-6)
    assert np.abs(dataset.train.inputs.mean(axis=0, dtype=np.float64)).max() < 1e-6
    assert np.abs(dataset.eval.inputs.mean(axis=0, dtype=np.float64)).max() > 0.1
    norm = dataset.info["normalization"]
    assert norm["method"] == "mean_image"
    np.testing.assert_allclose(norm["channel_means"], mean_image.mean(axis=(0, 1)), atol=1e-6)
    np.testing.assert_allclose(norm["mean_image_range"], [mean_image.min(), mean_image.max()])


def test_folder_sizes_take_seeded_subsets(fake_folder):
    folder, written = fake_folder
    cfg = {"source": "folder", "folder": str(folder), "normalize": "unit"}
    full = cifar10.load(_config(**cfg))
    first = cifar10.load(_config(**cfg, train_size=5, eval_size=3))
    again = cifar10.load(_config(**cfg, train_size=5, eval_size=3))
    other = cifar10.load(_config(**cfg, train_size=5, eval_size=3, seed=1))
    assert (len(first.train), len(first.eval)) == (5, 3)
    assert first.train.sources == again.train.sources and first.eval.sources == again.eval.sources
    assert first.train.sources != other.train.sources
    for part, whole in ((first.train, full.train), (first.eval, full.eval)):
        assert set(part.sources) < set(whole.sources)
        assert list(part.sources) == [s for s in whole.sources if s in part.sources]  # File order.
        pixels, labels = _expected(written, part.sources)
        np.testing.assert_array_equal(part.inputs, (pixels / 255).astype(np.float32))
        np.testing.assert_array_equal(part.targets, labels)
    assert "seed 0" in first.info["description"]
    # A size at or above the split's takes it all; one split's size leaves the other alone.
    bigger = cifar10.load(_config(**cfg, train_size=100, eval_size=3))
    assert bigger.train.sources == full.train.sources and bigger.eval.sources == first.eval.sources


def test_folder_may_hold_the_batches_folder(fake_folder):
    folder, _ = fake_folder
    dataset = cifar10.load(_config(source="folder", folder=str(folder.parent), normalize="unit"))
    assert (len(dataset.train), len(dataset.eval)) == (sum(TRAIN_ROWS), EVAL_ROWS)


def _assert_prepare_hint(message: str):
    assert "\n" not in message and message.startswith("CIFAR-10 not found: ")
    assert "tfds build cifar10 --file_format=array_record" in message
    assert "cifar-10-batches-py" in message and "data.source=folder" in message


@pytest.mark.parametrize("what", ["empty field", "missing", "a file", "empty folder"])
def test_folder_not_found_says_how_to_prepare(tmp_path, what):
    path = {
        "empty field": "",
        "missing": str(tmp_path / "nowhere"),
        "a file": str(tmp_path / "file"),
        "empty folder": str(tmp_path),
    }[what]
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(errors.DataError) as info:
        data.load_dataset(_config(source="folder", folder=path))
    _assert_prepare_hint(str(info.value))


def test_folder_missing_batch_file(fake_folder):
    folder, _ = fake_folder
    (folder / "data_batch_3").unlink()
    (folder / "test_batch").unlink()
    with pytest.raises(errors.DataError) as info:
        cifar10.load(_config(source="folder", folder=str(folder)))
    _assert_prepare_hint(str(info.value))
    assert "lacks data_batch_3, test_batch" in str(info.value)


class _Planted:
    """Unpickling this would create a folder: what a hostile file could do instead."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_folder_refuses_foreign_pickles(fake_folder, tmp_path):
    folder, _ = fake_folder
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _Planted(str(marker)), b"labels": [0]}, f)
    with pytest.raises(errors.DataError, match="is not a CIFAR-10 batch") as info:
        cifar10.load(_config(source="folder", folder=str(folder)))
    assert "refused global" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "batch, fragment",
    [
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels outside 0..9"),
        ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, "expected uint8 (N, 3072)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "expected uint8 (N, 3072)"),
        ({b"labels": [0]}, "is not a CIFAR-10 batch (KeyError"),
    ],
)
def test_folder_bad_batch_is_a_data_error(fake_folder, batch, fragment):
    folder, _ = fake_folder
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(errors.DataError) as info:
        cifar10.load(_config(source="folder", folder=str(folder)))
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"source": "builtin"}, "data.source: got 'builtin'; allowed: ('tfds', 'folder')"),
        ({"normalize": "standardize"}, "data.normalize: got 'standardize'; allowed: ('mean_image'"),
        ({"train_size": -1}, "data.train_size: got -1; allowed: an integer >= 0"),
        ({"eval_size": -2}, "data.eval_size: got -2"),
    ],
)
def test_bad_config_values(overrides, fragment):
    with pytest.raises(errors.ConfigError) as info:
        cifar10.load(_config(**overrides))
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ tfds


def test_tfds_reads_mocked_records():
    import tensorflow_datasets as tfds

    cfg = _config(train_size=4, eval_size=0, normalize="unit")
    with tfds.testing.mock_data(num_examples=7):
        dataset = data.load_dataset(cfg)
        again = cifar10.load(cfg)
        standardized = cifar10.load(_config(train_size=5))
        train_records = tfds.data_source("cifar10", split="train")
        records = {f"cifar10/train[{i}]": train_records[i] for i in range(len(train_records))}
    assert (len(dataset.train), len(dataset.eval)) == (4, 7)  # 0 = the whole split.
    assert dataset.eval.sources == tuple(f"cifar10/test[{i}]" for i in range(7))
    assert dataset.train.sources == again.train.sources
    assert set(dataset.train.sources) < set(records)
    for split in (dataset.train, dataset.eval):
        assert split.inputs.shape == (len(split), 32, 32, 3) and split.inputs.dtype == np.float32
        assert split.targets.shape == (len(split),) and split.targets.dtype == np.int32
        assert 0 <= split.targets.min() and split.targets.max() <= 9
    for source, inputs, label in zip(
        dataset.train.sources, dataset.train.inputs, dataset.train.targets, strict=True
    ):
        record = records[source]
        np.testing.assert_array_equal(inputs, (record["image"] / 255).astype(np.float32))
        assert label == record["label"]
    assert "tfds 'cifar10'" in dataset.info["description"]
    assert dataset.info["source"] == "tfds" and dataset.info["num_classes"] == 10
    train_pixels = np.stack([records[s]["image"] for s in standardized.train.sources])
    mean_image = (train_pixels / 127.5 - 1).mean(axis=0)
    np.testing.assert_allclose(
        standardized.train.inputs, train_pixels / 127.5 - 1 - mean_image, atol=1e-6
    )


def test_tfds_unknown_image_key():
    import tensorflow_datasets as tfds

    cfg = _config(train_size=2, eval_size=2, tfds_image_key="picture")
    with tfds.testing.mock_data(num_examples=3), pytest.raises(errors.ConfigError) as info:
        cifar10.load(cfg)
    assert str(info.value).startswith("data.tfds_image_key: got 'picture'")


def test_tfds_not_prepared_says_how_to_prepare(tmp_path):
    cfg = _config(tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(errors.DataError) as info:
        data.load_dataset(cfg)
    message = str(info.value)
    _assert_prepare_hint(message)
    assert "is not prepared" in message and str(tmp_path / "tfds") in message
