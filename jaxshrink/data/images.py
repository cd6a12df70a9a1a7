"""Images on the host: files read with Pillow into float or 8-bit gray arrays, the
thesis's luma weights, centre crops. Numpy only; nothing here touches JAX."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from jaxshrink.data.split import decode

# ITU-R BT.601 luma, the weights of MATLAB's rgb2gray (which made the thesis's targets) and of
# tf.image.rgb_to_grayscale, rounded so that they sum to exactly 1.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


# The same in thousandths, for the exact integer luma of 8-bit colour.
_LUMA_PERMILLE = np.array([299, 587, 114], np.uint32)


_PIL_DIRECT_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "F"})


class Unusable(Exception):
    """A file Pillow opens but this module cannot use (empty, or pixels of unknown range)."""


# What reading one broken file may raise. Pillow's decoders raise more than OSError on malformed
# input (its fuzzers catch everything), so each file is read inside this net and skipped alone.
READ_ERRORS = (
    OSError,  # Includes PIL.UnidentifiedImageError and truncated data.
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    LookupError,
    TypeError,
    ArithmeticError,
    MemoryError,
    Image.DecompressionBombError,
    Unusable,
)


def to_grayscale(img: np.ndarray) -> np.ndarray:
    """Converts an image of any common layout and dtype to grayscale, compact where exact.

    8-bit and bilevel images give uint8 gray values (k meaning k / 255, see
    `jaxshrink.data.split.decode`): RGB is reduced with the BT.601 luma weights (0.299, 0.587,
    0.114) in exact integer arithmetic and rounded to the nearest integer (half up); bools
    become 0 and 255. Every other image gives float32 in [0, 1], as `to_grayscale_float`. An
    alpha channel is dropped, as MATLAB's imread does.

    Args:
      img: (H, W) or channels-last (H, W, C) array with C in 1 (gray), 2 (gray and alpha),
        3 (RGB) or 4 (RGBA).

    Returns:
      (H, W) uint8 or float32 array.
    """
    img = np.asarray(img)
    if img.dtype not in (np.uint8, np.bool_):
        return to_grayscale_float(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        luma = (img[..., :3].astype(np.uint32) @ _LUMA_PERMILLE + 500) // 1000
        return luma.astype(np.uint8)
    if img.ndim == 3 and img.shape[-1] in (1, 2):
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"Expected an (H, W) or (H, W, C) image, got shape {img.shape}.")
    return img.astype(np.uint8) * np.uint8(255) if img.dtype == np.bool_ else img


def to_grayscale_float(img: np.ndarray) -> np.ndarray:
    """Converts an image of any common layout and dtype to grayscale float32 in [0, 1].

    8-bit and bilevel images go through `to_grayscale` (8-bit gray, then k / 255). Other
    integers are divided by their dtype's maximum (uint16 by 65535), floats are taken as already
    in [0, 1]. RGB is reduced with BT.601 luma weights (0.299, 0.587, 0.114); an alpha channel
    is dropped, as MATLAB's imread does.

    Args:
      img: (H, W) or channels-last (H, W, C) array with C in 1 (gray), 2 (gray and alpha),
        3 (RGB) or 4 (RGBA).

    Returns:
      (H, W) float32 array, clipped to [0, 1].
    """
    img = np.asarray(img)
    if img.dtype in (np.uint8, np.bool_):
        return decode(to_grayscale(img))
    values = _to_unit_range(img)
    if values.ndim == 3:
        values = _merge_channels(values)
    if values.ndim != 2:
        raise ValueError(f"Expected an (H, W) or (H, W, C) image, got shape {np.shape(img)}.")
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _to_unit_range(img: np.ndarray) -> np.ndarray:
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
    """Returns the pixels of a PIL image at their native depth, for `to_grayscale`."""
    # Cameras record rotation in EXIF; crop what a viewer shows.
    im = ImageOps.exif_transpose(im)
    if im.mode in ("P", "PA"):
        # Through RGBA when the palette has transparency: Pillow warns on the way to RGB. The
        # alpha channel is then dropped like any other.
        transparent = im.mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if transparent else "RGB")
    elif im.mode == "I":  # 16-bit files that older Pillow versions open as int32.
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise Unusable("32-bit integer pixels beyond the 16-bit range")
        return values.astype(np.uint16)
    elif im.mode not in _PIL_DIRECT_MODES:  # CMYK, YCbCr, ...
        im = im.convert("RGB")
    return np.asarray(im)


class TooSmall(Exception):
    def __init__(self, height: int, width: int):
        super().__init__(f"{height}x{width}")
        self.shape = (height, width)


def read_image_file(path: Path, crop_size: int) -> np.ndarray:
    """Returns the (crop_size, crop_size) grayscale centre crop of an image file (`to_grayscale`).

    Raises:
      TooSmall: if the image is smaller than the crop (found from the header, before decoding).
      One of `READ_ERRORS`: if the file cannot be read.
    """
    if path.stat().st_size == 0:
        raise Unusable("empty file")
    # Pillow warns about very large images, palettes and corrupt EXIF. A file is either used or
    # named in this module's one warning, so its own warnings add nothing, and under -W error
    # they would abort the whole load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            width, height = im.size
            if min(height, width) < crop_size:
                raise TooSmall(height, width)
            array = _pil_to_array(im)
    return to_grayscale(center_crop(array, crop_size))
