"""2D raster reading: formats, bit depths, alpha, palettes, no transposition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from litenext_monai.io import read_image, read_image_2d, write_mask_png

RNG = np.random.default_rng(40)
GREY = RNG.integers(0, 256, (20, 30), dtype=np.uint8)  # asymmetric: 20 rows, 30 columns
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".gif"])
def test_lossless_formats_keep_rows_and_values(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"grey{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, GREY)
    else:
        Image.fromarray(GREY).save(path)
    array, meta = read_image(path)
    assert array.shape == (20, 30) and np.array_equal(array, GREY)
    assert meta["spatial_shape"] == (20, 30)


def test_rgba_drops_alpha_and_rgb_tiff(tmp_path: Path) -> None:
    Image.fromarray(np.dstack([RGB, np.full((20, 30), 9, np.uint8)])).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image_2d(tmp_path / "rgba.png")[0], RGB)
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(RGB, -1, 0), planarconfig="separate", photometric="rgb"
    )
    assert np.array_equal(read_image_2d(tmp_path / "planar.tif")[0], RGB)


def test_sixteen_bit_and_jpeg(tmp_path: Path) -> None:
    deep = GREY.astype(np.uint16) * 257
    Image.fromarray(deep).save(tmp_path / "deep.png")
    array, meta = read_image(tmp_path / "deep.png")
    assert array.dtype == np.uint16 and np.array_equal(array, deep) and meta["value_range"] == (0.0, 65535.0)
    smooth = np.tile(np.linspace(0, 255, 30, dtype=np.uint8), (20, 1))
    Image.fromarray(np.dstack([smooth] * 3)).save(tmp_path / "x.jpg", quality=100)
    array, _ = read_image(tmp_path / "x.jpg")
    assert array.shape == (20, 30, 3) and np.abs(array.astype(int) - smooth[..., None]).max() <= 3


def test_palette_masks_keep_indices_images_use_colours(tmp_path: Path) -> None:
    indices = np.zeros((20, 30), np.uint8)
    indices[3:9, 4:20] = 2
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    image.save(tmp_path / "p.png")
    assert np.array_equal(read_image(tmp_path / "p.png", as_label=True)[0], indices)
    colours = read_image(tmp_path / "p.png")[0]
    assert colours.shape == (20, 30, 3) and np.array_equal(colours[5, 5], [0, 0, 255])


def test_unreadable_and_truncated_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    Image.fromarray(RGB).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_write_mask_png_is_binary_255(tmp_path: Path) -> None:
    write_mask_png(GREY > 100, tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as image:
        data = np.asarray(image)
    assert image.mode == "L" and np.array_equal(data, np.where(GREY > 100, 255, 0))
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
