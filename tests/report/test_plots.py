"""Classifier and dense-net pictures: exact numbers, PNGs that open, same bytes, no debris."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxshrink.report import plots


def _open_png(path, min_side=150):
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        image.load()
    assert min_side <= width <= 4000 and min_side <= height <= 4000, (width, height)
    return width, height


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _same_twice(save, tmp_path, name, *args, **kwargs):
    """Draws twice into two files; returns the first path after checking equal bytes."""
    first = save(str(tmp_path / f"{name}.png"), *args, **kwargs)
    second = save(str(tmp_path / f"{name}_again.png"), *args, **kwargs)
    assert first == str(tmp_path / f"{name}.png")
    assert _bytes(first) == _bytes(second)
    return first


# ----------------------------------------------------------------- confusion matrix


def test_confusion_matrix_by_hand():
    labels = [0, 0, 0, 1, 1, 3, 3, 3, 3]
    predictions = [0, 1, 0, 1, 3, 3, 0, 3, 3]
    expected = np.array(
        [
            [2, 1, 0, 0],
            [0, 1, 0, 1],
            [0, 0, 0, 0],  # class 2 never occurs (and is never predicted)
            [1, 0, 0, 3],
        ]
    )
    counts = plots.confusion_matrix(labels, predictions, 4)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(labels, minlength=4))
    np.testing.assert_array_equal(counts.sum(axis=0), np.bincount(predictions, minlength=4))
    assert np.trace(counts) == 6
    # Empty input: all zeros; float ids that are integers are accepted.
    np.testing.assert_array_equal(plots.confusion_matrix([], [], 2), np.zeros((2, 2)))
    np.testing.assert_array_equal(plots.confusion_matrix([1.0], [0.0], 2), [[0, 0], [1, 0]])


@pytest.mark.parametrize(
    "labels, predictions, num_classes, match",
    [
        ([0, 4], [0, 1], 4, "class id 4"),
        ([0, 1], [0, -1], 4, "class id -1"),
        ([0, 1], [0], 4, "differ in length"),
        ([0.5], [0], 4, "integers"),
        ([[0]], [[0]], 4, "1-D"),
        ([0], [0], 0, "num_classes"),
    ],
)
def test_confusion_matrix_rejects(labels, predictions, num_classes, match):
    with pytest.raises(ValueError, match=match):
        plots.confusion_matrix(labels, predictions, num_classes)


def test_save_confusion_matrix(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 60)
    predictions = np.where(rng.random(60) < 0.7, labels, rng.integers(0, 5, 60))
    labels[labels == 2] = 1  # a class without examples: its row stays white
    names = ["plane", "car", "bird", "cat", "deer"]
    path = _same_twice(
        plots.save_confusion_matrix, tmp_path, "cm", labels, predictions, 5, names, "test set"
    )
    _open_png(path, min_side=300)
    _open_png(plots.save_confusion_matrix(str(tmp_path / "empty.png"), [], [], 3))
    with pytest.raises(ValueError, match="2 class_names for 5 classes"):
        plots.save_confusion_matrix(str(tmp_path / "bad.png"), labels, predictions, 5, ["a", "b"])
    assert not (tmp_path / "bad.png").exists()


def test_the_confusion_matrix_normalised_as_thesis_004_did():
    # 4 examples of class 0 (3 right, 1 taken for a 1), 4 of class 1 (2 right, 2 taken
    # for a 0), none of class 2, which is never predicted either.
    counts = plots.confusion_matrix([0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 0, 0], 3)
    assert counts.tolist() == [[3, 1, 0], [2, 2, 0], [0, 0, 0]]  # rows true
    # 004 (3.6.3): M(predicted, true), each row over its total. Predicted 0: 5 times,
    # 3 of them class 0; predicted 1: 3 times, 1 of them class 0.
    cells, colour = plots.normalised_confusion(counts, "predicted")
    assert cells.tolist() == [[3, 2, 0], [1, 2, 0], [0, 0, 0]]
    np.testing.assert_allclose(colour, [[3 / 5, 2 / 5, 0], [1 / 3, 2 / 3, 0], [0, 0, 0]])
    # Rows true, each over its total: the recall on the diagonal.
    cells, colour = plots.normalised_confusion(counts, "true")
    assert cells.tolist() == counts.tolist()
    np.testing.assert_allclose(colour, [[3 / 4, 1 / 4, 0], [2 / 4, 2 / 4, 0], [0, 0, 0]])
    _, colour = plots.normalised_confusion(counts, "none")
    np.testing.assert_allclose(colour, counts / 3)
    with pytest.raises(ValueError, match="normalize: 'rows'"):
        plots.normalised_confusion(counts, "rows")


def test_save_accuracy_curves(tmp_path):
    curves = {
        "A": ([100, 200, 300], [0.5, 0.7, 0.8], [0.45, 0.6, 0.7]),
        "B": ([100, 200, 300], None, [0.5, 0.65, 0.72]),
    }
    _open_png(_same_twice(plots.save_accuracy_curves, tmp_path, "acc", curves, "overlay"))
    with pytest.raises(ValueError, match="A: train accuracy"):
        plots.save_accuracy_curves(str(tmp_path / "bad.png"), {"A": ([1, 2], [0.5], [0.4, 0.5])})
    assert not (tmp_path / "bad.png").exists()


# --------------------------------------------------------------- first-layer filters


@pytest.mark.parametrize("c_in", [1, 3])
def test_save_first_layer_filters(tmp_path, c_in):
    kernel = np.random.default_rng(c_in).normal(size=(5, 5, c_in, 10))
    kernel[..., 7] = 0.25  # a constant filter: drawn, not a division by zero
    keep = np.ones(10, bool)
    keep[[2, 9]] = False
    path = _same_twice(
        plots.save_first_layer_filters, tmp_path, f"filters{c_in}", kernel, keep, "layer 0"
    )
    _open_png(path)
    _open_png(plots.save_first_layer_filters(str(tmp_path / "all.png"), kernel[..., :1]))


def test_filter_cells_are_normalised_per_filter():
    rgb = plots._filter_cell(np.array([[[1.0, 3.0, 5.0]], [[2.0, 2.0, 9.0]]]))
    np.testing.assert_allclose(rgb[..., 0], [[0.0], [0.125]])
    np.testing.assert_allclose(rgb.min(), 0.0)
    np.testing.assert_allclose(rgb.max(), 1.0)
    grey = plots._filter_cell(np.array([[[-2.0]], [[1.0]]]))  # signed code, own scale
    np.testing.assert_allclose(grey[:, 0], [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])


def test_save_first_layer_filters_rejects(tmp_path):
    target = tmp_path / "f.png"
    with pytest.raises(ValueError, match=r"\(5, 5, 3\)"):
        plots.save_first_layer_filters(str(target), np.zeros((5, 5, 3)))
    with pytest.raises(ValueError, match=r"\(3, 3, 2, 4\)"):
        plots.save_first_layer_filters(str(target), np.zeros((3, 3, 2, 4)))
    with pytest.raises(ValueError, match="keep shape"):
        plots.save_first_layer_filters(str(target), np.zeros((3, 3, 1, 4)), keep=[True])
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------ loss curves


def test_normalise_curve_exact():
    out = plots.normalise_curve([4, 2, 1])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.0, 0.5, 0.25])
    np.testing.assert_array_equal(plots.normalise_curve([-2.0, -1.0]), [1.0, 0.5])
    for bad, match in (([], "empty"), ([0.0, 1.0], "0.0"), ([np.nan, 1.0], "nan")):
        with pytest.raises(ValueError, match=match):
            plots.normalise_curve(bad)
    with pytest.raises(ValueError, match="first value is inf"):
        plots.normalise_curve([np.inf])


def test_save_normalised_loss(tmp_path):
    steps = np.arange(0, 500, 10)
    curves = {
        "5 filters": (steps, 2.0 * np.exp(-steps / 100) + 0.1),
        "20 filters": (steps, 0.5 * np.exp(-steps / 60) + 0.01),
        "short run": ([0, 100], [1.0, 0.4]),
    }
    path = _same_twice(plots.save_normalised_loss, tmp_path, "loss", curves, "MNIST")
    width, height = _open_png(path, min_side=300)
    assert width > height


@pytest.mark.parametrize(
    "curve, match",
    [
        (([], []), "'bad': cannot normalise an empty"),
        (([0, 1], [0.0, 1.0]), "'bad': .*first value is 0.0"),
        (([0, 1], [np.nan, 1.0]), "'bad': .*first value is nan"),
        (([0, 1], [1.0]), "'bad': steps"),
    ],
)
def test_save_normalised_loss_rejects(tmp_path, curve, match):
    curves = {"fine": ([0, 1], [2.0, 1.0]), "bad": curve}
    with pytest.raises(ValueError, match=match):
        plots.save_normalised_loss(str(tmp_path / "loss.png"), curves)
    assert os.listdir(tmp_path) == []


def test_save_normalised_loss_needs_a_curve(tmp_path):
    with pytest.raises(ValueError, match="no curves"):
        plots.save_normalised_loss(str(tmp_path / "loss.png"), {})
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------- unit weights


def _dense(units, n_in=2, n_out=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_in, units)), rng.normal(size=units), rng.normal(size=(units, n_out))


@pytest.mark.parametrize("kept", [0, 1, 7, 150])
def test_save_unit_weights(tmp_path, kept):
    w_in, bias, w_out = _dense(200)
    keep = np.zeros(200, bool)
    keep[np.random.default_rng(1).permutation(200)[:kept]] = True
    path = _same_twice(
        plots.save_unit_weights, tmp_path, f"units{kept}", w_in, bias, w_out, keep, "sum"
    )
    width, height = _open_png(path, min_side=150)
    if kept:
        assert width > 800 and height > 400
    else:  # only the text line
        assert height < 300


def test_save_unit_weights_other_shapes(tmp_path):
    # Three inputs, two outputs: norm vs bias, the strongest output weight as colour.
    w_in, bias, w_out = _dense(12, n_in=3, n_out=2)
    keep = np.arange(12) % 3 != 0
    _open_png(plots.save_unit_weights(str(tmp_path / "a.png"), w_in, bias, w_out, keep))
    # A 1-D w_out is one output.
    w_in, bias, w_out = _dense(6)
    _open_png(plots.save_unit_weights(str(tmp_path / "b.png"), w_in, bias, w_out[:, 0], [1] * 6))
    with pytest.raises(ValueError, match="bias shape"):
        plots.save_unit_weights(str(tmp_path / "c.png"), w_in, bias[:5], w_out, [1] * 6)
    with pytest.raises(ValueError, match="keep shape"):
        plots.save_unit_weights(str(tmp_path / "c.png"), w_in, bias, w_out, [1] * 5)
    assert not (tmp_path / "c.png").exists()


def test_non_finite_weights_still_draw(tmp_path):
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4))
    kernel[0, 0, 0, 1] = np.nan
    kernel[..., 2] = np.inf
    _open_png(plots.save_first_layer_filters(str(tmp_path / "f.png"), kernel))
    w_in, bias, w_out = _dense(5)
    w_in[:, 1] = np.nan
    w_out[3] = np.nan
    _open_png(plots.save_unit_weights(str(tmp_path / "u.png"), w_in, bias, w_out, [1] * 5))
