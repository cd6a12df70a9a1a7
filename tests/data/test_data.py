"""Tests for the sobel/canny datasets (jaxshrink.data.edges): grayscale conversion, edge targets,
the three sources and the cache."""

import hashlib
import math
import os
import re
import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from jaxshrink import data
from jaxshrink.core import errors
from jaxshrink.data import cache, edge_targets, edges
from jaxshrink.data import images as image_lib


def _config(tmp_path, **overrides):
    """A small builtin sobel config whose cache lives under tmp_path, never in the home folder."""
    cfg = data.default_config("sobel")
    cfg.update(
        {"crop_size": 32, "train_size": 20, "eval_size": 8, "cache_dir": str(tmp_path / "cache")}
    )
    cfg.update(overrides)
    return cfg


# The 16-bit images of the test folders: a split holding one stores its inputs in float32.
_16_BIT = {"sub/c16.png", "g16.png", "g16.tif"}


def _assert_split_ok(split, n, crop, task):
    assert split.inputs.shape == split.targets.shape == (n, crop, crop, 1)
    # Stored compactly: 8-bit gray values, Canny 0/255, Sobel float16.
    assert split.inputs.dtype == (np.float32 if _16_BIT & set(split.sources) else np.uint8)
    assert split.targets.dtype == (np.uint8 if task == "canny" else np.float16)
    assert len(split.sources) == n
    inputs, targets = data.decode(split.inputs), data.decode(split.targets)
    assert inputs.dtype == targets.dtype == np.float32
    assert 0 <= inputs.min() and inputs.max() <= 1
    if task == "canny":
        assert set(np.unique(targets)) <= {0.0, 1.0}
    else:
        assert 0 <= targets.min() and targets.max() <= 1


def _luma8(rgb):
    """The 8-bit gray value of 8-bit RGB, rounded half up, as a float in [0, 1]."""
    return np.floor(np.asarray(rgb, np.int64) @ [299, 587, 114] / 1000 + 0.5) / 255


# ----------------------------------------------------------------------------- conversions

_RGB = [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]]
# 8-bit colour gives 8-bit gray: 0.299 * 255 = 76.2 -> 76, 149.7 -> 150, 29.1 -> 29.
_RGB_GRAY = [[76 / 255, 150 / 255], [29 / 255, 1.0]]


@pytest.mark.parametrize(
    "img, expected",
    [
        pytest.param(np.array(_RGB, np.uint8), _RGB_GRAY, id="uint8-rgb"),
        pytest.param(
            np.dstack([np.array(_RGB, np.uint8), [[0, 128], [255, 7]]]).astype(np.uint8),
            _RGB_GRAY,
            id="uint8-rgba-alpha-dropped",
        ),
        pytest.param(
            np.array([[0, 65535], [32768, 1]], np.uint16),
            [[0, 1], [32768 / 65535, 1 / 65535]],
            id="uint16-gray",
        ),
        pytest.param(np.array([[True, False]]), [[1, 0]], id="bool"),
        pytest.param(np.array([[0.25, 1.5], [-0.5, 0.0]]), [[0.25, 1], [0, 0]], id="float-clipped"),
        pytest.param(np.array([[[51]]], np.uint8), [[0.2]], id="uint8-one-channel"),
        pytest.param(np.array([[[102, 0]]], np.uint8), [[0.4]], id="uint8-gray-alpha"),
    ],
)
def test_to_grayscale_float_values(img, expected):
    gray = image_lib.to_grayscale_float(img)
    assert gray.dtype == np.float32
    np.testing.assert_allclose(gray, np.asarray(expected, np.float32), rtol=0, atol=1e-7)
    compact = image_lib.to_grayscale(img)
    assert compact.dtype == (np.uint8 if img.dtype in (np.uint8, bool) else np.float32)
    np.testing.assert_array_equal(data.decode(compact), gray)


def test_luma_of_8bit_colour_is_rounded_to_8_bits_half_up_in_integers():
    # (0, 12, 4): 0.587 * 12 + 0.114 * 4 = 7.5 exactly, which float arithmetic may miss.
    rgb = np.array([[[0, 12, 4], [0, 0, 0], [255, 255, 255], [10, 0, 15], [2, 0, 0]]], np.uint8)
    np.testing.assert_array_equal(image_lib.to_grayscale(rgb), [[8, 0, 255, 5, 1]])
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    permille = pixels.astype(np.int64) @ [299, 587, 114]
    np.testing.assert_array_equal(image_lib.to_grayscale(pixels), (permille + 500) // 1000)
    # Alpha is dropped; gray and bilevel stay exact.
    rgba = np.dstack([pixels, np.zeros((64, 64), np.uint8)])
    np.testing.assert_array_equal(image_lib.to_grayscale(rgba), image_lib.to_grayscale(pixels))
    np.testing.assert_array_equal(image_lib.to_grayscale(pixels[..., 0]), pixels[..., 0])
    assert image_lib.to_grayscale(np.array([[True, False]])).tolist() == [[255, 0]]


@pytest.mark.parametrize(
    "img, error",
    [
        (np.zeros((2, 2, 5), np.uint8), ValueError),
        (np.zeros(4, np.uint8), ValueError),
        (np.array([["a"]]), TypeError),
    ],
)
def test_to_grayscale_float_rejects_bad_input(img, error):
    with pytest.raises(error):
        image_lib.to_grayscale_float(img)


def test_center_crop_takes_the_middle():
    img = np.arange(5 * 6).reshape(5, 6)
    np.testing.assert_array_equal(image_lib.center_crop(img, 3), img[1:4, 1:4])
    np.testing.assert_array_equal(image_lib.center_crop(img[..., None], 4)[..., 0], img[0:4, 1:5])
    with pytest.raises(ValueError, match="smaller"):
        image_lib.center_crop(img, 6)


# --------------------------------------------------------------------------------- targets


def test_sobel_target_step_edge_hand_values():
    step = np.zeros((8, 8))
    step[:, 4:] = 1.0
    expected = np.zeros((8, 8), np.float32)
    expected[:, 3:5] = 1 / math.sqrt(2)  # The two pixels beside the step; zero elsewhere.
    target = edge_targets.sobel_target(step)
    assert target.dtype == np.float32
    np.testing.assert_allclose(target, expected, rtol=0, atol=1e-7)


def test_sobel_target_constant_is_zero():
    # Zero up to round-off: the kernel's taps cancel in floating point, not exactly.
    flat = edge_targets.sobel_target(np.full((6, 7), 0.6))
    np.testing.assert_allclose(flat, 0.0, rtol=0, atol=1e-12)


def test_sobel_target_matches_scipy_with_documented_scaling():
    image = np.random.default_rng(0).random((20, 24))
    # scipy's unnormalised kernels sum |w| = 4 per axis; skimage divides by 4 and by sqrt(2).
    expected = np.hypot(ndi.sobel(image, 0), ndi.sobel(image, 1)) / (4 * math.sqrt(2))
    np.testing.assert_allclose(edge_targets.sobel_target(image), expected, rtol=1e-5, atol=1e-7)
    checkerboard = np.indices((16, 16)).sum(0) % 2.0  # The steepest input in [0, 1].
    steepest = edge_targets.sobel_target(checkerboard)
    assert (
        0 <= steepest.min() <= steepest.max() <= 1
    )


def test_canny_target_finds_the_edges_of_a_square():
    image = np.zeros((32, 32))
    image[8:24, 8:24] = 1.0
    found = edge_targets.canny_target(image, sigma=math.sqrt(2))
    assert found.dtype == np.float32
    assert set(np.unique(found)) == {0.0, 1.0}
    perimeter = np.zeros((32, 32), bool)
    perimeter[8:24, 8:24] = True
    perimeter[9:23, 9:23] = False
    assert found[perimeter].all()
    near = ndi.binary_dilation(perimeter, structure=np.ones((3, 3)))
    assert not found[~near].any()


def test_make_targets_shapes_and_canny_config(tmp_path):
    images = np.random.default_rng(1).random((2, 16, 16, 1)).astype(np.float32)
    cfg = _config(tmp_path)
    sobel = edge_targets.make_targets(images, cfg)
    assert sobel.shape == images.shape and sobel.dtype == np.float32
    np.testing.assert_array_equal(sobel[1, ..., 0], edge_targets.sobel_target(images[1, ..., 0]))
    cfg.canny_low_threshold, cfg.canny_high_threshold = 100.0, 200.0  # Above any gradient.
    cfg.dataset = "canny"
    np.testing.assert_array_equal(edge_targets.make_targets(images, cfg), 0.0)
    cfg.dataset = "laplace"
    with pytest.raises(ValueError, match="data.dataset"):
        edge_targets.make_targets(images, cfg)


# --------------------------------------------------------------------------------- builtin


def test_default_config_fields():
    for name in ("sobel", "canny"):
        assert data.default_config(name).dataset == name
        # The package adds the field every dataset shares: the validation fraction.
        shared = {**edges.default_config(name).to_dict(), "validation_fraction": 0.0}
        assert data.default_config(name).to_dict() == shared
    cfg = data.default_config("sobel")
    assert cfg.crop_size == 256 and cfg.source == "builtin" and cfg.seed == 0
    # Unset sizes: 600 / 60 builtin crops; every usable image of a folder or tfds.
    assert (cfg.train_size, cfg.eval_size, cfg.eval_fraction) == (None, None, 0.3)
    assert edges.BUILTIN_SIZES == {"train": 600, "eval": 60}
    assert cfg.canny_sigma == math.sqrt(2)
    assert cfg.canny_low_threshold is None and cfg.canny_high_threshold is None
    assert cfg.cache_dir == "" and cfg.tfds_image_key == "image"
    assert tuple(cfg.eval_images) == edges.DEFAULT_EVAL_IMAGES
    assert set(edges.DEFAULT_EVAL_IMAGES) < set(edges.BUILTIN_IMAGES)
    assert 0.2 <= len(edges.DEFAULT_EVAL_IMAGES) / len(edges.BUILTIN_IMAGES) <= 0.35


@pytest.mark.parametrize("task", ["sobel", "canny"])
def test_builtin_splits_share_no_source_image(tmp_path, task):
    dataset = data.load_dataset(_config(tmp_path, dataset=task))
    _assert_split_ok(dataset.train, 20, 32, task)
    _assert_split_ok(dataset.eval, 8, 32, task)
    assert not set(dataset.train.sources) & set(dataset.eval.sources)
    assert set(dataset.eval.sources) <= set(edges.DEFAULT_EVAL_IMAGES)
    # 20 crops cycle through all 15 train images, so every builtin image loads offline.
    assert set(dataset.train.sources) == set(edges.BUILTIN_IMAGES) - set(edges.DEFAULT_EVAL_IMAGES)
    exact = edge_targets.make_targets(dataset.train.inputs, _config(tmp_path, dataset=task))
    np.testing.assert_array_equal(dataset.train.targets, edge_targets.encode_targets(exact, task))


def test_builtin_is_deterministic_per_seed(tmp_path):
    first = edges.build_dataset(_config(tmp_path))
    again = edges.build_dataset(_config(tmp_path))
    other = edges.build_dataset(_config(tmp_path, seed=1))
    np.testing.assert_array_equal(first.train.inputs, again.train.inputs)
    assert first.eval.sources == again.eval.sources
    assert not np.array_equal(first.train.inputs, other.train.inputs)


def test_builtin_errors(tmp_path):
    with pytest.raises(ValueError, match="eval_images"):
        edges.build_dataset(_config(tmp_path, eval_images=("camera", "lena")))
    with pytest.raises(ValueError, match="crop_size"):
        edges.build_dataset(_config(tmp_path, crop_size=5000))
    with pytest.raises(ValueError, match="No builtin train image"):
        edges.build_dataset(_config(tmp_path, eval_images=edges.BUILTIN_IMAGES))


# ---------------------------------------------------------------------------------- folder

_PALETTE_COLORS = np.array([[255, 0, 0], [0, 0, 255], [10, 200, 30]], np.uint8)


def _write_image_folder(folder):
    """Writes 7 usable images of assorted formats, one too small, one corrupt and a non-image."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (36, 40, 3), np.uint8)).save(folder / "b.jpg")
    ramp = (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "sub" / "c16.png")
    rgba = np.zeros((34, 34, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = rng.integers(0, 256, (34, 34))
    Image.fromarray(rgba).save(folder / "d.png")
    palette = Image.fromarray(rng.integers(0, 3, (33, 40), np.uint8), mode="P")
    palette.putpalette(_PALETTE_COLORS.ravel().tolist())
    palette.save(folder / "e.png")
    Image.fromarray(rng.integers(0, 256, (32, 32), np.uint8)).save(folder / "f.bmp")
    Image.fromarray(rng.random((35, 32)) > 0.5).save(folder / "h.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(folder / "tiny.png")
    (folder / "x.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return {"c16": ramp, "palette": palette}


def _folder_config(tmp_path, folder, **overrides):
    return _config(tmp_path, source="folder", folder=str(folder), **overrides)


def _snapshot(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def test_folder_source(tmp_path):
    folder = tmp_path / "images"
    written = _write_image_folder(folder)
    before = _snapshot(folder)
    cfg = _folder_config(tmp_path, folder, train_size=0, eval_size=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = data.load_dataset(cfg)
    assert _snapshot(folder) == before
    messages = [str(w.message) for w in caught if "jaxshrink.data" in str(w.message)]
    assert len(messages) == 1
    assert "skipped 2 images" in messages[0]
    assert "tiny.png (10x12)" in messages[0] and "1 unreadable: x.jpg (" in messages[0]

    assert not set(dataset.train.sources) & set(dataset.eval.sources)
    usable = {"a.png", "b.jpg", "sub/c16.png", "d.png", "e.png", "f.bmp", "h.png"}
    assert set(dataset.train.sources) | set(dataset.eval.sources) == usable
    _assert_split_ok(dataset.train, len(dataset.train), 32, "sobel")
    _assert_split_ok(dataset.eval, len(dataset.eval), 32, "sobel")

    images = {
        s: im[..., 0]
        for split in (dataset.train, dataset.eval)
        for s, im in zip(split.sources, data.decode(split.inputs), strict=True)
    }
    np.testing.assert_allclose(
        images["sub/c16.png"], image_lib.center_crop(written["c16"], 32) / 65535, rtol=1e-6
    )
    np.testing.assert_allclose(images["d.png"], _luma8([200, 100, 50]), rtol=1e-6)
    indices = image_lib.center_crop(np.asarray(written["palette"]), 32)
    np.testing.assert_allclose(images["e.png"], _luma8(_PALETTE_COLORS[indices]), rtol=1e-6)
    assert set(np.unique(images["h.png"])) == {0.0, 1.0}


def test_folder_limits_and_deterministic_file_split(tmp_path):
    folder = tmp_path / "images"
    _write_image_folder(folder)
    cfg = _folder_config(tmp_path, folder, train_size=2, eval_size=1, dataset="canny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = edges.build_dataset(cfg)
        again = edges.build_dataset(cfg)
    assert (len(first.train), len(first.eval)) == (2, 1)
    assert first.train.sources == again.train.sources
    assert first.eval.sources == again.eval.sources


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="data.folder"):
        data.load_dataset(_folder_config(tmp_path, empty))
    with pytest.raises(ValueError, match="data.folder"):
        data.load_dataset(_folder_config(tmp_path, tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(bad / "tiny.png")
    (bad / "x.jpg").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 2"), pytest.raises(ValueError, match="usable"):
        edges.build_dataset(_folder_config(tmp_path, bad))
    with pytest.raises(ValueError, match="eval_fraction"):
        edges.build_dataset(_folder_config(tmp_path, bad, eval_fraction=1.0))


# ---------------------------------------------------------------------------- messy folder

# Under the decompression bomb limit set below, GOOD_SIZE x GOOD_SIZE is fine, big.png only
# warns (more than the limit) and bomb.png fails (more than twice the limit).
_PIXEL_LIMIT = 5000
_GOOD = 64


def _fingerprint(folder):
    """(kind, size, mtime_ns, sha256 or link target) of every entry under `folder`."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        if path.is_symlink():
            entries[path] = ("link", os.readlink(path), stat.st_mtime_ns)
        elif path.is_dir():
            entries[path] = ("dir", stat.st_mtime_ns)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[path] = ("file", stat.st_size, stat.st_mtime_ns, digest)
    return entries


def _palette_image(rng, transparency=None):
    im = Image.fromarray(rng.integers(0, 3, (_GOOD, _GOOD), np.uint8), mode="P")
    im.putpalette(_PALETTE_COLORS.ravel().tolist())
    if transparency is not None:
        im.info["transparency"] = transparency
    return im


def _write_messy_folder(folder):
    """Writes 14 usable images of every mode, 6 unreadable files, one too small and a .txt.

    Returns the expected grayscale centre crop (32x32) of the usable images where it is simple.
    """
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    noise = rng.integers(0, 256, (_GOOD, _GOOD, 3), np.uint8)
    Image.fromarray(noise).save(folder / "good.jpg")
    Image.fromarray(noise).save(folder / "good.png")
    Image.fromarray(noise[..., 0]).save(folder / "sub" / "gray.jpg")
    # 16-bit: the top half of the centre crop is 65535, the bottom half 32768.
    g16 = np.full((_GOOD, _GOOD), 32768, np.uint16)
    g16[: _GOOD // 2] = 65535
    Image.fromarray(g16).save(folder / "g16.png")
    Image.fromarray(g16).save(folder / "g16.tif")
    rgba = np.zeros((_GOOD, _GOOD, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = rng.integers(0, 256, (_GOOD, _GOOD))  # Alpha is ignored: colour stays.
    Image.fromarray(rgba).save(folder / "rgba.png")
    la = np.stack([np.full((_GOOD, _GOOD), 128, np.uint8), rgba[..., 3]], axis=-1)
    Image.fromarray(la).save(folder / "la.png")
    palette = _palette_image(rng)
    palette.save(folder / "p.png")
    # Transparency as bytes: Pillow warns when converting this straight to RGB.
    palette_alpha = _palette_image(rng, transparency=bytes([0, 128, 255]))
    palette_alpha.save(folder / "p_alpha.png")
    palette_gif = _palette_image(rng)
    palette_gif.save(folder / "p_alpha.gif", transparency=1)
    Image.fromarray(noise[..., 1]).save(folder / "l.png")
    Image.fromarray(noise[..., 2] > 127).save(folder / "bilevel.png")
    Image.new("CMYK", (_GOOD, _GOOD), (0, 128, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.full((72, 72), 51, np.uint8)).save(folder / "big.png")  # Bomb warning.

    (folder / "text.jpg").write_text("a text file renamed .jpg")
    (folder / "empty.png").write_bytes(b"")
    whole = (folder / "good.jpg").read_bytes()
    (folder / "half.jpg").write_bytes(whole[: len(whole) // 2])
    whole = (folder / "good.png").read_bytes()
    (folder / "sub" / "half.png").write_bytes(whole[: len(whole) // 2])
    Image.fromarray(np.zeros((101, 101), np.uint8)).save(folder / "bomb.png")  # Bomb error.
    os.symlink(folder / "gone.png", folder / "link.png")  # A broken link.
    Image.fromarray(noise[:20, :24]).save(folder / "tiny.png")
    (folder / "notes.txt").write_text("not an image suffix: ignored, not counted")

    top = (_GOOD - 32) // 2
    crop = (slice(top, top + 32), slice(top, top + 32))
    g16_crop = g16[crop] / 65535
    return {
        "good.png": _luma8(noise[crop]),
        "sub/gray.jpg": None,
        "good.jpg": None,
        "g16.png": g16_crop,
        "g16.tif": g16_crop,
        "rgba.png": np.full((32, 32), _luma8([200, 100, 50])),
        "la.png": np.full((32, 32), 128 / 255),
        "p.png": _luma8(_PALETTE_COLORS[np.asarray(palette)[crop]]),
        "p_alpha.png": _luma8(_PALETTE_COLORS[np.asarray(palette_alpha)[crop]]),
        "p_alpha.gif": _luma8(_PALETTE_COLORS[np.asarray(palette_gif)[crop]]),
        "l.png": noise[crop][..., 1] / 255,
        "bilevel.png": (noise[crop][..., 2] > 127).astype(float),
        "cmyk.jpg": None,
        "big.png": np.full((32, 32), 0.2),
    }


_BROKEN = ("text.jpg", "empty.png", "half.jpg", "sub/half.png", "bomb.png", "link.png")


def _messy_config(tmp_path, folder, **overrides):
    """A folder config that uses every usable image."""
    return _folder_config(tmp_path, folder, **{"train_size": 0, "eval_size": 0, **overrides})


def _load_recording_warnings(cfg):
    """Loads with Pillow's bomb warning as an error; returns the dataset and the UserWarnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        dataset = data.load_dataset(cfg)
    return dataset, [w for w in caught if issubclass(w.category, UserWarning)]


def test_messy_folder_uses_every_readable_image_and_names_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", _PIXEL_LIMIT)
    folder = tmp_path / "messy"
    expected = _write_messy_folder(folder)
    before = _fingerprint(folder)
    cfg = _messy_config(tmp_path, folder)

    dataset, caught = _load_recording_warnings(cfg)

    assert _fingerprint(folder) == before
    # One warning from this module and none from Pillow (palette transparency, bomb).
    assert [w.category for w in caught] == [data.SkippedImagesWarning]
    message = str(caught[0].message)
    assert "\n" not in message
    assert "skipped 7 images of the 21 read" in message and str(folder) in message
    assert "6 unreadable: " in message
    for name in _BROKEN:
        assert f"{name} (" in message
    assert "empty.png (empty file)" in message and "text.jpg (not an image" in message
    assert "half.jpg (OSError: image file is truncated" in message
    assert "bomb.png (more pixels than PIL.Image.MAX_IMAGE_PIXELS)" in message
    assert "1 smaller than the 32x32 crop: tiny.png (20x24)" in message
    assert "notes.txt" not in message

    images = {}
    for split in (dataset.train, dataset.eval):
        _assert_split_ok(split, len(split), 32, "sobel")
        images.update(zip(split.sources, data.decode(split.inputs)[..., 0], strict=True))
    assert len(dataset.train) + len(dataset.eval) == len(images) == 14
    assert set(images) == set(expected)
    assert (len(dataset.train), len(dataset.eval)) == (10, 4)  # eval_fraction 0.3 of 14.
    for name, want in expected.items():
        if want is not None:
            np.testing.assert_allclose(images[name], want, rtol=0, atol=1e-6, err_msg=name)
    for name in ("g16.png", "g16.tif"):  # 16-bit is scaled by 65535, not clipped at 255.
        assert images[name][0, 0] == 1.0
        assert images[name][-1, -1] == pytest.approx(0.5, abs=1e-4)
    assert set(np.unique(images["bilevel.png"])) == {0.0, 1.0}

    # A load from the cache names the same files again, and still only reads the folder.
    again, caught = _load_recording_warnings(cfg)
    assert [str(w.message) for w in caught] == [message]
    assert again.train.sources == dataset.train.sources
    assert _fingerprint(folder) == before


def _assert_data_error(cfg, *fragments, warns=None):
    """Asserts a one-line DataError with `fragments`, after one warning matching `warns`."""
    with warnings.catch_warnings(record=True) as caught, pytest.raises(errors.DataError) as info:
        warnings.simplefilter("always")
        data.load_dataset(cfg)
    skips = [str(w.message) for w in caught if issubclass(w.category, data.SkippedImagesWarning)]
    if warns is None:
        assert not skips
    else:
        assert len(skips) == 1 and re.search(warns, skips[0]), skips
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_empty_folder_is_a_data_error(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    _assert_data_error(
        _messy_config(tmp_path, folder), str(folder), "no image file", "0 other files"
    )
    (folder / "readme.txt").write_text("no images here")
    _assert_data_error(_messy_config(tmp_path, folder), "1 other file;", "--config.data.folder")
    assert [p.name for p in folder.iterdir()] == ["readme.txt"]


def test_all_broken_folder_is_a_data_error_naming_ten_files(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(13):
        (folder / f"bad{i:02d}.jpg").write_text("not a JPEG")
    before = _fingerprint(folder)
    message = _assert_data_error(
        _messy_config(tmp_path, folder),
        str(folder),
        "0 of its 13 image files usable (13 unreadable, 0 smaller",
        "replace the unreadable files",
        warns=r"skipped 13 images of the 13 read .*13 unreadable: bad.*and 3 more$",
    )
    assert "crop_size" not in message
    assert _fingerprint(folder) == before


def test_too_small_folder_suggests_a_smaller_crop(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(folder / "b.png")
    (folder / "c.jpg").write_bytes(b"")
    _assert_data_error(
        _messy_config(tmp_path, folder, crop_size=64),
        "0 of its 3 image files usable (1 unreadable, 2 smaller than the 64x64 crop",
        "crop_size=64 but the largest skipped image is 40x30",
        "lower --config.data.crop_size to 30 or less",
        warns="2 smaller than the 64x64 crop: a.png \\(20x24\\), b.png \\(40x30\\)",
    )


def test_one_usable_image_is_too_few_and_two_are_enough(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "a.png")
    (folder / "b.png").write_text("not a PNG")
    _assert_data_error(
        _messy_config(tmp_path, folder),
        "1 of its 2 image files usable",
        "need 2, one for train and one for eval",
        warns="b.png",
    )
    Image.fromarray(np.ones((32, 32), np.uint8)).save(folder / "c.png")
    for fraction in (0.01, 0.99):  # Two usable images always make both splits.
        with pytest.warns(data.SkippedImagesWarning):
            cfg = _messy_config(tmp_path, folder, eval_fraction=fraction)
            dataset = edges.build_dataset(cfg)
        assert (len(dataset.train), len(dataset.eval)) == (1, 1)


def test_folder_split_follows_fraction_and_limits_do_not_move_images(tmp_path):
    folder = tmp_path / "ten"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((32, 32), i, np.uint8)).save(folder / f"{i}.png")
    full = edges.build_dataset(_messy_config(tmp_path, folder))
    assert (len(full.train), len(full.eval)) == (7, 3)
    limited = edges.build_dataset(_messy_config(tmp_path, folder, eval_size=1))
    assert limited.train.sources == full.train.sources
    assert limited.eval.sources == full.eval.sources[:1]


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"source": "ftp"}, "data.source: got 'ftp'; allowed: ('builtin', 'folder', 'tfds')"),
        ({"eval_fraction": 1.0}, "data.eval_fraction: got 1.0; allowed: a fraction in (0, 1)"),
        ({"eval_fraction": 0}, "data.eval_fraction: got 0"),
        ({"folder": ""}, "data.folder: got ''"),
        ({"train_size": -1}, "data.train_size: got -1; allowed for the folder source"),
        ({"crop_size": 0}, "data.crop_size: got 0; allowed: an integer >= 1"),
        ({"cache_dir": "INSIDE"}, "data.cache_dir: got"),
        ({"source": "builtin", "crop_size": 5000}, "data.crop_size: got 5000; allowed: at most"),
        ({"source": "builtin", "eval_images": ("lena",)}, "data.eval_images: unknown names"),
        ({"source": "builtin", "eval_images": ()}, "data.eval_images: got no name"),
        ({"source": "builtin", "train_size": 0}, "data.train_size: got 0"),
    ],
)
def test_bad_config_values_are_config_errors(tmp_path, overrides, fragment):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32), i, np.uint8)).save(folder / f"{i}.png")
    if overrides.get("cache_dir") == "INSIDE":
        overrides = {"cache_dir": str(folder / "cache")}
    # The builtin cases keep _config's positive sizes; the folder cases use every image.
    sizes = {} if overrides.get("source") == "builtin" else {"train_size": 0, "eval_size": 0}
    fields = {"source": "folder", "folder": str(folder), **sizes, **overrides}
    cfg = _config(tmp_path, **fields)
    with pytest.raises(errors.ConfigError) as info:
        data.load_dataset(cfg)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png"]


def test_unknown_task_and_missing_folder(tmp_path):
    with pytest.raises(
        errors.ConfigError, match=r"^data.dataset: got 'laplace'; allowed: \('sobel'"
    ):
        data.load_dataset(_config(tmp_path, dataset="laplace"))
    with pytest.raises(errors.DataError, match="does not exist"):
        data.load_dataset(_folder_config(tmp_path, tmp_path / "missing"))
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(errors.DataError, match="is a file, not a folder"):
        data.load_dataset(_folder_config(tmp_path, tmp_path / "file.png"))


# ------------------------------------------------------------------------------------ tfds


def _tfds_config(tmp_path, **overrides):
    return _config(
        tmp_path,
        source="tfds",
        tfds_name="mnist",
        tfds_train_split="train",
        tfds_eval_split="test",
        crop_size=16,
        train_size=4,
        eval_size=0,
        **overrides,
    )


def test_tfds_source_reads_mocked_records(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        dataset = data.load_dataset(_tfds_config(tmp_path, dataset="canny"))
        records = tfds.data_source("mnist", split="train")
        expected = [image_lib.center_crop(records[i]["image"][..., 0], 16) / 255 for i in range(4)]
    assert dataset.train.sources == tuple(f"mnist/train[{i}]" for i in range(4))
    assert dataset.eval.sources == tuple(f"mnist/test[{i}]" for i in range(6))
    _assert_split_ok(dataset.train, 4, 16, "canny")
    _assert_split_ok(dataset.eval, 6, 16, "canny")
    np.testing.assert_allclose(data.decode(dataset.train.inputs)[..., 0], expected, rtol=1e-6)


def test_tfds_unknown_image_key(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2), pytest.raises(ValueError, match="tfds_image_key"):
        edges.build_dataset(_tfds_config(tmp_path, tfds_image_key="picture"))


# ----------------------------------------------------------------------------------- cache


def _count_builds(monkeypatch):
    calls = []
    write = edges._write_examples

    def counting_write(data_cfg, writer):
        calls.append(data_cfg.dataset)
        return write(data_cfg, writer)

    monkeypatch.setattr(edges, "_write_examples", counting_write)
    return calls


def test_second_load_comes_from_cache(tmp_path, monkeypatch, capsys):
    calls = _count_builds(monkeypatch)
    cfg = _config(tmp_path)
    first = data.load_dataset(cfg)
    assert "built" in capsys.readouterr().out
    second = data.load_dataset(cfg)
    out = capsys.readouterr().out
    assert "from cache" in out and "20 train / 8 eval" in out
    assert calls == ["sobel"]
    for split in ("train", "eval"):
        a, b = getattr(first, split), getattr(second, split)
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.targets, b.targets)
        assert a.sources == b.sources and b.inputs.dtype == np.uint8
        assert isinstance(b.inputs, np.memmap) and not b.inputs.flags.writeable
    (entry,) = (tmp_path / "cache").iterdir()  # No temporary folder left.
    assert sorted(p.name for p in entry.iterdir()) == [
        "eval_inputs.npy",
        "eval_targets.npy",
        "meta.json",
        "train_inputs.npy",
        "train_targets.npy",
    ]
    data.load_dataset(_config(tmp_path, seed=1))
    data.load_dataset(_config(tmp_path, dataset="canny"))
    assert calls == ["sobel", "sobel", "canny"]


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    calls = _count_builds(monkeypatch)
    cfg = _config(tmp_path)
    first = data.load_dataset(cfg)
    # Copied out of the memory map: truncating a mapped file under it would crash the reader.
    first_targets = np.array(first.eval.targets)
    (entry,) = (tmp_path / "cache").iterdir()
    whole = (entry / "eval_targets.npy").read_bytes()
    (entry / "eval_targets.npy").write_bytes(whole[: len(whole) // 2])
    with pytest.warns(UserWarning, match="unreadable cache"):
        second = data.load_dataset(cfg)
    assert len(calls) == 2
    np.testing.assert_array_equal(first_targets, second.eval.targets)
    (entry / "meta.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable cache"):
        third = data.load_dataset(cfg)
    assert len(calls) == 3 and third.eval.sources == first.eval.sources


def test_cache_key_tracks_folder_files_not_cache_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "a.png")
    cfg = _folder_config(tmp_path, folder)
    key = edges.cache_key(cfg)
    assert edges.cache_key(_folder_config(tmp_path / "elsewhere", folder)) == key
    assert edges.cache_key(_folder_config(tmp_path, folder, dataset="canny")) != key
    Image.fromarray(np.ones((40, 40), np.uint8)).save(folder / "b.png")
    assert edges.cache_key(cfg) != key


def test_resolve_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSHRINK_CACHE", str(tmp_path / "env"))
    assert cache.resolve_cache_dir("") == tmp_path / "env"
    assert cache.resolve_cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.delenv("JAXSHRINK_CACHE")
    assert cache.resolve_cache_dir("").parts[-2:] == (".cache", "jaxshrink")


# ---------------------------------------------------------------------------------- errors


def test_unknown_source_and_task(tmp_path):
    with pytest.raises(ValueError, match=r"data\.source.*builtin"):
        data.load_dataset(_config(tmp_path, source="ftp"))
    with pytest.raises(ValueError, match=r"data\.dataset.*sobel"):
        data.load_dataset(_config(tmp_path, dataset="laplace"))
    assert not (tmp_path / "cache").exists()
