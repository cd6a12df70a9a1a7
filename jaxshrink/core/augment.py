"""Data augmentation on the device, inside the compiled training step (thesis 003 2.7.4).

Thesis 003 section 2.7.4 (Table 2.4) trains its CIFAR-10 networks on the distortions of
the TensorFlow CIFAR-10 tutorial: a random 24x24 crop of the 32x32 image, a random
horizontal flip, a random brightness shift (``max_delta=63`` on the uint8 scale, so
63/255 on the [0, 1] scale the data loaders produce), a random contrast factor in
[0.2, 1.8], then ``tf.image.per_image_standardization``. At evaluation the tutorial
takes the central 24x24 crop and standardises it. `thesis_003_cifar()` holds those
settings; `default_config()` turns everything off.

Why on the device rather than in a host input pipeline: `train` already draws each
batch inside the compiled step from the device-resident split with the key
``fold_in(state.rng, state.step)``; augmenting there too keeps the step one compiled
program with no host round trip, and it works unchanged for a batch of runs under
`vmap`. Every function here is a pure function of (key, batch): the same key gives
bit-identical images, so a run stays reproducible and resumes exactly from a
checkpoint (the key is a function of the seed and the step, nothing else).

All functions take a batch ``x`` of shape (N, H, W, C), float32, and are jit- and
vmap-compatible: crop sizes are static Python ints, so every output shape is fixed,
and no Python branch depends on a traced value. Random draws are per image (the
tutorial distorted images one at a time), and each random op gets its own key from
`jax.random.split`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections

TrainFn = Callable[[jax.Array, jax.Array], jax.Array]
EvalFn = Callable[[jax.Array], jax.Array]

# Slots of `jax.random.split(key, _NUM_KEYS)` in `make_augment`'s train function: fixed,
# so turning one op on or off does not change the randomness of the others.
_CROP, _FLIP, _BRIGHTNESS, _CONTRAST, _NUM_KEYS = 0, 1, 2, 3, 4


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _check_crop(x_shape: Sequence[int], size: int | Sequence[int]) -> tuple[int, int]:
    h, w = _pair(size)
    height, width = x_shape[-3], x_shape[-2]
    if not (0 < h <= height and 0 < w <= width):
        raise ValueError(f"crop {h}x{w} does not fit in images of {height}x{width}")
    return h, w


def _batch(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, H, W, C), got {x.shape}")
    return x


def random_crop(key: jax.Array, x: jax.Array, size: int | Sequence[int]) -> jax.Array:
    """A window of ``size`` (int or (h, w), static) at a uniform random offset, per image."""
    x = _batch(x)
    h, w = _check_crop(x.shape, size)
    n, height, width, c = x.shape
    k_y, k_x = jax.random.split(key)
    oy = jax.random.randint(k_y, (n,), 0, height - h + 1)
    ox = jax.random.randint(k_x, (n,), 0, width - w + 1)

    def one(img, y0, x0):
        return jax.lax.dynamic_slice(img, (y0, x0, jnp.zeros_like(y0)), (h, w, c))

    return jax.vmap(one)(x, oy, ox)


def center_crop(x: jax.Array, size: int | Sequence[int]) -> jax.Array:
    """The central window of ``size``; an odd margin leaves the extra pixel after it,
    as ``tf.image.resize_with_crop_or_pad`` does (offset ``(H - h) // 2``)."""
    x = _batch(x)
    h, w = _check_crop(x.shape, size)
    oy, ox = (x.shape[1] - h) // 2, (x.shape[2] - w) // 2
    return x[:, oy : oy + h, ox : ox + w, :]


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """Mirrors each image left-right with probability 1/2."""
    x = _batch(x)
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def adjust_brightness(x: jax.Array, delta: jax.Array | float) -> jax.Array:
    """``tf.image.adjust_brightness``: adds ``delta`` (scalar or one per image), no clipping."""
    x = _batch(x)
    delta = jnp.broadcast_to(jnp.asarray(delta, x.dtype), (x.shape[0],))
    return x + delta[:, None, None, None]


def random_brightness(key: jax.Array, x: jax.Array, max_delta: float) -> jax.Array:
    """Adds a delta uniform in [-max_delta, max_delta), one per image (no clipping, as TF)."""
    x = _batch(x)
    if max_delta < 0:
        raise ValueError(f"max_delta must be >= 0, got {max_delta}")
    delta = jax.random.uniform(key, (x.shape[0],), x.dtype, -max_delta, max_delta)
    return adjust_brightness(x, delta)


def adjust_contrast(x: jax.Array, factor: jax.Array | float) -> jax.Array:
    """``tf.image.adjust_contrast``: ``(x - mean) * factor + mean`` with the mean over
    (H, W), per image and per channel; ``factor`` is a scalar or one per image."""
    x = _batch(x)
    factor = jnp.broadcast_to(jnp.asarray(factor, x.dtype), (x.shape[0],))
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    return (x - mean) * factor[:, None, None, None] + mean


def random_contrast(key: jax.Array, x: jax.Array, lower: float, upper: float) -> jax.Array:
    """`adjust_contrast` with a factor uniform in [lower, upper), one per image."""
    x = _batch(x)
    if not 0 <= lower <= upper:
        raise ValueError(f"need 0 <= lower <= upper, got lower={lower}, upper={upper}")
    factor = jax.random.uniform(key, (x.shape[0],), x.dtype, lower, upper)
    return adjust_contrast(x, factor)


def per_image_standardization(x: jax.Array) -> jax.Array:
    """``tf.image.per_image_standardization``: ``(x - mean) / max(std, 1/sqrt(H*W*C))``,
    mean and (population) std over each whole image."""
    x = _batch(x)
    num_elements = x.shape[1] * x.shape[2] * x.shape[3]
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
    adjusted = jnp.maximum(std, jax.lax.rsqrt(jnp.asarray(num_elements, x.dtype)))
    return (x - mean) / adjusted


def default_config() -> ml_collections.ConfigDict:
    """Every augmentation off: `make_augment` gives the identity for train and eval."""
    c = ml_collections.ConfigDict()
    c.crop = 0  # 0 = no crop, else the side of the square crop
    c.flip = False  # random horizontal flip
    c.brightness = 0.0  # max delta on the [0, 1] scale, 0 = off
    c.contrast = ()  # (lower, upper) contrast factor range, () = off
    c.standardize = False  # per-image standardisation (train and eval)
    return c


def enabled(aug_cfg: ml_collections.ConfigDict | None) -> bool:
    """Whether `aug_cfg` changes any image (None or all off: False)."""
    if aug_cfg is None:
        return False
    return bool(
        int(aug_cfg.crop)
        or aug_cfg.flip
        or float(aug_cfg.brightness)
        or tuple(aug_cfg.contrast)
        or aug_cfg.standardize
    )


def thesis_003_cifar() -> ml_collections.ConfigDict:
    """Thesis 003 Table 2.4: the TensorFlow CIFAR-10 tutorial's distortions."""
    c = default_config()
    c.crop = 24
    c.flip = True
    c.brightness = 63.0 / 255.0
    c.contrast = (0.2, 1.8)
    c.standardize = True
    return c


def _contrast_range(aug_cfg: ml_collections.ConfigDict) -> tuple[float, float] | None:
    contrast = tuple(aug_cfg.contrast)
    if not contrast:
        return None
    if len(contrast) != 2:
        raise ValueError(f"contrast must be () or (lower, upper), got {contrast}")
    lower, upper = float(contrast[0]), float(contrast[1])
    if not 0 <= lower <= upper:
        raise ValueError(f"contrast needs 0 <= lower <= upper, got {contrast}")
    return lower, upper


def output_shape(aug_cfg: ml_collections.ConfigDict, input_shape: Sequence[int]) -> tuple:
    """The shape `make_augment`'s functions give for inputs of ``input_shape``
    (..., H, W, C): e.g. (32, 32, 3) -> (24, 24, 3) with ``crop = 24``."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 3:
        raise ValueError(f"expected a shape (..., H, W, C), got {shape}")
    crop = int(aug_cfg.crop)
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    if crop == 0:
        return shape
    _check_crop(shape, crop)
    return shape[:-3] + (crop, crop, shape[-1])


def output_shape_of(aug_cfg: ml_collections.ConfigDict | None, input_shape) -> tuple:
    """`output_shape`, or `input_shape` unchanged when augmentation is off (any rank)."""
    if not enabled(aug_cfg):
        return tuple(int(d) for d in input_shape)
    return output_shape(aug_cfg, input_shape)


def make_augment(aug_cfg: ml_collections.ConfigDict) -> tuple[TrainFn, EvalFn]:
    """``(train_fn(key, x) -> x', eval_fn(x) -> x')`` for batches (N, H, W, C).

    Train applies, in the tutorial's order, crop, flip, brightness, contrast, then
    standardisation; eval applies the central crop and standardisation only. The
    config is read here, once (plain Python values, so the branches are static);
    `train_fn` is a pure function of (key, x), with one key per random op split from
    ``key`` at a fixed slot.
    """
    crop = int(aug_cfg.crop)
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    flip = bool(aug_cfg.flip)
    brightness = float(aug_cfg.brightness)
    if brightness < 0:
        raise ValueError(f"brightness must be >= 0, got {brightness}")
    contrast = _contrast_range(aug_cfg)
    standardize = bool(aug_cfg.standardize)

    def train_fn(key: jax.Array, x: jax.Array) -> jax.Array:
        x = _batch(x)
        keys = jax.random.split(key, _NUM_KEYS)
        if crop:
            x = random_crop(keys[_CROP], x, crop)
        if flip:
            x = random_flip(keys[_FLIP], x)
        if brightness:
            x = random_brightness(keys[_BRIGHTNESS], x, brightness)
        if contrast is not None:
            x = random_contrast(keys[_CONTRAST], x, *contrast)
        if standardize:
            x = per_image_standardization(x)
        return x

    def eval_fn(x: jax.Array) -> jax.Array:
        x = _batch(x)
        if crop:
            x = center_crop(x, crop)
        if standardize:
            x = per_image_standardization(x)
        return x

    return train_fn, eval_fn
