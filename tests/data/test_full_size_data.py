"""The thesis's data at full size: a folder gives every usable image, stored compactly and exactly.

Thesis 001 trained on about 20000 + 14000 VOC2012 crops; the folder source once stopped at 600
train and 60 eval images, and its float32 cache would need 17.8 GB at that size. These tests
pin the three things that change: every image is used unless capped, the compact cache (uint8
pixels and Canny maps, float16 Sobel maps, memory-mapped) holds exactly what it should, and
training and evaluation on compact data are bit for bit those on the float32 arrays it stands
for.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxshrink import data
from jaxshrink.config import schema as config_lib
from jaxshrink.core import train
from jaxshrink.data import cache, edge_targets, edges
from jaxshrink.data import images as image_lib

# The caps the folder source had before it used every image by default.
_OLD_CAPS = {"train": 600, "eval": 60}


def _folder_config(tmp_path, folder, **overrides):
    cfg = data.default_config("sobel")
    cfg.update(
        {
            "source": "folder",
            "folder": str(folder),
            "crop_size": 8,
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    cfg.update(overrides)
    return cfg


def test_folder_with_more_images_than_the_old_cap_uses_them_all(tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    n = sum(_OLD_CAPS.values()) + 40
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (9, 10), np.uint8)).save(folder / f"{i:04d}.png")
    cfg = _folder_config(tmp_path, folder)
    assert cfg.train_size is None and cfg.eval_size is None  # Unset: every usable image.

    dataset = data.load_dataset(cfg)

    assert len(dataset.train) + len(dataset.eval) == n == 700
    assert (len(dataset.train), len(dataset.eval)) == (490, 210)  # eval_fraction 0.3
    every = {f"{i:04d}.png" for i in range(n)}
    assert set(dataset.train.sources) | set(dataset.eval.sources) == every
    line = capsys.readouterr().out
    assert (
        "490 train / 210 eval 8x8 grayscale centre crops, one per image, of 700 of the 700 " in line
    )
    assert "(every usable one)" in line and "uint8 inputs, float16 targets" in line
    assert dataset.info["image_files"] == dataset.info["images_read"] == 700

    # An explicit cap still caps that split, and only it; 0 is the same as unset.
    capped = data.load_dataset(_folder_config(tmp_path, folder, train_size=100))
    assert (len(capped.train), len(capped.eval)) == (100, 210)
    assert capped.train.sources == dataset.train.sources[:100]
    assert "capped by data.train_size" in capsys.readouterr().out
    zero = _folder_config(tmp_path, folder, train_size=0, eval_size=0)
    assert edges.cache_key(zero) == edges.cache_key(cfg)
    # The builtin source keeps its 600 / 60 crops when unset.
    builtin = data.default_config("sobel")
    assert {s: edges._check_size(builtin, s) for s in ("train", "eval")} == _OLD_CAPS


def _write_mixed_folder(folder):
    """Gray, RGB and palette 8-bit images, and one 16-bit image; returns their float crops."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    crops = {}
    for i in range(6):
        rgb = rng.integers(0, 256, (10, 12, 3), np.uint8)
        rgb[2:5, 2:9] = 255  # A bright bar, so both Canny and Sobel find edges.
        Image.fromarray(rgb).save(folder / f"rgb{i}.png")
        crops[f"rgb{i}.png"] = image_lib.to_grayscale_float(image_lib.center_crop(rgb, 8))
        Image.fromarray(rgb[..., 1]).save(folder / f"gray{i}.png")
        crops[f"gray{i}.png"] = image_lib.center_crop(rgb[..., 1], 8) / np.float32(255)
    wide = rng.integers(0, 65536, (8, 8), np.uint16)
    Image.fromarray(wide).save(folder / "wide16.png")
    crops["wide16.png"] = (wide / 65535).astype(np.float32)
    return crops


@pytest.mark.parametrize("task", ["sobel", "canny"])
def test_compact_cache_round_trip_is_exact(tmp_path, task):
    crops = _write_mixed_folder(tmp_path / "mixed")
    cfg = _folder_config(tmp_path, tmp_path / "mixed", dataset=task)
    dataset = data.load_dataset(cfg)

    target_fn = edge_targets.target_fn(cfg)
    seen = set()
    for split in (dataset.train, dataset.eval):
        assert isinstance(split.inputs, np.memmap) and isinstance(split.targets, np.memmap)
        # 8-bit everywhere gives uint8; the 16-bit image widens its split, exactly, to float32.
        wide = "wide16.png" in split.sources
        assert split.inputs.dtype == (np.float32 if wide else np.uint8)
        assert split.targets.dtype == (np.uint8 if task == "canny" else np.float16)
        inputs, targets = data.decode(split.inputs), data.decode(split.targets)
        for name, x, y in zip(split.sources, inputs[..., 0], targets[..., 0], strict=True):
            np.testing.assert_array_equal(x, crops[name], err_msg=name)
            exact = target_fn(crops[name])
            if task == "canny":
                np.testing.assert_array_equal(y, exact, err_msg=name)  # 0/255 is exact
            else:  # float16 rounding, once: the documented bound.
                np.testing.assert_array_equal(y, exact.astype(np.float16).astype(np.float32))
                assert np.all(np.abs(y - exact) <= np.maximum(2.0**-11 * exact, 2.0**-25))
            assert exact.any(), name  # The round trip is tested on real edges.
            seen.add(name)
    assert seen == set(crops)
    # The same arrays whether mapped from the cache or read into memory.
    mapped, _ = cache.read(Path(dataset.info["cache_file"]))
    in_memory, _ = cache.read(Path(dataset.info["cache_file"]), mmap=False)
    assert not isinstance(in_memory.train.inputs, np.memmap)
    for a, b in ((mapped, in_memory), (mapped, edges.build_dataset(cfg))):
        for split in ("train", "eval"):
            for field in ("inputs", "targets"):
                x, y = getattr(getattr(a, split), field), getattr(getattr(b, split), field)
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)


def test_sobel_float16_targets_stay_within_the_documented_bound():
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (4, 64, 64), np.uint8)
    pixels[:, :16, :16] = 77  # Flat patches: magnitudes that are zero up to round-off.
    for image in data.decode(pixels):
        exact = edge_targets.sobel_target(image)
        stored = data.decode(edge_targets.encode_targets(exact, "sobel"))
        error = np.abs(stored - exact)
        assert error.max() <= 2.0**-12  # Magnitudes are in [0, 1].
        normal = exact >= 2.0**-14  # float16's normal range: relative bound.
        assert np.all(error[normal] <= 2.0**-11 * exact[normal])
        assert np.all(error[~normal] <= 2.0**-25)  # Half float16's subnormal spacing.
        # A real edge of an 8-bit image is at least 1 / (1020 sqrt 2), far in the normal range.
        assert exact[exact > 1e-6].min() >= 1 / (1020 * np.sqrt(2)) * (1 - 1e-6)


def test_device_decode_is_the_host_decode():
    values = np.arange(256, dtype=np.uint8)
    on_device = np.asarray(jax.jit(train.decode)(jnp.asarray(values)))
    np.testing.assert_array_equal(on_device, data.decode(values))
    # And both are what the float path gives an 8-bit gray image.
    np.testing.assert_array_equal(on_device, image_lib.to_grayscale_float(values[None])[0])
    halves = np.linspace(0, 1, 97).astype(np.float16)
    np.testing.assert_array_equal(jax.jit(train.decode)(halves), halves.astype(np.float32))
    labels = jnp.arange(3, dtype=jnp.int32)
    assert train.decode(labels) is labels


def test_compact_data_trains_and_evaluates_bit_identically_to_float32():
    # The smallest edge network: compiling dominates, and the decode is what is under test.
    c = config_lib.base_config("sobel")
    c.model.num_layers, c.model.num_filters, c.model.kernel_size = 2, 1, 1
    c.train.batch_size = 2
    c.optim.learning_rate = 1e-2
    trainer = train.from_config(c, (8, 8, 1))
    state = train.create_train_state(jax.random.PRNGKey(0), trainer.model, trainer.tx)

    def step_and_evaluate(state, train_data, eval_data):
        """One training step as the engine composes it, then the evaluation."""
        x, y, rng = trainer.sample(state, train_data)
        grad_fn = jax.value_and_grad(trainer.loss_of, has_aux=True)
        (loss, model_state), grads = grad_fn(
            state.params, state.model_state, state.masks, x, y, rng
        )
        new = trainer.update(state, grads, model_state)
        return (
            (x, y),
            loss,
            new,
            trainer.evaluate(new.params, new.model_state, new.masks, eval_data),
        )

    pixels = np.random.default_rng(3).integers(0, 256, (5, 8, 8, 1), np.uint8)
    float_targets = edge_targets.make_targets(pixels, c.data)
    targets = edge_targets.encode_targets(float_targets, "sobel")  # float16
    compact = data.Split(pixels, targets, tuple("abcde"))
    wide = data.Split(data.decode(pixels), data.decode(targets), compact.sources)
    on_device = train.make_train_data(compact)
    assert (on_device.inputs.dtype, on_device.targets.dtype) == (jnp.uint8, jnp.float16)

    # Both in one compiled program (one compilation); each half is the program a run uses.
    # 5 eval images in batches of 2: decoded one batch at a time, padding included.
    got, want = jax.jit(lambda *a: (step_and_evaluate(*a[:3]), step_and_evaluate(*a[3:])))(
        state,
        on_device,
        train.make_eval_data(compact, 2),
        state,
        train.make_train_data(wide),
        train.make_eval_data(wide, 2),
    )
    batch, loss, new, scores = got
    assert batch[0].dtype == batch[1].dtype == jnp.float32
    kernel = new.params["conv_0"]["kernel"]
    assert float(loss) > 0 and not np.array_equal(kernel, state.params["conv_0"]["kernel"])
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(x, y)  # Bit for bit: batch, loss, state, every metric.
    assert set(scores) == {"f1", "mae", "mse", "uiqi", "score"}
