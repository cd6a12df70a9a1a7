"""Pictures: the per-layer forward pass matches the model, colours are exact, files are PNGs."""

import os

import jax
import numpy as np
import pytest

from jaxshrink import config as config_lib
from jaxshrink import models, visualize

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
    config.data.crop_size = 16
    params = models.init(jax.random.PRNGKey(0), config)
    image = np.random.default_rng(0).random((16, 16, 1), np.float32)
    return config, params, models.init_masks(params), image


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


def test_layer_outputs_match_apply(net):
    config, params, masks, image = net
    apply = models.make_apply(config)
    masks = _disable(masks, "conv_1", 2)
    outs = visualize.layer_outputs(params, masks, image)
    assert [o.shape for o in outs] == [(16, 16, 5), (16, 16, 5), (16, 16, 1)]
    expected = np.asarray(apply(params, masks, image[None]))[0]
    np.testing.assert_allclose(outs[-1], expected, atol=1e-5, rtol=1e-5)
    assert np.all(outs[1][..., 2] == 0.0)
    assert np.any(outs[1][..., 1] != 0.0)


def test_save_masks_and_outputs(tmp_path, net):
    _, params, masks, image = net
    off = _disable(_disable(masks, "conv_0", 0), "conv_1", 4)
    for name, m in (("on", masks), ("off", off)):
        _assert_png(visualize.save_masks(str(tmp_path / f"masks_{name}.png"), params, m, "t"))
        _assert_png(
            visualize.save_filter_outputs(str(tmp_path / f"out_{name}.png"), params, m, image)
        )
    pair = tmp_path / "pair.png"
    assert visualize.save_filter_outputs_pair(str(pair), (params, masks), (params, off), image)
    _assert_png(pair)
    # Deterministic: the same drawing gives the same bytes.
    again = visualize.save_masks(str(tmp_path / "again.png"), params, off, "t")
    assert open(again, "rb").read() == open(tmp_path / "masks_off.png", "rb").read()


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


def test_failing_draw_leaves_nothing(tmp_path, net):
    _, params, masks, image = net
    bad = dict(params, conv_1={"kernel": np.zeros((5, 5, 5)), "bias": np.zeros(5)})
    pics = np.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError):
        visualize.save_masks(str(tmp_path / "m.png"), bad, None)
    with pytest.raises(Exception):  # noqa: B017 - the convolution's own shape error
        visualize.save_filter_outputs(str(tmp_path / "o.png"), params, masks, np.zeros((8, 8, 3)))
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
