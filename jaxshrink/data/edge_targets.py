"""The edge maps a network learns to mimic: the Sobel magnitude (continuous) and the Canny
detector (binary), computed in float32 from a gray crop and stored compactly."""

from __future__ import annotations

import functools

import numpy as np
import skimage.feature
import skimage.filters

from jaxshrink.core import errors
from jaxshrink.data.split import decode

# The dataset names this module serves: the target each one computes.
TASKS = ("sobel", "canny")


def sobel_target(image: np.ndarray) -> np.ndarray:
    """Returns the Sobel gradient magnitude of a 2-D image in [0, 1], as float32 in [0, 1].

    scikit-image's kernels are [1, 2, 1] / 4 smoothing times a [1, 0, -1] difference, and the
    magnitude is sqrt((gx**2 + gy**2) / 2), so an input in [0, 1] maps into [0, 1]; a step from
    0 to 1 gives 1 / sqrt(2) on the two pixels beside it. Borders are reflected.
    """
    return np.clip(skimage.filters.sobel(image), 0.0, 1.0).astype(np.float32)


def canny_target(
    image: np.ndarray,
    sigma: float,
    low_threshold: float | None = None,
    high_threshold: float | None = None,
) -> np.ndarray:
    """Returns the Canny edges of a 2-D image in [0, 1] as float32 zeros and ones.

    Args:
      image: 2-D array in [0, 1].
      sigma: standard deviation of the Gaussian smoothing.
      low_threshold: hysteresis threshold on scikit-image's unnormalised gradient magnitude
        (see the module docstring); None = scikit-image's 0.1.
      high_threshold: the upper hysteresis threshold; None = scikit-image's 0.2.
    """
    edges = skimage.feature.canny(
        image, sigma=sigma, low_threshold=low_threshold, high_threshold=high_threshold
    )
    return edges.astype(np.float32)


def make_targets(images: np.ndarray, data_cfg) -> np.ndarray:
    """Computes the target of ``data_cfg.dataset`` for each image, in float32.

    Args:
      images: (N, H, W, 1) images in [0, 1], float or compact (`jaxshrink.data.split.decode`).
      data_cfg: data config; its `dataset` ('sobel' or 'canny') picks the target, and 'canny'
        reads its `canny_*` fields.

    Returns:
      (N, H, W, 1) float32 targets (`encode_targets` gives what the cache stores).
    """
    target = target_fn(data_cfg)
    targets = [target(decode(image[..., 0])) for image in images]
    if not targets:
        return np.zeros(np.shape(images), np.float32)
    return np.stack(targets)[..., None]


def encode_targets(targets: np.ndarray, task: str) -> np.ndarray:
    """Returns float32 targets of `task` as stored: Canny uint8 0/255, Sobel float16."""
    check_task(task)
    if task == "canny":
        return (np.asarray(targets) * 255).astype(np.uint8)  # 0.0 and 1.0 exactly.
    return np.asarray(targets).astype(np.float16)


def target_fn(data_cfg):
    check_task(data_cfg.dataset)
    if data_cfg.dataset == "sobel":
        return sobel_target
    return functools.partial(
        canny_target,
        sigma=data_cfg.canny_sigma,
        low_threshold=data_cfg.canny_low_threshold,
        high_threshold=data_cfg.canny_high_threshold,
    )


def check_task(task: str) -> None:
    if task not in TASKS:
        raise errors.ConfigError(f"data.dataset: got {task!r}; allowed for edges: {TASKS}")
