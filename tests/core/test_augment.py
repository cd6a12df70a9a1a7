"""On-device augmentation (thesis 003 2.7.4): TF semantics, purity in the key, jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxshrink.core import augment


def _images(n=8, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, h, w, c)).astype(np.float32)


def _tf_standardize(x):
    """numpy transcription of tf.image.per_image_standardization, one image at a time."""
    out = []
    for img in x.astype(np.float64):
        mean = img.mean()
        std = np.sqrt(np.mean(np.square(img - mean)))
        out.append((img - mean) / max(std, 1.0 / np.sqrt(img.size)))
    return np.stack(out)


def test_per_image_standardization_matches_tf_formula():
    x = _images(4)
    # constant image (0.75 is exact in float32): std 0, so the 1/sqrt(N) floor applies
    x[1] = 0.75
    x[2] = 0.5
    x[2, 0, 0, 0] = 0.5 + 1e-3  # tiny std, below the floor 1/sqrt(192)
    got = np.asarray(augment.per_image_standardization(x))
    want = _tf_standardize(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[1], 0.0)
    # the floored image is divided by 1/sqrt(N), not by its own std
    np.testing.assert_allclose(
        got[2, 0, 0, 0], (1e-3 - 1e-3 / x[2].size) * np.sqrt(x[2].size), rtol=1e-2
    )
    # an ordinary image ends with mean 0 and std 1
    np.testing.assert_allclose(got[0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(got[0].std(), 1.0, atol=1e-4)


def test_contrast_by_hand_and_mean_preserved():
    x = np.zeros((2, 2, 2, 2), np.float32)
    x[0, :, :, 0] = [[0.0, 1.0], [2.0, 3.0]]  # mean 1.5
    x[0, :, :, 1] = 5.0  # constant channel: unchanged by any factor
    x[1] = 1.0
    got = np.asarray(augment.adjust_contrast(x, jnp.array([2.0, 0.5])))
    np.testing.assert_allclose(got[0, :, :, 0], [[-1.5, 0.5], [2.5, 4.5]])
    np.testing.assert_allclose(got[0, :, :, 1], 5.0)
    np.testing.assert_allclose(got[1], 1.0)

    y = _images(16)
    out = np.asarray(augment.random_contrast(jax.random.key(3), y, 0.2, 1.8))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), y.mean(axis=(1, 2)), atol=1e-5)
    # one factor per image, shared by its channels and pixels, inside [lower, upper)
    mean = y.mean(axis=(1, 2), keepdims=True)
    factor = (out - mean) / (y - mean)
    per_image = factor.reshape(16, -1)
    np.testing.assert_allclose(per_image, per_image[:, :1].repeat(per_image.shape[1], 1), rtol=1e-3)
    assert np.all((per_image[:, 0] >= 0.2 - 1e-4) & (per_image[:, 0] < 1.8 + 1e-4))
    assert np.ptp(per_image[:, 0]) > 0.1  # images draw different factors


def test_brightness_shifts_each_image_within_max_delta():
    x = _images(16)
    out = np.asarray(augment.random_brightness(jax.random.key(0), x, 0.25))
    delta = (out - x).reshape(16, -1)
    np.testing.assert_allclose(delta, delta[:, :1].repeat(delta.shape[1], 1), atol=1e-6)
    assert np.all(np.abs(delta[:, 0]) <= 0.25) and np.ptp(delta[:, 0]) > 0.05


def test_random_flip_mirrors_some_images_and_keeps_others():
    x = _images(32)
    out = np.asarray(augment.random_flip(jax.random.key(1), x))
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == x[:, :, ::-1, :], axis=(1, 2, 3))
    assert np.all(same | mirrored)
    assert same.any() and mirrored.any()


def test_random_crop_is_a_window_and_offsets_vary():
    x = _images(n=32, h=6, w=6, c=2)
    out = np.asarray(augment.random_crop(jax.random.key(2), x, 4))
    assert out.shape == (32, 4, 4, 2)
    offsets = set()
    for i in range(32):
        hits = [
            (y0, x0)
            for y0 in range(3)
            for x0 in range(3)
            if np.array_equal(out[i], x[i, y0 : y0 + 4, x0 : x0 + 4])
        ]
        assert len(hits) == 1, f"image {i}: crop is no window of the original"
        offsets |= set(hits)
    assert len(offsets) >= 4  # 9 possible offsets; the batch covers several
    # the key decides the offsets
    other = np.asarray(augment.random_crop(jax.random.key(5), x, 4))
    assert not np.array_equal(out, other)
    with pytest.raises(ValueError, match="does not fit"):
        augment.random_crop(jax.random.key(0), x, 7)


def test_center_crop_takes_the_middle():
    x = _images(n=2, h=7, w=6, c=1)
    np.testing.assert_array_equal(np.asarray(augment.center_crop(x, 4)), x[:, 1:5, 1:5])


def test_train_fn_is_pure_in_the_key_and_compiles_once():
    cfg = augment.thesis_003_cifar()
    train_fn, _ = augment.make_augment(cfg)
    x = _images(n=4, h=32, w=32)
    k1, k2 = jax.random.key(0), jax.random.key(1)
    a, b = np.asarray(train_fn(k1, x)), np.asarray(train_fn(k1, x))
    assert a.shape == (4, 24, 24, 3) == (4, *augment.output_shape(cfg, (32, 32, 3)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.asarray(train_fn(k2, x)))

    jitted = jax.jit(train_fn)
    for seed in range(3):
        k = jax.random.key(seed)
        np.testing.assert_allclose(
            np.asarray(jitted(k, x)), np.asarray(train_fn(k, x)), rtol=1e-5, atol=1e-5
        )
    assert jitted._cache_size() == 1

    # a run axis of keys under vmap, raw uint32 keys as TrainState.rng holds them
    raw = jax.random.split(jax.random.PRNGKey(7), 3)
    xs = np.stack([x, x, x])
    runs = np.asarray(jax.jit(jax.vmap(train_fn))(raw, xs))
    assert runs.shape == (3, 4, 24, 24, 3)
    for r in range(3):
        np.testing.assert_allclose(runs[r], np.asarray(train_fn(raw[r], x)), rtol=1e-5, atol=1e-5)
    assert not np.array_equal(runs[0], runs[1])


def test_eval_fn_is_center_crop_then_standardization():
    _, eval_fn = augment.make_augment(augment.thesis_003_cifar())
    x = _images(n=3, h=32, w=32)
    a = np.asarray(eval_fn(x))
    np.testing.assert_array_equal(a, np.asarray(eval_fn(x)))
    np.testing.assert_allclose(a, _tf_standardize(x[:, 4:28, 4:28]), rtol=1e-4, atol=1e-5)


def test_all_off_is_identity():
    cfg = augment.default_config()
    train_fn, eval_fn = augment.make_augment(cfg)
    x = _images(n=3)
    np.testing.assert_array_equal(np.asarray(train_fn(jax.random.key(0), x)), x)
    np.testing.assert_array_equal(np.asarray(eval_fn(x)), x)
    assert augment.output_shape(cfg, (32, 32, 3)) == (32, 32, 3)
