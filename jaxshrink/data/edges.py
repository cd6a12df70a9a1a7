"""The 'sobel' and 'canny' datasets: grayscale image crops and the edge maps to mimic.

The thesis trains on 256x256 grayscale centre crops of PASCAL VOC2012 photographs, with targets
made by the Sobel operator (continuous) or the Canny detector (binary); ``data_cfg.dataset``
names which. This module turns one of three image sources into a `Dataset` whose inputs and
targets are NHWC arrays with one channel, and caches the result on disk (see
`jaxshrink.data.cache`). Reading and cropping an image is `jaxshrink.data.images`'s job, the
edge maps `jaxshrink.data.edge_targets`'s. It runs on the host with numpy only; nothing here
touches JAX.

Storage: the arrays are kept compact (see `jaxshrink.data.split`), so that the thesis's 34000
crops take 6.7 GB and not the 17.8 GB of float32, on disk, in memory and on the device:
  * inputs: uint8 when every image of the split is 8-bit (the gray value k meaning k / 255,
    exactly), float32 otherwise (16-bit and float images keep their precision);
  * Canny targets: uint8 0 and 255 (0.0 and 1.0, exactly);
  * Sobel targets: float16, within 2**-11 of the float32 magnitude relative to it (2**-12
    absolute; a nonzero magnitude of an 8-bit image is at least 1 / (1020 sqrt(2)), far above
    float16's subnormals). Targets are computed in float32 from the crop and then rounded once.
The network still computes in float32: `jaxshrink.core.train` decodes each sampled batch inside the
compiled step, exactly as `jaxshrink.data.split.decode` does on the host.

Sources:
  * ``builtin``: natural photographs that ship inside scikit-image and scikit-learn, so it works
    offline. Each split is cut into many random crops with random flips and 90-degree rotations;
    train crops come only from train images and eval crops only from `eval_images`, so the two
    splits never share a source image. Images smaller than the crop are skipped.
  * ``folder``: every image file under a folder and its subfolders (e.g. VOC2012's
    ``JPEGImages``), centre cropped as in the thesis. The usable images, in an order shuffled by
    the seed, are dealt between train and eval, so each image is in one split only. Files that
    cannot be read (not an image, empty, truncated, beyond Pillow's pixel limit) or are smaller
    than the crop are skipped and named in one `SkippedImagesWarning`, repeated on cached loads;
    fewer than two usable images is a `jaxshrink.core.errors.DataError`. The folder is only read.
  * ``tfds``: a TensorFlow Datasets dataset read with ``tfds.data_source``, which needs no
    TensorFlow. The dataset must already be prepared in the ArrayRecord format; this module
    never downloads (see `jaxshrink.data.tfds_source`).

Targets are computed on each crop, not on the full image, so a target depends only on the pixels
the network sees.

Pixel formats: integers are scaled by their type's maximum (8-bit by 255, 16-bit PNG and TIFF by
65535), bilevel images become 0 and 1, float images are taken as already in [0, 1] and clipped,
colour is reduced with BT.601 luma, and palette images go through RGB (RGBA when the palette has
transparency). The luma of an 8-bit colour image is rounded to 8 bits (the nearest integer, half
up), as MATLAB's rgb2gray (which made the thesis's targets) and Pillow's "L" mode do, so that
8-bit images give 8-bit gray crops and are stored exactly in uint8; the rounding moves a gray
value by at most 0.5 / 255. Luma of 16-bit and float images stays in float. Alpha is ignored,
not composited: a pixel keeps the colour stored under it, as MATLAB's imread (which made the
thesis's data) returns it.

Errors: a config field with a value this module cannot use raises
`jaxshrink.core.errors.ConfigError` naming the field and the allowed values; data that
yields no usable image raises `jaxshrink.core.errors.DataError`. Both are one line and
subclass `ValueError`.

Fields of ``data_cfg`` (an ``ml_collections.ConfigDict``; `default_config` has them all):
  dataset: 'sobel' or 'canny', the target.
  source: 'builtin', 'folder' or 'tfds'.
  crop_size: side of the square crops in pixels (thesis: 256).
  seed: seeds the builtin crop positions and augmentations and the folder train/eval split.
  train_size, eval_size: builtin: number of crops per split; unset (None), 600 and 60.
    folder and tfds: at most this many images per split (one centre crop each); unset or 0
    means every usable image, as the thesis used. A folder is read only until both splits are
    full.
  eval_images: builtin only; names from `BUILTIN_IMAGES` held out for eval. Every other name in
    `BUILTIN_IMAGES` is a train image.
  folder: folder only; the folder searched recursively for image files. It is never modified.
  eval_fraction: folder only; fraction of the usable images, in (0, 1), dealt to eval (at least
    one image, and at least one left for train).
  tfds_name: tfds only; dataset name, e.g. 'voc/2012'.
  tfds_data_dir: tfds only; where the prepared data lives ('' = the tfds default).
  tfds_train_split, tfds_eval_split: tfds only; split names, e.g. 'train', 'validation'.
  tfds_image_key: tfds only; the feature holding the image in each record.
  canny_sigma: Gaussian smoothing of the Canny detector (sqrt(2), MATLAB's default, which the
    thesis used).
  canny_low_threshold, canny_high_threshold: Canny hysteresis thresholds, on scikit-image's
    scale: the unnormalised Sobel magnitude (scipy.ndimage.sobel, up to 4 * sqrt(2)) of the
    smoothed image in [0, 1]. None selects scikit-image's defaults, 0.1 and 0.2.
  cache_dir: where prepared arrays are cached (one folder of .npy files per config, read as
    memory maps); '' means ``$JAXSHRINK_CACHE`` if set, else
    ``~/.cache/jaxshrink``.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import ml_collections
import numpy as np
import skimage
from ml_collections import config_dict
from PIL import Image

from jaxshrink.core import errors
from jaxshrink.data import cache, edge_targets, images, tfds_source
from jaxshrink.data.split import Dataset, decode, make_info

# Bump whenever a change here alters the arrays a config produces, so stale caches are ignored.
# 3: compact storage (uint8 inputs and Canny targets, float16 Sobel targets), 8-bit rounded luma
# of 8-bit colour images, a folder of .npy files per entry.
FORMAT_VERSION = 3

SOURCES = ("builtin", "folder", "tfds")
# Crops per split of the builtin source when train_size / eval_size are unset.
BUILTIN_SIZES = {"train": 600, "eval": 60}
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

# Files named per reason in the skipped-images warning.
_MAX_NAMES = 10


class SkippedImagesWarning(UserWarning):
    """Some image files or records were skipped: unreadable, or smaller than the crop."""


def default_config(name: str) -> ml_collections.ConfigDict:
    """Returns the config of dataset `name` ('sobel' or 'canny') with every field at its default.

    See the module docstring for the fields.
    """
    edge_targets.check_task(name)
    return ml_collections.ConfigDict(
        {
            "dataset": name,
            "source": "builtin",
            "crop_size": 256,
            "seed": 0,
            # Typed placeholders: unset means the source's default (see the module docstring).
            "train_size": config_dict.placeholder(int),
            "eval_size": config_dict.placeholder(int),
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


def input_shape(data_cfg) -> tuple[int, ...]:
    """One example's shape: a square grayscale crop."""
    return (int(data_cfg.crop_size), int(data_cfg.crop_size), 1)


# ---------------------------------------------------------------------------------- sources


def build_dataset(data_cfg) -> Dataset:
    """Builds the dataset in memory, without the cache and without info; see `load`.

    For small configs (tests, a look at the data): the arrays are compact as in the cache
    (see the module docstring) but read into memory.
    """
    with tempfile.TemporaryDirectory(prefix="jaxshrink-build-") as tmp:
        path = Path(tmp) / "dataset"
        with cache.Writer(path) as writer:
            facts = _write_examples(data_cfg, writer)
            writer.commit((), facts)
        dataset, _ = cache.read(path, mmap=False)
    return dataset


def _write_examples(data_cfg, writer: cache.Writer) -> dict:
    """Adds every example of the source to `writer`, one at a time; returns facts for the meta.

    One image's crop and target are all that is in memory at a time (the builtin source keeps
    its few photographs), so a folder of any size is built in constant memory.
    """
    edge_targets.check_task(data_cfg.dataset)
    _check_source(data_cfg.source)
    _check_crop_size(data_cfg.crop_size)
    sources = {"builtin": _builtin_examples, "folder": _folder_examples, "tfds": _tfds_examples}
    facts: dict = {}
    compute = edge_targets.target_fn(data_cfg)
    for split, name, crop in sources[data_cfg.source](data_cfg, facts):
        target = edge_targets.encode_targets(compute(decode(crop)), data_cfg.dataset)
        writer.add(split, crop[..., None], target[..., None], name)
    return facts


def _builtin_examples(data_cfg, facts: dict) -> Iterator[tuple[str, str, np.ndarray]]:
    """Yields (split, builtin image name, crop): the random crops of each split."""
    eval_names = _check_eval_images(data_cfg.eval_images)
    train_names = tuple(name for name in BUILTIN_IMAGES if name not in eval_names)
    if not train_names:
        raise errors.ConfigError(
            f"No builtin train image is left: data.eval_images names all {len(BUILTIN_IMAGES)} "
            "builtin images; allowed: a subset that leaves at least one out"
        )
    for stream, (split, names) in enumerate((("train", train_names), ("eval", eval_names))):
        crops, picks = _builtin_split(data_cfg, split, names, stream)
        for crop, name in zip(crops, picks, strict=True):
            yield split, name, crop


def _builtin_split(data_cfg, split: str, names: tuple[str, ...], stream: int):
    size = _check_size(data_cfg, split)
    # One random stream per split, so changing eval_size leaves the train crops as they were.
    rng = np.random.default_rng([data_cfg.seed, stream])
    return _random_crops(names, size, data_cfg.crop_size, rng, split)


def _check_eval_images(eval_images) -> tuple[str, ...]:
    names = (eval_images,) if isinstance(eval_images, str) else tuple(eval_images)
    unknown = [name for name in names if name not in BUILTIN_IMAGES]
    if unknown:
        raise errors.ConfigError(
            f"data.eval_images: unknown names {unknown}; allowed: names from {BUILTIN_IMAGES}"
        )
    if not names:
        raise errors.ConfigError(
            "data.eval_images: got no name; allowed: at least one builtin image name"
        )
    return names


def _load_builtin_image(name: str) -> np.ndarray:
    if name in _SKLEARN_IMAGES:
        from sklearn.datasets import load_sample_image  # Lazy: only this source needs sklearn.

        return images.to_grayscale(load_sample_image(f"{name}.jpg"))
    import skimage.data

    image = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":  # (left, right, disparity): keep the left photograph.
        image = image[0]
    return images.to_grayscale(image)


def _random_crops(names, size, crop_size, rng, split):
    images = {name: _load_builtin_image(name) for name in names}
    usable = [name for name in names if min(images[name].shape) >= crop_size]
    if not usable:
        height, width = max((images[name].shape for name in names), key=min)
        raise errors.ConfigError(
            f"data.crop_size: got {crop_size}; allowed: at most {min(height, width)} for the "
            f"builtin {split} images (the largest is {height}x{width}); "
            "lower --config.data.crop_size"
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


class _Skip(NamedTuple):
    """An image left out: its name, why, and its (height, width) when smaller than the crop."""

    name: str
    why: str
    small_shape: tuple[int, int] | None = None


def _folder_examples(data_cfg, facts: dict) -> Iterator[tuple[str, str, np.ndarray]]:
    """Yields (split, path relative to the folder, centre crop) per usable image dealt.

    Fills `facts` with ``image_files`` (found) and ``images_read`` (read, usable or not).
    """
    folder = _folder_path(data_cfg)
    fraction = _check_eval_fraction(data_cfg.eval_fraction)
    limits = {split: _check_size(data_cfg, split) for split in ("train", "eval")}
    files = _list_image_files(folder)
    order = np.random.default_rng(data_cfg.seed).permutation(len(files))
    skipped: list[_Skip] = []
    counts = {"train": 0, "eval": 0}
    named_crops = _read_folder(folder, [files[i] for i in order], data_cfg.crop_size, skipped)
    yield from _deal(named_crops, fraction, limits, counts)
    where = f"data.folder={str(folder)!r}"
    read = len(skipped) + sum(counts.values())
    _warn_skipped(skipped, read, where, data_cfg.crop_size)
    if not all(counts.values()):
        # Fewer than two usable images: with limits >= 1 the deal fills both splits otherwise.
        raise _no_usable_folder_error(folder, where, files, skipped, data_cfg.crop_size)
    facts.update(image_files=len(files), images_read=read)


def _read_folder(
    folder: Path, paths: list[Path], crop_size: int, skipped: list[_Skip]
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (relative path, centre crop) per usable file; appends the others to `skipped`."""
    for path in paths:
        name = path.relative_to(folder).as_posix()
        try:
            crop = images.read_image_file(path, crop_size)
        except images.TooSmall as small:
            skipped.append(_Skip(name, str(small), small.shape))
        except images.READ_ERRORS as err:
            skipped.append(_Skip(name, _describe_read_error(err)))
        else:
            yield name, crop


def _describe_read_error(err: Exception) -> str:
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image Pillow can read"  # Its message repeats the whole path.
    if isinstance(err, Image.DecompressionBombError):
        return "more pixels than PIL.Image.MAX_IMAGE_PIXELS"
    if isinstance(err, images.Unusable):
        return str(err)
    text = " ".join(str(err).split())
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _eval_count(n: int, fraction: float) -> int:
    """How many of the first `n` usable images go to eval: the second always, the first never."""
    if n < 2:
        return 0
    return min(max(math.floor(fraction * n + 0.5), 1), n - 1)


def _deal(
    named_crops: Iterable[tuple[str, np.ndarray]],
    fraction: float,
    limits: dict[str, int],
    counts: dict[str, int],
) -> Iterator[tuple[str, str, np.ndarray]]:
    """Deals usable images to train and eval in turn, so that eval holds `fraction` of them.

    Yields (split, name, crop) and counts each split's images in `counts`. An image's split
    depends only on its place among the usable images, so one split's limit (0 = none) never
    changes which images the other split gets. Stops once both are full.
    """

    def full(split: str) -> bool:
        return bool(limits[split]) and counts[split] >= limits[split]

    for index, (name, crop) in enumerate(named_crops):
        to_eval = _eval_count(index + 1, fraction) > _eval_count(index, fraction)
        split = "eval" if to_eval else "train"
        if not full(split):
            counts[split] += 1
            yield split, name, crop
        if full("train") and full("eval"):
            break


def _no_usable_folder_error(
    folder: Path, where: str, files: list[Path], skipped: list[_Skip], crop_size: int
) -> errors.DataError:
    if not files:
        others = sum(1 for p in folder.rglob("*") if p.is_file())
        return errors.DataError(
            f"{where} holds no image file ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or its "
            f"subfolders, and {_plural(others, 'other file')}; point --config.data.folder at a "
            "folder of images"
        )
    small = [skip for skip in skipped if skip.small_shape]
    used = len(files) - len(skipped)
    fix = []
    if small:
        height, width = max((skip.small_shape for skip in small), key=min)
        fix.append(
            f"crop_size={crop_size} but the largest skipped image is {height}x{width}; "
            f"lower --config.data.crop_size to {min(height, width)} or less"
        )
    if len(small) < len(skipped):
        fix.append("replace the unreadable files")
    fix.append("add images")
    return errors.DataError(
        f"{where}: {used} of its {len(files)} image files usable "
        f"({len(skipped) - len(small)} unreadable, {len(small)} smaller than the "
        f"{crop_size}x{crop_size} crop, named in the warning); need 2, one for train and one "
        f"for eval: {', or '.join(fix)}"
    )


def _check_eval_fraction(eval_fraction) -> float:
    ok = isinstance(eval_fraction, int | float) and 0 < eval_fraction < 1
    if not ok:
        raise errors.ConfigError(
            f"data.eval_fraction: got {eval_fraction!r}; allowed: a fraction in (0, 1)"
        )
    return float(eval_fraction)


def _check_size(data_cfg, split: str) -> int:
    """Returns ``data_cfg.<split>_size`` with unset resolved: builtin crops, or a cap (0 = all)."""
    builtin = data_cfg.source == "builtin"
    size = data_cfg[f"{split}_size"]
    if size is None:
        return BUILTIN_SIZES[split] if builtin else 0
    minimum = 1 if builtin else 0
    if isinstance(size, bool) or not isinstance(size, int) or size < minimum:
        allowed = (
            f"an integer >= 1, or unset for {BUILTIN_SIZES[split]}"
            if builtin
            else "an integer >= 0, or unset (0 and unset = every usable image)"
        )
        raise errors.ConfigError(
            f"data.{split}_size: got {size!r}; allowed for the {data_cfg.source} source: {allowed}"
        )
    return size


def _check_crop_size(crop_size) -> None:
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
        raise errors.ConfigError(f"data.crop_size: got {crop_size!r}; allowed: an integer >= 1")


def _folder_path(data_cfg) -> Path:
    if not data_cfg.folder:
        raise errors.ConfigError(
            f"data.folder: got {data_cfg.folder!r}; allowed: a folder of images for the folder "
            "source (set --config.data.folder)"
        )
    folder = Path(data_cfg.folder).expanduser()
    if not folder.exists():
        raise errors.DataError(f"data.folder={data_cfg.folder!r} does not exist")
    if not folder.is_dir():
        raise errors.DataError(f"data.folder={data_cfg.folder!r} is a file, not a folder")
    return folder


def _list_image_files(folder: Path) -> list[Path]:
    """Every file with an image suffix under `folder`; broken links too, to be named as such."""
    files = (
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or _is_broken_link(p))
    )
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _tfds_examples(data_cfg, facts: dict) -> Iterator[tuple[str, str, np.ndarray]]:
    """Yields (split, 'name/split[index]', centre crop) per usable record of each split."""
    skipped: list[_Skip] = []
    counts = {"train": 0, "eval": 0}
    for split in ("train", "eval"):
        tfds_split = data_cfg[f"tfds_{split}_split"]
        limit = _check_size(data_cfg, split)
        source = tfds_source.open_split(data_cfg, split)
        named = _tfds_records(source, f"{data_cfg.tfds_name}/{tfds_split}", data_cfg.tfds_image_key)
        for name, crop in _center_crops(named, data_cfg.crop_size, limit, skipped):
            counts[split] += 1
            yield split, name, crop
    read = len(skipped) + sum(counts.values())
    _warn_skipped(skipped, read, f"tfds {data_cfg.tfds_name!r}", data_cfg.crop_size)
    _check_nonempty(counts, f"data.tfds_name={data_cfg.tfds_name!r}", data_cfg.crop_size)
    facts.update(images_read=read)


def _tfds_records(source, prefix: str, image_key: str) -> Iterator[tuple[str, np.ndarray]]:
    for index in range(len(source)):
        record = source[index]
        if image_key not in record:
            raise errors.ConfigError(
                f"data.tfds_image_key: got {image_key!r}, not a feature of {prefix}; "
                f"allowed: {sorted(record)}"
            )
        yield f"{prefix}[{index}]", np.asarray(record[image_key])


def _center_crops(
    named_arrays: Iterable[tuple[str, np.ndarray]], crop_size: int, limit: int, skipped: list[_Skip]
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (name, crop): centre crops of up to `limit` images (0 = all), skipping small ones."""
    used = 0
    for name, array in named_arrays:
        height, width = array.shape[:2]
        if min(height, width) < crop_size:
            skipped.append(_Skip(name, f"{height}x{width}", (height, width)))
            continue
        # Crop before converting so large images are converted only where they are used.
        yield name, images.to_grayscale(images.center_crop(array, crop_size))
        used += 1
        if limit and used >= limit:
            break


def _warn_skipped(skipped: list[_Skip], read: int, where: str, crop_size: int) -> None:
    """Names the skipped images in one warning, grouped by reason."""
    if not skipped:
        return
    small = [skip for skip in skipped if skip.small_shape]
    unreadable = [skip for skip in skipped if not skip.small_shape]
    groups = []
    if unreadable:
        groups.append(f"{len(unreadable)} unreadable: {_name_list(unreadable)}")
    if small:
        crop = f"{crop_size}x{crop_size}"
        groups.append(f"{len(small)} smaller than the {crop} crop: {_name_list(small)}")
    warnings.warn(
        f"jaxshrink.data: skipped {_plural(len(skipped), 'image')} of the {read} read in "
        f"{where}; " + "; ".join(groups),
        SkippedImagesWarning,
        stacklevel=4,  # The caller of build_dataset.
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _name_list(skipped: list[_Skip]) -> str:
    # repr() keeps a name with a newline or other control character on one line.
    shown = [
        f"{skip.name if skip.name.isprintable() else repr(skip.name)} ({skip.why})"
        for skip in sorted(skipped)[:_MAX_NAMES]
    ]
    more = len(skipped) - _MAX_NAMES
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _check_nonempty(counts: dict[str, int], where: str, crop_size: int) -> None:
    for split in ("train", "eval"):
        if not counts[split]:
            raise errors.DataError(
                f"No usable image for the {split} split in {where}: it is empty or every image "
                f"was smaller than the {crop_size}x{crop_size} crop (named in the warning)"
            )



def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise errors.ConfigError(f"data.source: got {source!r}; allowed: {SOURCES}")


# ------------------------------------------------------------------------------------ cache


def load(data_cfg) -> Dataset:
    """Returns the dataset, built once per config and then read from the cache, with its info.

    The arrays are read-only memory maps of the cache files, in the compact dtypes of the
    module docstring; decode slices with `jaxshrink.data.split.decode`.

    Args:
      data_cfg: data config; see the module docstring for its fields.

    Returns:
      The dataset; besides the common keys its `info` holds ``cache_file`` (the cache entry, a
      folder), ``from_cache`` (whether this load read it from there), ``stored`` (dtypes and
      size on disk) and, for a folder, ``image_files`` and ``images_read``.

    Warns:
      SkippedImagesWarning: naming the images skipped as unreadable or smaller than the crop,
        again on every load from the cache, until the source changes.

    Raises:
      errors.ConfigError: on an unknown dataset or source or another bad field of `data_cfg`.
      errors.DataError: when the data yields no usable image for a split.
    """
    edge_targets.check_task(data_cfg.dataset)
    _check_source(data_cfg.source)
    cache_dir = cache.resolve_cache_dir(data_cfg.cache_dir)
    if data_cfg.source == "folder":
        _check_cache_outside(cache_dir, _folder_path(data_cfg))
    path = cache_dir / f"{data_cfg.dataset}-{data_cfg.source}-{cache_key(data_cfg)}"
    cached = cache.read(path)
    from_cache = cached is not None
    if cached is None:
        cache.discard(path)  # An unreadable entry, if any, so the new one can take its place.
        _build_noting_skips(data_cfg, path)
        cached = cache.read(path)
        if cached is None:
            raise errors.DataError(f"the cache entry {path} just written cannot be read back")
    else:
        for note in cached[1]["notes"]:
            warnings.warn(note, SkippedImagesWarning, stacklevel=3)  # The caller of load_dataset.
    dataset, meta = cached
    facts = {key: meta[key] for key in ("image_files", "images_read") if key in meta}
    info = make_info(
        data_cfg,
        dataset.train,
        dataset.eval,
        _describe(data_cfg, dataset, facts),
        crop_size=data_cfg.crop_size,
        cache_file=str(path),
        from_cache=from_cache,
        stored=_stored(dataset, path),
        **facts,
    )
    return Dataset(dataset.train, dataset.eval, info)


def _stored(dataset: Dataset, path: Path) -> str:
    """E.g. 'uint8 inputs, float16 targets, 6.71 GB on disk'."""
    inputs = {str(split.inputs.dtype) for split in (dataset.train, dataset.eval)}
    targets = {str(split.targets.dtype) for split in (dataset.train, dataset.eval)}
    size = cache.size_on_disk(path)
    return f"{'/'.join(sorted(inputs))} inputs, {'/'.join(sorted(targets))} targets, " + (
        f"{size / 1e9:.2f} GB on disk" if size >= 1e8 else f"{size / 1e6:.1f} MB on disk"
    )


def _describe(data_cfg, dataset: Dataset, facts: dict) -> str:
    """One sentence: which edges of what crops of which images."""
    target = {"sobel": "Sobel edge magnitudes", "canny": "Canny edges"}[data_cfg.dataset]
    counts = f"{len(dataset.train)} train / {len(dataset.eval)} eval"
    crop = f"{data_cfg.crop_size}x{data_cfg.crop_size}"
    if data_cfg.source == "builtin":
        images = len(set(dataset.train.sources)), len(set(dataset.eval.sources))
        return (
            f"{target} of {counts} random {crop} grayscale crops (rotated and flipped) of "
            f"{images[0]} / {images[1]} builtin scikit-image and scikit-learn photographs"
        )
    if data_cfg.source == "folder":
        used = len(dataset.train) + len(dataset.eval)
        files = facts.get("image_files", used)
        capped = any(_check_size(data_cfg, split) for split in ("train", "eval"))
        every = "capped by data.train_size / data.eval_size" if capped else "every usable one"
        return (
            f"{target} of {counts} {crop} grayscale centre crops, one per image, of {used} of "
            f"the {files} image files in {data_cfg.folder} ({every})"
        )
    return (
        f"{target} of {counts} {crop} grayscale centre crops of tfds {data_cfg.tfds_name!r} "
        f"splits {data_cfg.tfds_train_split} / {data_cfg.tfds_eval_split}"
    )


def _build_noting_skips(data_cfg, path: Path) -> None:
    """Builds the cache entry at `path`, passing the build's warnings on.

    The skipped-image warnings are also kept in the entry, to be repeated on every load.
    """
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught, cache.Writer(path) as writer:
            facts = _write_examples(data_cfg, writer)
            notes = tuple(
                str(w.message) for w in caught if issubclass(w.category, SkippedImagesWarning)
            )
            writer.commit(notes, facts)
    finally:  # Also when it raises: the warning names the files its error counts.
        for w in caught:
            if issubclass(w.category, SkippedImagesWarning):  # At the caller, as from the cache.
                warnings.warn(w.message, stacklevel=4)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _check_cache_outside(cache_dir: Path, folder: Path) -> None:
    if cache_dir.resolve().is_relative_to(folder.resolve()):
        raise errors.ConfigError(
            f"data.cache_dir: got {str(cache_dir)!r}, inside data.folder={str(folder)!r}; "
            "allowed: a folder outside it (the image folder is only read; see $JAXSHRINK_CACHE)"
        )


def cache_key(data_cfg) -> str:
    """Returns a hash of everything that determines the prepared arrays."""
    config = json.loads(data_cfg.to_json())
    config.pop("cache_dir", None)  # Where the cache lives does not change what is in it.
    for split in ("train", "eval"):  # Unset and its value are the same arrays.
        config[f"{split}_size"] = _check_size(data_cfg, split)
    # The dataset name goes in as "task", where it was before it joined the config, so the
    # key of a config is what it was then and existing caches stay valid.
    task = config.pop("dataset")
    content = {
        "format": FORMAT_VERSION,
        "skimage": skimage.__version__,
        "pillow": Image.__version__,
        "task": task,
        "config": config,
    }
    if data_cfg.source == "folder":
        content["files"] = _folder_fingerprint(_folder_path(data_cfg))
    return cache.hash_key(content)


def _folder_fingerprint(folder: Path) -> dict:
    files = []
    for path in _list_image_files(folder):
        try:
            stat = path.stat()
        except OSError:  # A broken link, or a file deleted since the listing.
            stat = None
        name = path.relative_to(folder).as_posix()
        files.append([name, stat.st_size, stat.st_mtime_ns] if stat else [name, None, None])
    return {"folder": str(folder.resolve()), "files": files}
