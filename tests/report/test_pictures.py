"""Pictures: the per-layer forward pass matches the model, colours are exact, files are PNGs."""

import os

import jax
import numpy as np
import pytest

from jaxshrink.config import schema as config_lib
from jaxshrink.core import models, spec
from jaxshrink.report import pictures as visualize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 100


def _assert_empty(folder):
    assert os.listdir(folder) == []


@pytest.fixture(scope="module")
def net():
    config = config_lib.base_config("sobel")
    model = models.get_model(config.model, (16, 16, 1))
    params = model.init(jax.random.PRNGKey(0))
    image = np.random.default_rng(0).random((16, 16, 1), np.float32)
    return model, params, spec.full(model.spec), image


def _disable(masks, name, unit):
    out = {k: np.asarray(v).copy() for k, v in masks.items()}
    out[name][unit] = False
    return out


def test_signed_rgb_colours():
    rgb = visualize.signed_rgb(np.array([-2.0, 0.0, 2.0, 1.0, -9.0]), scale=2.0)
    np.testing.assert_array_equal(rgb, [[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0.5, 0], [1, 0, 0]])
    # Default scale: the largest magnitude; a zero scale draws black.
    np.testing.assert_array_equal(visualize.signed_rgb(np.array([[-4.0, 1.0]]))[0, 0], [1, 0, 0])
    np.testing.assert_array_equal(visualize.signed_rgb(np.zeros((2, 2))), np.zeros((2, 2, 3)))


def test_layer_outputs_are_the_signed_values_before_activation(net):
    model, params, masks, image = net
    masks = _disable(masks, "conv_1", 2)
    outs = visualize.layer_outputs(model, params, masks, image)
    assert [name for name, _ in outs] == ["conv_0", "conv_1", "conv_2"]
    assert [o.shape for _, o in outs] == [(16, 16, 5), (16, 16, 5), (16, 16, 1)]
    # The FCN applies ReLU after every layer: relu(last) is the network's output.
    expected = np.asarray(model.apply(params, masks, image[None]))[0]
    np.testing.assert_allclose(np.maximum(outs[-1][1], 0), expected, atol=1e-5, rtol=1e-5)
    assert np.any(outs[0][1] < 0)  # signed: before the ReLU
    assert np.all(outs[1][1][..., 2] == 0.0)  # a disabled unit passes nothing on
    assert np.any(outs[1][1][..., 1] != 0.0)
    # The first layer's values are the plain convolution plus bias.
    p = params["conv_0"]
    want = (
        jax.lax.conv_general_dilated(
            image[None],
            p["kernel"],
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision="highest",
        )[0]
        + p["bias"]
    )
    np.testing.assert_allclose(outs[0][1], want, atol=1e-5, rtol=1e-5)


def test_save_masks_and_outputs(tmp_path, net):
    model, params, masks, image = net
    off = _disable(_disable(masks, "conv_0", 0), "conv_1", 4)
    for name, m in (("on", masks), ("off", off)):
        path = str(tmp_path / f"masks_{name}.png")
        _assert_png(visualize.save_masks(path, model.spec, params, m, "t"))
        path = str(tmp_path / f"out_{name}.png")
        _assert_png(visualize.save_filter_outputs(path, model, params, m, image))
    stages = tmp_path / "stages.png"
    assert visualize.save_filter_outputs_stages(
        str(stages), model, [("early", params, masks), ("late", params, off)], image
    )
    _assert_png(stages)
    # Deterministic: the same drawing gives the same bytes.
    again = visualize.save_masks(str(tmp_path / "again.png"), model.spec, params, off, "t")
    assert open(again, "rb").read() == open(tmp_path / "masks_off.png", "rb").read()


def test_a_bypassed_layer_is_labelled_so_in_both_pictures(tmp_path, net, monkeypatch):
    model, params, masks, image = net
    config = config_lib.base_config("sobel")
    config.model.bypass = True
    bypassing = models.get_model(config.model, (16, 16, 1))
    none_alive = {**masks, "conv_1": np.zeros(5, bool)}
    one_alive = {**masks, "conv_1": np.arange(5) == 2}
    layers = {layer.name: layer for layer in bypassing.spec.layers}
    # Only a bypass layer with no unit alive passes its input on.
    assert visualize._row_label(layers["conv_1"], none_alive["conv_1"]) == "conv_1\nbypassed"
    assert visualize._row_label(layers["conv_1"], one_alive["conv_1"]) == "conv_1"
    plain = {layer.name: layer for layer in model.spec.layers}["conv_1"]
    assert visualize._row_label(plain, none_alive["conv_1"]) == "conv_1"
    # An emptied branch of a plain module is removed, not passed through.
    branch = visualize._row_label(layers["conv_1"], none_alive["conv_1"], grouped=True)
    assert branch == "conv_1\nbranch removed"
    # The label reaches the files: unlabelled, the same drawing has other bytes.
    drawn = {}
    for labelled in (True, False):
        if not labelled:
            monkeypatch.setattr(visualize, "_row_label", lambda layer, *_: layer.name)
        drawn[labelled] = [
            open(path, "rb").read()
            for path in (
                visualize.save_masks(
                    str(tmp_path / f"m{labelled}.png"), bypassing.spec, params, none_alive
                ),
                visualize.save_filter_outputs(
                    str(tmp_path / f"o{labelled}.png"), bypassing, params, none_alive, image
                ),
            )
        ]
    assert all(a != b for a, b in zip(drawn[True], drawn[False], strict=True))


def test_save_curves_timeline_kept(tmp_path):
    curve = visualize.save_training_curve(
        str(tmp_path / "curve.png"), [0, 10, 20], [1.0, 0.5, 0.2], [10, 20], [0.3, 0.6], "run"
    )
    _assert_png(curve)
    _assert_png(visualize.save_training_curve(str(tmp_path / "c0.png"), [0, 1], [0.0, -1.0]))
    rounds = [
        {"candidate": "conv_1/3", "score": 0.8, "reference": 0.82, "ratio": 0.97, "accepted": True},
        {"candidate": "conv_0/1", "score": 0.5, "reference": 0.8, "ratio": 0.62, "accepted": False},
        {"candidate": "conv_1/0", "score": 0.81, "reference": 0.8, "ratio": 1.01, "accepted": True},
    ]
    _assert_png(visualize.save_timeline(str(tmp_path / "t.png"), rounds, 0.82, threshold=0.95))
    _assert_png(visualize.save_timeline(str(tmp_path / "t0.png"), [], 0.82, threshold=0.95))
    kept = [[True, False, True, True, True], [False, True, True], [True]]
    _assert_png(
        visualize.save_kept_matrix(str(tmp_path / "k.png"), kept, ["conv_0", "conv_1", "conv_2"])
    )


def test_save_triptychs(tmp_path):
    pics = np.random.default_rng(1).random((2, 8, 8, 1))
    path = tmp_path / "sub" / "trip.png"
    assert visualize.save_triptychs(str(path), pics, pics, pics, "F1 1.0") == str(path)
    _assert_png(path)


def test_labelled_and_regression_pictures(tmp_path):
    images = np.random.default_rng(2).random((3, 8, 8, 1))
    logits = np.eye(4)[[1, 2, 0]]
    path = visualize.save_labelled(str(tmp_path / "l.png"), images, np.array([1, 3, 0]), logits)
    _assert_png(path)
    y = np.linspace(0, 2, 20)[:, None]
    _assert_png(visualize.save_regression(str(tmp_path / "r.png"), None, y, y + 0.01, "t"))


def test_failing_draw_leaves_nothing(tmp_path, net):
    model, params, masks, image = net
    dense = models.sequential_model(["dense:3", "dense:1"], (4,))
    dense_params = dense.init(jax.random.PRNGKey(0))
    pics = np.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match="no square 2-D convolution"):
        visualize.save_masks(str(tmp_path / "m.png"), dense.spec, dense_params, None)
    with pytest.raises(ValueError, match="expected one example"):
        path = str(tmp_path / "o.png")
        visualize.save_filter_outputs(path, model, params, masks, np.zeros((8, 8, 3)))
    with pytest.raises(ValueError):
        visualize.save_kept_matrix(str(tmp_path / "k.png"), [[True]], ["a", "b"])
    with pytest.raises(ValueError):
        visualize.save_training_curve(str(tmp_path / "c.png"), [0, 1, 2], [1.0])
    with pytest.raises(ValueError):
        visualize.save_triptychs(str(tmp_path / "t.png"), pics, pics[:1], pics)
    _assert_empty(tmp_path)
    # A failure while writing (unknown format) removes the temporary file too.
    with pytest.raises(ValueError):
        visualize.save_kept_matrix(str(tmp_path / "k.notaformat"), [[True]], ["a"])
    _assert_empty(tmp_path)


def test_failure_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "k.png")
    visualize.save_kept_matrix(path, [[True, False]], ["conv_0"])
    before = open(path, "rb").read()
    with pytest.raises(ValueError):
        visualize.save_kept_matrix(path, [[True]], ["a", "b"])
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["k.png"]
