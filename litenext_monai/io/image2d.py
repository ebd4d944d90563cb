"""Readers and writers for 2D raster files: PNG, JPEG, BMP, TIFF and GIF.

Arrays come back in image order: ``array[row, column]`` (``H, W``) or ``array[row, column, channel]``
(``H, W, C``). Unlike MONAI's ``PILReader`` (``reverse_indexing=True``), nothing is transposed, so a
mask stored as PNG and an image stored as NIfTI (written from the same ``H, W`` array) stay aligned.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write

__all__ = ["IMAGE_2D_SUFFIXES", "is_image_2d", "read_image_2d", "write_mask_png", "write_image_png"]

IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")

_TIFF_SUFFIXES = (".tif", ".tiff")


def is_image_2d(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of the raster suffixes in :data:`IMAGE_2D_SUFFIXES` (any case)."""
    return Path(path).suffix.lower() in IMAGE_2D_SUFFIXES


def _full_scale(array: np.ndarray) -> tuple[float, float] | None:
    """The nominal intensity range of an integer array's dtype (``None`` for floats)."""
    if array.dtype == bool:
        return (0.0, 1.0)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        return (float(min(info.min, 0)), float(info.max))
    return None


def _pil_to_array(image: Image.Image, as_label: bool) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        if as_label:
            # Indexed masks carry their class in the index, not in the palette colour.
            return np.asarray(image)
        rgb = np.asarray(image.convert("RGB"))
        grey = rgb[..., 0]
        if np.array_equal(grey, rgb[..., 1]) and np.array_equal(grey, rgb[..., 2]):
            return grey
        return rgb
    if mode in ("RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "PA"):
        return np.asarray(image.convert("RGB"))
    if mode in ("LA", "La"):
        return np.asarray(image.convert("L"))
    if mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    return np.asarray(image)


def _read_tiff(path: Path) -> np.ndarray:
    array = tifffile.imread(path, key=0)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        # Planar-configuration TIFFs are stored channel-first.
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim == 3 and array.shape[-1] == 2:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: TIFF page has shape {array.shape}, expected H×W or H×W×C")
    return array


def read_image_2d(path: str | os.PathLike, as_label: bool = False) -> tuple[np.ndarray, dict]:
    """Read a 2D raster file without transposing it.

    Alpha channels are dropped (RGBA → RGB, grey+alpha → grey); palette images become RGB, or
    grey when the palette is grey; 16-bit files stay ``uint16``. TIFF goes through ``tifffile``
    (first page), everything else through PIL (first frame of a GIF).

    Args:
        path: the file.
        as_label: keep the palette indices of indexed (``P`` mode) files instead of their colours,
            because indexed masks store the class in the index.

    Returns:
        ``(array, meta)``: ``array`` is ``H×W`` or ``H×W×3`` in the file's dtype; ``meta`` holds
        ``filename_or_obj``, ``spatial_shape`` (``(H, W)``) and ``value_range`` (the dtype's
        nominal range, used to scale natural images to ``[0, 1]``).

    Raises:
        ValueError: the file is unreadable or truncated (the message names the file).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            array = _read_tiff(path)
        else:
            with Image.open(path) as image:
                image.load()
                array = _pil_to_array(image, as_label)
    except (OSError, UnidentifiedImageError, SyntaxError, tifffile.TiffFileError) as err:
        raise ValueError(f"{path}: unreadable or truncated image file ({err})") from err
    array = np.ascontiguousarray(array)
    meta = {
        "filename_or_obj": str(path),
        "spatial_shape": tuple(int(s) for s in array.shape[:2]),
        "value_range": _full_scale(array),
    }
    return array, meta


def write_mask_png(mask: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a binary mask as an 8-bit PNG with values {0, 255}, atomically.

    zlib level 1: for masks it is 2–5× faster to write than PIL's default level 6 (measured 0.35
    against 0.75 ms for a 256² disk, 1.8 against 9.2 ms for a 256² noise mask) at 1.2–1.4× the size
    of a file of a few KiB; the pixels are the same (PNG is lossless).

    Args:
        mask: ``H×W`` array; any non-zero value is foreground.
        path: destination ``.png``.
    """
    data = np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8)
    if data.ndim != 2:
        raise ValueError(f"{path}: a mask must be H×W, got shape {data.shape}")
    return atomic_write(path, lambda tmp: Image.fromarray(data).save(tmp, format="PNG", compress_level=1))


def write_image_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``H×W`` or ``H×W×3`` ``uint8``/``uint16`` image as PNG, atomically, without transposing."""
    data = np.ascontiguousarray(image)
    if data.dtype not in (np.uint8, np.uint16) or data.ndim not in (2, 3):
        raise ValueError(f"{path}: expected uint8/uint16 H×W[×3], got {data.dtype} {data.shape}")
    if data.dtype == np.uint16 and data.ndim == 3:
        raise ValueError(f"{path}: PNG cannot hold 16-bit RGB through PIL; got shape {data.shape}")
    return atomic_write(path, lambda tmp: Image.fromarray(data).save(tmp, format="PNG"))
