"""Grayscale image crops and the Sobel / Canny edge maps the network learns to mimic.

The thesis trains on 256x256 grayscale centre crops of PASCAL VOC2012 photographs, with targets
made by the Sobel operator (continuous) or the Canny detector (binary). This module turns one of
three image sources into a `Dataset` of float32 NHWC arrays with one channel, and caches the
result on disk. It runs on the host with numpy only; nothing here touches JAX.

Sources:
  * ``builtin``: natural photographs that ship inside scikit-image and scikit-learn, so it works
    offline. Each split is cut into many random crops with random flips and 90-degree rotations;
    train crops come only from train images and eval crops only from `eval_images`, so the two
    splits never share a source image. Images smaller than the crop are skipped.
  * ``folder``: every image file under a folder (e.g. VOC2012's ``JPEGImages``), centre
    cropped as in the thesis. Files, not crops, are split between train and eval.
  * ``tfds``: a TensorFlow Datasets dataset read with ``tfds.data_source``, which needs no
    TensorFlow. The dataset must already be prepared in the ArrayRecord format.

Targets are computed on each crop, not on the full image, so a target depends only on the pixels
the network sees.

Fields of ``data_cfg`` (an ``ml_collections.ConfigDict``; `default_data_config` has them all):
  source: 'builtin', 'folder' or 'tfds'.
  crop_size: side of the square crops in pixels (thesis: 256).
  seed: seeds the builtin crop positions and augmentations and the folder train/eval split.
  train_size, eval_size: builtin: number of crops per split. folder and tfds: maximum number of
    images per split, 0 meaning all of them.
  eval_images: builtin only; names from `BUILTIN_IMAGES` held out for eval. Every other name in
    `BUILTIN_IMAGES` is a train image.
  folder: folder only; the folder searched recursively for image files. It is never modified.
  eval_fraction: folder only; fraction of the files, in (0, 1), assigned to eval.
  tfds_name: tfds only; dataset name, e.g. 'voc/2012'.
  tfds_data_dir: tfds only; where the prepared data lives ('' = the tfds default).
  tfds_train_split, tfds_eval_split: tfds only; split names, e.g. 'train', 'validation'.
  tfds_image_key: tfds only; the feature holding the image in each record.
  canny_sigma: Gaussian smoothing of the Canny detector (sqrt(2), MATLAB's default, which the
    thesis used).
  canny_low_threshold, canny_high_threshold: Canny hysteresis thresholds, on scikit-image's
    scale: the unnormalised Sobel magnitude (scipy.ndimage.sobel, up to 4 * sqrt(2)) of the
    smoothed image in [0, 1]. None selects scikit-image's defaults, 0.1 and 0.2.
  cache_dir: where prepared arrays are cached; '' means ``$JAXSHRINK_CACHE`` if set, else
    ``~/.cache/jaxshrink``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import ml_collections
import numpy as np
import skimage
import skimage.feature
import skimage.filters
from ml_collections import config_dict
from PIL import Image, ImageOps

# Bump whenever a change here alters the arrays a config produces, so stale caches are ignored.
FORMAT_VERSION = 1

TASKS = ("sobel", "canny")
SOURCES = ("builtin", "folder", "tfds")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})

# Photographs that load without network access (synthetic images such as checkerboard or logo
# are left out). 'page' and 'text' are smaller than 256 pixels, so they only serve smaller crops.
# fmt: off
_SKIMAGE_IMAGES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket",
    "stereo_motorcycle", "text",
)
# fmt: on
_SKLEARN_IMAGES = ("china", "flower")
BUILTIN_IMAGES = _SKIMAGE_IMAGES + _SKLEARN_IMAGES
# A quarter of the images with varied content: a portrait, a still life, a landscape, many small
# round objects and a fine texture.
DEFAULT_EVAL_IMAGES = ("camera", "coffee", "china", "coins", "gravel")

# ITU-R BT.601 luma, the weights of MATLAB's rgb2gray (which made the thesis's targets) and of
# tf.image.rgb_to_grayscale, rounded so that they sum to exactly 1.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
_PIL_DIRECT_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "F"})
_PIL_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays has no single truth.
class Split:
    """Images and targets of one split.

    Attributes:
      images: (N, H, W, 1) float32 grayscale images in [0, 1].
      targets: (N, H, W, 1) float32 Sobel magnitudes in [0, 1] or Canny edges in {0, 1}.
      sources: per image, the id of the image it was cut from: a builtin image name, a file path
        relative to the folder, or 'name/split[index]' for tfds.
    """

    images: np.ndarray
    targets: np.ndarray
    sources: tuple[str, ...]

    def __post_init__(self):
        if self.images.shape != self.targets.shape or len(self.sources) != len(self.images):
            raise ValueError(
                f"Split mismatch: images {self.images.shape}, targets {self.targets.shape}, "
                f"{len(self.sources)} sources."
            )

    def __len__(self) -> int:
        return len(self.images)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train and an eval split that share no source image."""

    train: Split
    eval: Split


def default_data_config() -> ml_collections.ConfigDict:
    """Returns a data config with every field at its default; see the module docstring."""
    return ml_collections.ConfigDict(
        {
            "source": "builtin",
            "crop_size": 256,
            "seed": 0,
            "train_size": 600,
            "eval_size": 60,
            "eval_images": DEFAULT_EVAL_IMAGES,
            "folder": "",
            "eval_fraction": 0.3,
            "tfds_name": "voc/2012",
            "tfds_data_dir": "",
            "tfds_train_split": "train",
            "tfds_eval_split": "validation",
            "tfds_image_key": "image",
            "canny_sigma": math.sqrt(2),
            # Typed placeholders so a float can override None, e.g. from the command line.
            "canny_low_threshold": config_dict.placeholder(float),
            "canny_high_threshold": config_dict.placeholder(float),
            "cache_dir": "",
        }
    )


# ----------------------------------------------------------------------------------- images


def to_grayscale_float(img: np.ndarray) -> np.ndarray:
    """Converts an image of any common layout and dtype to grayscale float32 in [0, 1].

    Integers are divided by their dtype's maximum (uint8 by 255, uint16 by 65535), bools become
    0 and 1, floats are taken as already in [0, 1]. RGB is reduced with BT.601 luma weights
    (0.299, 0.587, 0.114); an alpha channel is dropped, as MATLAB's imread does.

    Args:
      img: (H, W) or channels-last (H, W, C) array with C in 1 (gray), 2 (gray and alpha),
        3 (RGB) or 4 (RGBA).

    Returns:
      (H, W) float32 array, clipped to [0, 1].
    """
    values = _to_unit_range(np.asarray(img))
    if values.ndim == 3:
        values = _merge_channels(values)
    if values.ndim != 2:
        raise ValueError(f"Expected an (H, W) or (H, W, C) image, got shape {np.shape(img)}.")
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _to_unit_range(img: np.ndarray) -> np.ndarray:
    if img.dtype == bool:
        return img.astype(np.float64)
    if np.issubdtype(img.dtype, np.integer):
        return img / np.iinfo(img.dtype).max
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64)
    raise TypeError(f"Unsupported image dtype {img.dtype}.")


def _merge_channels(values: np.ndarray) -> np.ndarray:
    channels = values.shape[-1]
    if channels in (1, 2):
        return values[..., 0]
    if channels in (3, 4):
        return values[..., :3] @ _LUMA_WEIGHTS
    raise ValueError(f"Expected 1 to 4 channels, got shape {values.shape}.")


def center_crop(img2d: np.ndarray, size: int) -> np.ndarray:
    """Returns the central `size` x `size` window of an (H, W) or (H, W, C) image.

    When the margin is odd, the extra pixel is left at the bottom or right.

    Raises:
      ValueError: if the image is smaller than `size` along either axis.
    """
    height, width = img2d.shape[:2]
    if height < size or width < size:
        raise ValueError(f"Image of {height}x{width} is smaller than the {size}x{size} crop.")
    top, left = (height - size) // 2, (width - size) // 2
    return img2d[top : top + size, left : left + size]


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """Returns the pixels of a PIL image at their native depth, for `to_grayscale_float`."""
    # Cameras record rotation in EXIF; crop what a viewer shows.
    im = ImageOps.exif_transpose(im)
    if im.mode == "I":  # 16-bit files that older Pillow versions open as int32.
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    if im.mode not in _PIL_DIRECT_MODES:  # Palette, CMYK, YCbCr, ...
        im = im.convert("RGB")
    return np.asarray(im)


def _read_image_file(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return _pil_to_array(im)


# ---------------------------------------------------------------------------------- targets


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


def make_targets(images: np.ndarray, task: str, data_cfg) -> np.ndarray:
    """Computes the task's target for each image.

    Args:
      images: (N, H, W, 1) float images in [0, 1].
      task: 'sobel' or 'canny'.
      data_cfg: data config; 'canny' reads its `canny_*` fields.

    Returns:
      (N, H, W, 1) float32 targets.
    """
    _check_task(task)
    if task == "sobel":
        target_fn = sobel_target
    else:
        target_fn = functools.partial(
            canny_target,
            sigma=data_cfg.canny_sigma,
            low_threshold=data_cfg.canny_low_threshold,
            high_threshold=data_cfg.canny_high_threshold,
        )
    targets = [target_fn(image[..., 0]) for image in images]
    if not targets:
        return np.zeros(images.shape, np.float32)
    return np.stack(targets)[..., None]


# ---------------------------------------------------------------------------------- sources


def build_dataset(data_cfg, task: str) -> Dataset:
    """Builds the dataset from its source, without the cache; see `load_dataset`."""
    _check_task(task)
    _check_source(data_cfg.source)
    builders = {"builtin": _builtin_splits, "folder": _folder_splits, "tfds": _tfds_splits}
    (train_images, train_sources), (eval_images, eval_sources) = builders[data_cfg.source](data_cfg)
    return Dataset(
        train=_make_split(train_images, train_sources, task, data_cfg),
        eval=_make_split(eval_images, eval_sources, task, data_cfg),
    )


def _make_split(crops: list[np.ndarray], sources: list[str], task: str, data_cfg) -> Split:
    images = np.stack(crops)[..., None].astype(np.float32)
    return Split(images, make_targets(images, task, data_cfg), tuple(sources))


def _builtin_splits(data_cfg):
    eval_names = _check_eval_images(data_cfg.eval_images)
    train_names = tuple(name for name in BUILTIN_IMAGES if name not in eval_names)
    return [
        _builtin_split(data_cfg, "train", train_names, stream=0),
        _builtin_split(data_cfg, "eval", eval_names, stream=1),
    ]


def _builtin_split(data_cfg, split: str, names: tuple[str, ...], stream: int):
    size = data_cfg[f"{split}_size"]
    if size <= 0:
        raise ValueError(f"data_cfg.{split}_size must be positive for the builtin source.")
    # One random stream per split, so changing eval_size leaves the train crops as they were.
    rng = np.random.default_rng([data_cfg.seed, stream])
    return _random_crops(names, size, data_cfg.crop_size, rng, split)


def _check_eval_images(eval_images) -> tuple[str, ...]:
    names = (eval_images,) if isinstance(eval_images, str) else tuple(eval_images)
    unknown = [name for name in names if name not in BUILTIN_IMAGES]
    if unknown:
        raise ValueError(
            f"data_cfg.eval_images has unknown names {unknown}; allowed: {BUILTIN_IMAGES}."
        )
    return names


def _load_builtin_image(name: str) -> np.ndarray:
    if name in _SKLEARN_IMAGES:
        from sklearn.datasets import load_sample_image  # Lazy: only this source needs sklearn.

        return to_grayscale_float(load_sample_image(f"{name}.jpg"))
    import skimage.data

    image = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":  # (left, right, disparity): keep the left photograph.
        image = image[0]
    return to_grayscale_float(image)


def _random_crops(names, size, crop_size, rng, split):
    images = {name: _load_builtin_image(name) for name in names}
    usable = [name for name in names if min(images[name].shape) >= crop_size]
    if not usable:
        raise ValueError(
            f"No builtin {split} image is at least {crop_size}x{crop_size} "
            f"(images: {list(names)}); lower data_cfg.crop_size."
        )
    # Cycle through the images so each gives about the same number of crops.
    picks = [usable[i] for i in rng.permutation(np.arange(size) % len(usable))]
    return [_random_crop(images[name], crop_size, rng) for name in picks], picks


def _random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    top = rng.integers(image.shape[0] - size + 1)
    left = rng.integers(image.shape[1] - size + 1)
    # A random rotation and flip: one of the 8 symmetries of the square.
    crop = np.rot90(image[top : top + size, left : left + size], k=rng.integers(4))
    if rng.integers(2):
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def _folder_splits(data_cfg):
    folder = _folder_path(data_cfg)
    files = _list_image_files(folder)
    if len(files) < 2:
        raise ValueError(
            f"data_cfg.folder={str(folder)!r} holds {len(files)} image files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); need at least 2."
        )
    skipped = []
    splits = []
    for split, paths in _split_files(files, data_cfg.eval_fraction, data_cfg.seed).items():
        named = ((path.relative_to(folder).as_posix(), path) for path in paths)
        arrays = _read_files(named, skipped)
        splits.append(_center_crops(arrays, data_cfg.crop_size, data_cfg[f"{split}_size"], skipped))
    _warn_skipped(skipped, str(folder), data_cfg.crop_size)
    _check_nonempty(splits, f"data_cfg.folder={str(folder)!r}")
    return splits


def _split_files(files: list[Path], eval_fraction: float, seed: int) -> dict[str, list[Path]]:
    if not 0 < eval_fraction < 1:
        raise ValueError(f"data_cfg.eval_fraction must be in (0, 1), got {eval_fraction}.")
    # Split the file list, not the readable images, so reading can stop once a split is full.
    n_eval = min(max(round(eval_fraction * len(files)), 1), len(files) - 1)
    order = np.random.default_rng(seed).permutation(len(files))
    return {
        "train": [files[i] for i in order[n_eval:]],
        "eval": [files[i] for i in order[:n_eval]],
    }


def _folder_path(data_cfg) -> Path:
    folder = Path(data_cfg.folder).expanduser()
    if not data_cfg.folder or not folder.is_dir():
        raise ValueError(f"data_cfg.folder={data_cfg.folder!r} is not a directory.")
    return folder


def _list_image_files(folder: Path) -> list[Path]:
    files = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _read_files(named_paths, skipped: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    for name, path in named_paths:
        try:
            array = _read_image_file(path)
        except _PIL_ERRORS as err:
            skipped.append(f"{name} (unreadable: {type(err).__name__})")
            continue
        yield name, array


def _tfds_splits(data_cfg):
    import tensorflow_datasets as tfds  # Lazy: a slow import, and only this source needs it.

    skipped = []
    splits = []
    for split in ("train", "eval"):
        tfds_split = data_cfg[f"tfds_{split}_split"]
        source = tfds.data_source(
            data_cfg.tfds_name, split=tfds_split, data_dir=data_cfg.tfds_data_dir or None
        )
        named = _tfds_records(source, f"{data_cfg.tfds_name}/{tfds_split}", data_cfg.tfds_image_key)
        splits.append(_center_crops(named, data_cfg.crop_size, data_cfg[f"{split}_size"], skipped))
    _warn_skipped(skipped, f"tfds {data_cfg.tfds_name!r}", data_cfg.crop_size)
    _check_nonempty(splits, f"data_cfg.tfds_name={data_cfg.tfds_name!r}")
    return splits


def _tfds_records(source, prefix: str, image_key: str) -> Iterator[tuple[str, np.ndarray]]:
    for index in range(len(source)):
        record = source[index]
        if image_key not in record:
            raise ValueError(
                f"data_cfg.tfds_image_key={image_key!r} is not a feature of "
                f"{prefix}; features: {sorted(record)}."
            )
        yield f"{prefix}[{index}]", np.asarray(record[image_key])


def _center_crops(
    named_arrays: Iterable[tuple[str, np.ndarray]], crop_size: int, limit: int, skipped: list[str]
) -> tuple[list[np.ndarray], list[str]]:
    """Centre crops and converts up to `limit` images (0 = all), skipping small ones."""
    crops, names = [], []
    for name, array in named_arrays:
        height, width = array.shape[:2]
        if min(height, width) < crop_size:
            skipped.append(f"{name} ({height}x{width})")
            continue
        # Crop before converting so large images are converted only where they are used.
        crops.append(to_grayscale_float(center_crop(array, crop_size)))
        names.append(name)
        if limit and len(crops) >= limit:
            break
    return crops, names


def _warn_skipped(skipped: list[str], where: str, crop_size: int) -> None:
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"jaxshrink.data: skipped {len(skipped)} images in {where} that are "
            f"unreadable or smaller than {crop_size}x{crop_size}: {shown}",
            stacklevel=2,
        )


def _check_nonempty(splits, where: str) -> None:
    for split, (crops, _) in zip(("train", "eval"), splits, strict=True):
        if not crops:
            raise ValueError(
                f"No usable image for the {split} split in {where}: it is empty or "
                "every image was skipped (see the warning)."
            )


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; allowed: {TASKS}.")


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"Unknown data_cfg.source {source!r}; allowed: {SOURCES}.")


# ------------------------------------------------------------------------------------ cache


def load_dataset(data_cfg, task: str) -> Dataset:
    """Returns the dataset for `task`, built once per config and then read from the cache.

    Args:
      data_cfg: data config; see the module docstring for its fields.
      task: 'sobel' or 'canny'.

    Raises:
      ValueError: on an unknown task or source, or when a split has no usable image.
    """
    _check_task(task)
    _check_source(data_cfg.source)
    path = resolve_cache_dir(data_cfg.cache_dir) / (
        f"{task}-{data_cfg.source}-{cache_key(data_cfg, task)}.npz"
    )
    dataset = _read_cache(path)
    how = "loaded from cache"
    if dataset is None:
        dataset = build_dataset(data_cfg, task)
        _write_cache(path, dataset)
        how = "built and cached"
    print(
        f"jaxshrink.data: {how} {task} data, {len(dataset.train)} train / "
        f"{len(dataset.eval)} eval images ({path})"
    )
    return dataset


def resolve_cache_dir(cache_dir: str) -> Path:
    """Returns `cache_dir`, or ``$JAXSHRINK_CACHE``, or ``~/.cache/jaxshrink``, first set wins."""
    chosen = cache_dir or os.environ.get("JAXSHRINK_CACHE") or "~/.cache/jaxshrink"
    return Path(chosen).expanduser()


def cache_key(data_cfg, task: str) -> str:
    """Returns a hash of everything that determines the prepared arrays."""
    config = json.loads(data_cfg.to_json())
    config.pop("cache_dir", None)  # Where the cache lives does not change what is in it.
    content = {
        "format": FORMAT_VERSION,
        "skimage": skimage.__version__,
        "task": task,
        "config": config,
    }
    if data_cfg.source == "folder":
        content["files"] = _folder_fingerprint(_folder_path(data_cfg))
    text = json.dumps(content, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _folder_fingerprint(folder: Path) -> dict:
    files = []
    for path in _list_image_files(folder):
        stat = path.stat()
        files.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    return {"folder": str(folder.resolve()), "files": files}


def _read_cache(path: Path) -> Dataset | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return Dataset(
                train=_split_from_arrays(arrays, "train"), eval=_split_from_arrays(arrays, "eval")
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        warnings.warn(
            f"jaxshrink.data: ignoring unreadable cache {path} ({err}); rebuilding.", stacklevel=2
        )
        return None


def _split_from_arrays(arrays, split: str) -> Split:
    sources = tuple(str(source) for source in arrays[f"{split}_sources"])
    return Split(arrays[f"{split}_images"], arrays[f"{split}_targets"], sources)


def _write_cache(path: Path, dataset: Dataset) -> None:
    arrays = {}
    for split in ("train", "eval"):
        part = getattr(dataset, split)
        arrays[f"{split}_images"] = part.images
        arrays[f"{split}_targets"] = part.targets
        arrays[f"{split}_sources"] = np.asarray(part.sources, dtype=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a reader never sees a half-written file.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise
