"""Built-in reproducible synthetic 2D segmentation dataset.

The data exercise what the Marginal Weight Loss (MWL) is for: crowded objects that touch and
overlap, boundaries that fade over several pixels, uneven illumination, blur and noise. Two
variants exist:

* ``"nuclei"``: grey fluorescence-like images of clustered elliptical nuclei with chromatin
  texture, plus bright structures that are *not* targets (out-of-focus blobs and small
  debris), so that thresholding the raw intensity does not solve the task.
* ``"lesion"``: RGB dermoscopy-like images of an irregular pigmented lesion (with touching
  satellite lobes) on skin, with hairs, freckles, specular highlights and a dark vignette.
* ``"multiclass"``: RGB H&E-like images of touching, overlapping cells: label map with
  cytoplasm = 1 and nucleus = 2 (each nucleus inside and touching its cytoplasm), plus red blood
  cells and debris that are not annotated. Masks hold the class values 0, 1, 2 (not scaled).
* ``"large"``: the ``"nuclei"`` look on large images (default 1024×1024) whose nuclei keep their
  absolute size (radius 5–9.5 px, as at 128 px), so they are small structures: resizing the image
  to a 256 network input shrinks them to 1–2.5 px, a sliding window at full resolution does not.

Every case is drawn from its own generator seeded with ``(seed, case_index)``, so a dataset is
byte-identical for the same arguments. Files are written as ``images/<id>.png`` (8-bit grey or
RGB) and ``masks/<id>.png`` (8-bit, values {0, 255}; label maps {0, 1, 2} for ``"multiclass"``,
whose datalist also records ``num_classes`` and the class ``labels``) beside a MONAI datalist
``datalist.json`` whose ``"training"``, ``"validation"`` and ``"test"`` lists hold paths relative
to the JSON's folder, so ``monai.data.load_decathlon_datalist(path, data_list_key="training")``
loads it directly.

Command line::

    python -m litenext_monai.data.synthetic OUT_DIR [--variant nuclei|lesion|multiclass|large] [--num-train N]
        [--num-val N] [--num-test N] [--seed S] [--image-size PX] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from litenext_monai.data.splits import SPLIT_KEYS, split_hash
from litenext_monai.io.atomic import atomic_write

__all__ = ["VARIANTS", "CLASS_LABELS", "DATALIST_NAME", "generate_synthetic_dataset", "render_case", "main"]

VARIANTS = ("nuclei", "lesion", "multiclass", "large")
#: Class names of the label maps of each variant (index = stored value); binary variants have one class.
CLASS_LABELS = {
    "nuclei": ("background", "nucleus"),
    "lesion": ("background", "lesion"),
    "multiclass": ("background", "cytoplasm", "nucleus"),
    "large": ("background", "nucleus"),
}
DATALIST_NAME = "datalist.json"
# Bumped whenever the drawing changes, so an old cached folder is never silently reused.
GENERATOR_VERSION = 1
DEFAULT_NUM_TRAIN = 160
DEFAULT_NUM_VAL = 20
DEFAULT_NUM_TEST = 40
DEFAULT_IMAGE_SIZE = 128
#: Default side of the ``"large"`` variant.
DEFAULT_LARGE_IMAGE_SIZE = 1024


def _default_size(variant: str, image_size: int | None) -> int:
    if image_size is not None:
        return int(image_size)
    return DEFAULT_LARGE_IMAGE_SIZE if variant == "large" else DEFAULT_IMAGE_SIZE


def _smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth random field in [0, 1] with structures about ``scale`` pixels wide (H×W, float32)."""
    coarse = max(2, int(round(size / scale)))
    field = ndimage.zoom(rng.random((coarse, coarse)), size / coarse, order=3, mode="nearest")
    field = field[:size, :size]
    lo, hi = float(field.min()), float(field.max())
    return ((field - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def _illumination(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Multiplicative illumination: a linear ramp in a random direction times a smooth field."""
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / size
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    strength = rng.uniform(0.5, 0.9)
    field = _smooth_field(rng, size, size / 2.5)
    return ((1.0 - strength) + strength * ramp) * (0.7 + 0.6 * field)


def _gaussian_spot(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, sigma: float) -> np.ndarray:
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _render_nuclei(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw one fluorescence-like grey image, its nucleus mask and the number of nuclei drawn."""
    s = size / 128.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centres: list[tuple[float, float]] = []
    # Clusters put nuclei within about one radius of each other, so many touch or overlap.
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.uniform(0.15, 0.85, size=2) * size
        for _ in range(int(rng.integers(3, 7))):
            oy, ox = rng.normal(0.0, 7.0 * s, size=2)
            centres.append((float(np.clip(cy + oy, 0, size - 1)), float(np.clip(cx + ox, 0, size - 1))))
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = rng.uniform(0.05, 0.95, size=2) * size
        centres.append((float(cy), float(cx)))

    mask = np.zeros((size, size), dtype=bool)
    signal = np.zeros((size, size), dtype=np.float32)
    texture = _smooth_field(rng, size, 3.0 * s)
    for cy, cx in centres:
        a = rng.uniform(5.0, 9.5) * s
        b = a * rng.uniform(0.6, 1.0)
        theta = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        mask |= r <= 1.0
        # A soft edge several pixels wide: the true border sits halfway down the ramp.
        edge_width = rng.uniform(0.6, 1.5) * s
        profile = 1.0 / (1.0 + np.exp(-(1.0 - r) * b / edge_width))
        brightness = rng.uniform(0.35, 1.0)
        signal += brightness * profile * (0.75 + 0.5 * texture)

    distractors = np.zeros((size, size), dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):  # out-of-focus cells: large, smooth, not annotated
        cy, cx = rng.uniform(0, size, size=2)
        distractors += rng.uniform(0.35, 0.8) * _gaussian_spot(yy, xx, cy, cx, rng.uniform(7.0, 13.0) * s)
    for _ in range(int(rng.integers(4, 12))):  # debris: small, very bright, not annotated
        cy, cx = rng.uniform(0, size, size=2)
        distractors += rng.uniform(0.6, 1.4) * _gaussian_spot(yy, xx, cy, cx, rng.uniform(0.8, 1.8) * s)

    haze = 0.08 + 0.25 * _smooth_field(rng, size, size / 3.0)
    image = (signal + distractors + haze) * _illumination(rng, size, yy, xx)
    image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.5, 1.1) * s)
    # Shot noise (Poisson at a random photon budget) plus camera read noise.
    photons = rng.uniform(40.0, 120.0)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons
    image = image + rng.normal(0.0, 0.03, size=image.shape)
    image = np.clip(image / 1.4, 0.0, 1.0)
    return (image * 255.0 + 0.5).astype(np.uint8), mask, len(centres)


def _polar_radius(rng: np.random.Generator, mean_radius: float, angle: np.ndarray) -> np.ndarray:
    """Irregular star-shaped border: the mean radius modulated by a few random harmonics."""
    radius = np.ones_like(angle)
    for k in range(2, 7):
        radius += rng.uniform(0.0, 0.22 / k**0.7) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return mean_radius * radius


def _render_lesion(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw one dermoscopy-like RGB image, its lesion mask and the number of lobes drawn."""
    s = size / 128.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    skin = np.array([0.86, 0.66, 0.56]) + rng.uniform(-0.08, 0.06, size=3)
    pigment = np.array([0.42, 0.26, 0.18]) * rng.uniform(0.6, 1.3)
    blue_grey = np.array([0.35, 0.38, 0.48])

    cy, cx = rng.uniform(0.35, 0.65, size=2) * size
    lobes = [(cy, cx, rng.uniform(16.0, 32.0) * s)]
    # Satellite lobes start just inside the main border, so they touch or overlap it.
    for _ in range(int(rng.integers(0, 3))):
        phi = rng.uniform(0, 2 * np.pi)
        dist = lobes[0][2] * rng.uniform(0.8, 1.2)
        lobes.append((cy + dist * np.sin(phi), cx + dist * np.cos(phi), rng.uniform(6.0, 12.0) * s))

    mask = np.zeros((size, size), dtype=bool)
    alpha = np.zeros((size, size), dtype=np.float32)
    for ly, lx, mean_radius in lobes:
        angle = np.arctan2(yy - ly, xx - lx)
        border = _polar_radius(rng, mean_radius, angle)
        dist = np.sqrt((yy - ly) ** 2 + (xx - lx) ** 2)
        mask |= dist <= border
        edge_width = rng.uniform(1.0, 3.5) * s
        alpha = np.maximum(alpha, 1.0 / (1.0 + np.exp(-(border - dist) / edge_width)))

    variegation = _smooth_field(rng, size, 8.0 * s)
    blue_part = (_smooth_field(rng, size, 20.0 * s) > rng.uniform(0.6, 1.0)).astype(np.float32)
    lesion_rgb = pigment[None, None, :] * (0.6 + 0.8 * variegation[..., None])
    lesion_rgb = lesion_rgb * (1 - 0.6 * blue_part[..., None]) + blue_grey * 0.6 * blue_part[..., None]
    skin_rgb = skin[None, None, :] * (0.9 + 0.2 * _smooth_field(rng, size, 6.0 * s)[..., None])
    # Faint pigment over the whole lesion makes some lesions barely darker than the skin.
    contrast = rng.uniform(0.45, 1.0)
    image = skin_rgb * (1 - contrast * alpha[..., None]) + lesion_rgb * contrast * alpha[..., None]

    for _ in range(int(rng.integers(2, 9))):  # freckles: small pigmented spots, not annotated
        fy, fx = rng.uniform(0, size, size=2)
        spot = _gaussian_spot(yy, xx, fy, fx, rng.uniform(1.5, 3.0) * s)[..., None]
        image = image * (1 - 0.5 * spot) + pigment * 0.5 * spot
    for _ in range(int(rng.integers(0, 6))):  # hairs: thin dark quadratic curves, not annotated
        p0, p1, p2 = (rng.uniform(-0.1, 1.1, size=2) * size for _ in range(3))
        t = np.linspace(0.0, 1.0, 4 * size)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        hair = np.zeros((size, size), dtype=np.float32)
        rows, cols = np.round(curve).astype(int).T
        keep = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
        hair[rows[keep], cols[keep]] = 1.0
        hair = np.clip(ndimage.gaussian_filter(hair, 0.6 * s) * 2.5, 0, 1)[..., None]
        image = image * (1 - 0.8 * hair) + 0.1 * 0.8 * hair
    for _ in range(int(rng.integers(0, 4))):  # specular highlights
        hy, hx = rng.uniform(0, size, size=2)
        glint = _gaussian_spot(yy, xx, hy, hx, rng.uniform(1.0, 2.5) * s)[..., None]
        image = image + 0.6 * glint

    vignette_radius = rng.uniform(0.62, 0.9) * size
    dist_centre = np.sqrt((yy - size / 2) ** 2 + (xx - size / 2) ** 2)
    vignette = 1.0 / (1.0 + np.exp((dist_centre - vignette_radius) / (3.0 * s)))
    image = image * _illumination(rng, size, yy, xx)[..., None] * (0.15 + 0.85 * vignette[..., None])
    image = ndimage.gaussian_filter(image, sigma=(rng.uniform(0.5, 1.2) * s,) * 2 + (0,))
    image = image + rng.normal(0.0, 0.025, size=image.shape)
    image = np.clip(image, 0.0, 1.0)
    return (image * 255.0 + 0.5).astype(np.uint8), mask, len(lobes)


def _window(cy: float, cx: float, radius: float, size: int) -> tuple[slice, slice]:
    """Rows and columns of the square of half-side ``radius`` around ``(cy, cx)``, clipped to the image."""
    r0, r1 = max(0, int(cy - radius)), min(size, int(cy + radius) + 2)
    c0, c1 = max(0, int(cx - radius)), min(size, int(cx + radius) + 2)
    return slice(r0, r1), slice(c0, c1)


def _render_large(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Fluorescence-like nuclei at their 128-px size on a large image; each object drawn in its own window."""
    area = (size / 128.0) ** 2
    centres: list[tuple[float, float]] = []
    for _ in range(max(1, int(round(area * rng.uniform(2.0, 4.0))))):
        cy, cx = rng.uniform(0.02, 0.98, size=2) * size
        for _ in range(int(rng.integers(2, 6))):
            oy, ox = rng.normal(0.0, 7.0, size=2)
            centres.append((float(np.clip(cy + oy, 0, size - 1)), float(np.clip(cx + ox, 0, size - 1))))
    for _ in range(max(1, int(round(area * rng.uniform(1.0, 3.0))))):
        centres.append(tuple(float(v) for v in rng.uniform(0.0, size - 1, size=2)))

    mask = np.zeros((size, size), dtype=bool)
    signal = np.zeros((size, size), dtype=np.float32)
    texture = _smooth_field(rng, size, 3.0)
    for cy, cx in centres:
        a = rng.uniform(5.0, 9.5)
        b = a * rng.uniform(0.6, 1.0)
        theta = rng.uniform(0, np.pi)
        edge_width = rng.uniform(0.6, 1.5)
        rows, cols = _window(cy, cx, a + 8.0 * edge_width + 2.0, size)
        yy, xx = np.mgrid[rows, cols].astype(np.float32)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        mask[rows, cols] |= r <= 1.0
        profile = 1.0 / (1.0 + np.exp(-(1.0 - r) * b / edge_width))
        signal[rows, cols] += rng.uniform(0.35, 1.0) * profile * (0.75 + 0.5 * texture[rows, cols])

    distractors = np.zeros((size, size), dtype=np.float32)
    for count, (lo, hi), (s_lo, s_hi) in (
        (rng.uniform(0.5, 1.5), (0.35, 0.8), (7.0, 13.0)),  # out-of-focus cells
        (rng.uniform(3.0, 8.0), (0.6, 1.4), (0.8, 1.8)),  # debris
    ):
        for _ in range(int(round(area * count))):
            cy, cx = rng.uniform(0, size, size=2)
            sigma = rng.uniform(s_lo, s_hi)
            rows, cols = _window(cy, cx, 4.0 * sigma, size)
            yy, xx = np.mgrid[rows, cols].astype(np.float32)
            distractors[rows, cols] += rng.uniform(lo, hi) * _gaussian_spot(yy, xx, cy, cx, sigma)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    haze = 0.08 + 0.25 * _smooth_field(rng, size, size / 3.0)
    image = (signal + distractors + haze) * _illumination(rng, size, yy, xx)
    image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.5, 1.1))
    photons = rng.uniform(40.0, 120.0)
    image = rng.poisson(np.clip(image, 0, None) * photons) / photons
    image = image + rng.normal(0.0, 0.03, size=image.shape)
    image = np.clip(image / 1.4, 0.0, 1.0)
    return (image * 255.0 + 0.5).astype(np.uint8), mask, len(centres)


def _render_multiclass(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """H&E-like RGB cells: label map with cytoplasm 1 and nucleus 2 (nucleus inside its cell)."""
    s = size / 128.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cells: list[tuple[float, float]] = []
    # Clusters put cells within about one radius of each other, so many touch or overlap.
    for _ in range(int(rng.integers(2, 4))):
        cy, cx = rng.uniform(0.2, 0.8, size=2) * size
        for _ in range(int(rng.integers(2, 5))):
            oy, ox = rng.normal(0.0, 10.0 * s, size=2)
            cells.append((float(np.clip(cy + oy, 0, size - 1)), float(np.clip(cx + ox, 0, size - 1))))
    for _ in range(int(rng.integers(1, 4))):
        cells.append(tuple(float(v) for v in rng.uniform(0.05, 0.95, size=2) * size))

    labels = np.zeros((size, size), dtype=np.uint8)
    background = np.array([0.93, 0.88, 0.91]) + rng.uniform(-0.04, 0.03, size=3)
    eosin = np.array([0.88, 0.52, 0.68]) * rng.uniform(0.85, 1.1)
    haematoxylin = np.array([0.36, 0.22, 0.55]) * rng.uniform(0.8, 1.15)
    image = np.broadcast_to(background, (size, size, 3)).astype(np.float32).copy()
    texture = _smooth_field(rng, size, 3.0 * s)[..., None]

    def ellipse(cy: float, cx: float, a: float, b: float, theta: float) -> np.ndarray:
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        return np.sqrt((u / a) ** 2 + (v / b) ** 2)

    # Painter's order: a later cell covers what it overlaps, in the image and in the label map.
    for cy, cx in cells:
        a = rng.uniform(10.0, 16.0) * s
        b = a * rng.uniform(0.65, 1.0)
        theta = rng.uniform(0, np.pi)
        r_cell = ellipse(cy, cx, a, b, theta)
        offset = rng.uniform(0.0, 0.3) * b
        phi = rng.uniform(0, 2 * np.pi)
        na = a * rng.uniform(0.35, 0.5)
        nb = na * rng.uniform(0.7, 1.0)
        r_nucleus = ellipse(
            cy + offset * np.sin(phi), cx + offset * np.cos(phi), na, nb, rng.uniform(0, np.pi)
        )
        cell = r_cell <= 1.0
        nucleus = (r_nucleus <= 1.0) & cell
        labels[cell] = 1
        labels[nucleus] = 2
        edge = rng.uniform(0.8, 2.0) * s
        alpha_cell = (1.0 / (1.0 + np.exp(-(1.0 - r_cell) * b / edge)))[..., None] * rng.uniform(0.55, 0.9)
        alpha_nucleus = (1.0 / (1.0 + np.exp(-(1.0 - r_nucleus) * nb / (0.7 * edge))))[..., None]
        alpha_nucleus = alpha_nucleus * (r_cell <= 1.0 + edge / b)[..., None] * rng.uniform(0.6, 0.95)
        cyto = eosin * (0.85 + 0.3 * texture)
        image = image * (1 - alpha_cell) + cyto * alpha_cell
        image = image * (1 - alpha_nucleus) + haematoxylin * (0.8 + 0.4 * texture) * alpha_nucleus

    for _ in range(int(rng.integers(2, 7))):  # red blood cells: small red discs, not annotated
        cy, cx = rng.uniform(0, size, size=2)
        disc = (1.0 / (1.0 + np.exp(-(4.0 * s - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)) / (0.8 * s))))[
            ..., None
        ]
        image = image * (1 - 0.8 * disc) + np.array([0.85, 0.25, 0.3]) * 0.8 * disc
    for _ in range(int(rng.integers(3, 10))):  # dark debris: small purple specks, not annotated
        cy, cx = rng.uniform(0, size, size=2)
        speck = _gaussian_spot(yy, xx, cy, cx, rng.uniform(0.8, 1.8) * s)[..., None]
        image = image * (1 - 0.7 * speck) + haematoxylin * 0.7 * speck

    image = image * _illumination(rng, size, yy, xx)[..., None] ** 0.3
    image = ndimage.gaussian_filter(image, sigma=(rng.uniform(0.5, 1.1) * s,) * 2 + (0,))
    image = image + rng.normal(0.0, 0.03, size=image.shape)
    image = np.clip(image, 0.0, 1.0)
    return (image * 255.0 + 0.5).astype(np.uint8), labels, len(cells)


def render_case(
    variant: str, seed: int, index: int, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Draw one synthetic case.

    Args:
        variant: one of :data:`VARIANTS`.
        seed: dataset seed; together with ``index`` it fixes the case completely.
        index: case index within the dataset.
        image_size: side length in pixels; default 128 (1024 for ``"large"``). Object sizes scale
            with it (128 is the reference), except for ``"large"`` whose objects keep their size.

    Returns:
        ``(image, mask, num_objects)``: ``image`` is uint8 H×W (nuclei, large) or H×W×3 (lesion,
        multiclass), with array row = image row; ``mask`` is bool H×W, or for ``"multiclass"`` a
        uint8 label map (0 background, 1 cytoplasm, 2 nucleus); ``num_objects`` is how many
        nuclei, lesion lobes or cells were drawn (more than the mask's connected components when
        objects touch).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    image_size = _default_size(variant, image_size)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}.")
    rng = np.random.default_rng([int(seed), int(index), VARIANTS.index(variant)])
    render = {
        "nuclei": _render_nuclei,
        "lesion": _render_lesion,
        "multiclass": _render_multiclass,
        "large": _render_large,
    }[variant]
    return render(rng, int(image_size))


def _write_png_atomic(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _write_json_atomic(data: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


def _existing_datalist(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path}: existing datalist cannot be read ({err}); pass overwrite=True to replace it."
        ) from err
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict):
        raise ValueError(
            f"{path}: not a synthetic datalist written by litenext_monai; pass overwrite=True to replace it."
        )
    return data


def _is_complete(data: dict[str, Any], folder: Path) -> bool:
    entries = [e for split in SPLIT_KEYS for e in data.get(split, [])]
    if data.get("split_hash") != split_hash(data):
        return False
    return all((folder / e["image"]).is_file() and (folder / e["label"]).is_file() for e in entries)


def generate_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    variant: str = "nuclei",
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    num_test: int = DEFAULT_NUM_TEST,
    image_size: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset and its MONAI datalist, or reuse an identical one.

    Args:
        out_dir: folder to write into (created if needed).
        variant: ``"nuclei"`` (grey fluorescence-like), ``"lesion"`` (RGB dermoscopy-like),
            ``"multiclass"`` (RGB H&E-like cells, label maps 0/1/2) or ``"large"`` (nuclei that
            stay small on large images).
        num_train: number of training cases.
        num_val: number of validation cases.
        num_test: number of test cases.
        image_size: side length of the square images, in pixels; default 128 (1024 for ``"large"``).
        seed: dataset seed; the same arguments give byte-identical files.
        overwrite: replace a dataset in ``out_dir`` that was made with other parameters.

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: on bad arguments, or when ``out_dir`` holds a datalist made with other
            parameters (or an unreadable one) and ``overwrite`` is False.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    image_size = _default_size(variant, image_size)
    counts = {"training": int(num_train), "validation": int(num_val), "test": int(num_test)}
    if min(counts.values()) < 0 or sum(counts.values()) == 0:
        raise ValueError(f"split sizes must be non-negative and not all zero, got {counts}.")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}.")

    folder = Path(out_dir)
    datalist_path = folder / DATALIST_NAME
    parameters = {
        "variant": variant,
        "seed": int(seed),
        "image_size": int(image_size),
        "num_train": counts["training"],
        "num_val": counts["validation"],
        "num_test": counts["test"],
        "generator_version": GENERATOR_VERSION,
    }
    try:
        previous = _existing_datalist(datalist_path)
    except ValueError:
        if not overwrite:
            raise
        previous = None
    if previous is not None:
        if previous["parameters"] == parameters and _is_complete(previous, folder):
            return datalist_path
        if previous["parameters"] != parameters and not overwrite:
            raise ValueError(
                f"{datalist_path}: holds a dataset made with {previous['parameters']}, not {parameters}; "
                "choose another folder or pass overwrite=True."
            )
        # Remove only the files the old datalist names, never anything else in the folder.
        for entry in (e for split in SPLIT_KEYS for e in previous.get(split, [])):
            for key in ("image", "label"):
                (folder / entry[key]).unlink(missing_ok=True)

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict[str, Any]]] = {k: [] for k in SPLIT_KEYS}
    index = 0
    for split in SPLIT_KEYS:
        for _ in range(counts[split]):
            case_id = f"{variant}_{index:04d}"
            image, mask, num_objects = render_case(variant, seed, index, image_size)
            _write_png_atomic(image, folder / "images" / f"{case_id}.png")
            stored = mask if variant == "multiclass" else mask.astype(np.uint8) * 255
            _write_png_atomic(stored, folder / "masks" / f"{case_id}.png")
            splits[split].append(
                {
                    "image": f"images/{case_id}.png",
                    "label": f"masks/{case_id}.png",
                    "case_id": case_id,
                    "num_objects": num_objects,
                }
            )
            index += 1

    description = {
        "nuclei": "Grey fluorescence-like nuclei: touching/overlapping fuzzy ellipses, out-of-focus blobs and "
        "debris (not annotated), uneven illumination, blur, Poisson and read noise.",
        "lesion": "RGB dermoscopy-like lesions: irregular fuzzy border with touching satellite lobes, hairs, "
        "freckles, highlights (not annotated), vignette, uneven illumination, blur and noise.",
        "multiclass": "RGB H&E-like cells, label maps 0 background / 1 cytoplasm / 2 nucleus: touching and "
        "overlapping cells, each nucleus inside its cytoplasm, red blood cells and debris (not annotated), "
        "uneven illumination, blur and noise.",
        "large": "Grey fluorescence-like nuclei of absolute size (radius 5-9.5 px) on large images: small "
        "structures for comparing whole-image resizing with sliding-window patches.",
    }[variant]
    classes = CLASS_LABELS[variant]
    datalist = {
        "name": f"litenext-synthetic-{variant}",
        "description": description,
        "variant": variant,
        "seed": int(seed),
        "image_size": int(image_size),
        "num_classes": len(classes) - 1,
        "labels": {str(k): name for k, name in enumerate(classes)},
        "parameters": parameters,
        "split_hash": split_hash(splits),
        **splits,
    }
    # The datalist goes last: its presence marks a complete dataset.
    _write_json_atomic(datalist, datalist_path)
    return datalist_path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the datalist path."""
    parser = argparse.ArgumentParser(
        prog="python -m litenext_monai.data.synthetic",
        description="Write the built-in synthetic segmentation dataset and its MONAI datalist.",
    )
    parser.add_argument("out_dir", help="output folder (images/, masks/, datalist.json)")
    parser.add_argument("--variant", choices=VARIANTS, default="nuclei")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument("--num-test", type=int, default=DEFAULT_NUM_TEST)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"default {DEFAULT_IMAGE_SIZE} ({DEFAULT_LARGE_IMAGE_SIZE} for large)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a dataset made with other parameters"
    )
    args = parser.parse_args(argv)
    try:
        path = generate_synthetic_dataset(
            args.out_dir,
            variant=args.variant,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            image_size=args.image_size,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except ValueError as err:
        parser.error(str(err))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
