"""What a dataset layout is: a way to find the cases of a published release.

A layout's ``discover(raw_dir, report, **options)`` walks the release as its publishers
distribute it and returns :class:`Case` objects; pairing problems it meets (an image without
mask, a mask without image) go into the report. Reading pixels is deferred to the loaders each
case carries, so discovery is fast and one unreadable file only costs its own case.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from litenext_monai.io import read_image

from ..validation import ValidationReport

__all__ = [
    "Case",
    "Layout",
    "image_loader",
    "mask_loader",
    "find_dir",
    "files_with_suffix",
    "natural_key",
    "pair_by_stem",
    "relative",
]


@dataclass
class Case:
    """One image and its mask(s), before conversion.

    Attributes:
        case_id: unique id, used as output file name (letters, digits, ``-``, ``_``, ``.``).
        load_image: returns ``(array, meta)`` as the readers in :mod:`litenext_monai.io` do;
            a ``meta["affine"]`` makes the output NIfTI.
        load_masks: returns the stored mask arrays (several for multi-file masks; they are merged).
        image_file: the source file, for reports.
        mask_files: the source mask files, for reports.
        patient: grouping key for the split (defaults to ``case_id``).
        subset: ``"train"``/``"test"`` when the release publishes a split.
        mask_kind: ``"binary"``, ``"instance"``, ``"lossy"`` or ``"labels"`` (see
            :func:`~litenext_monai.data.validation.check_mask_values`); ``"labels"`` masks are
            class label maps ``0 .. num_classes``, stored as they are instead of binarised.
        num_classes: number of foreground classes of a ``"labels"`` mask (1 for binary masks).
        extra: additional datalist fields (e.g. ``source``, ``slice_index``).
    """

    case_id: str
    load_image: Callable[[], tuple[np.ndarray, dict]]
    load_masks: Callable[[], list[np.ndarray]]
    image_file: str
    mask_files: Sequence[str]
    patient: str | None = None
    subset: str | None = None
    mask_kind: str = "binary"
    extra: dict = field(default_factory=dict)
    num_classes: int = 1


@dataclass(frozen=True)
class Layout:
    """A registered dataset layout.

    Attributes:
        name: the ``NAME`` given to ``prepare_dataset``.
        title: dataset name in words.
        discover: ``(raw_dir, report, **options) -> list[Case]``.
        split: ``"ratio"`` (random by ratios) or ``"official"`` (the published train/test split,
            validation drawn from train).
        ratios: default ``(training, validation, test)`` ratios.
        modality: intensity normalisation the bundle should use (:class:`LoadImage2Dd`).
    """

    name: str
    title: str
    discover: Callable[..., list[Case]]
    split: str = "ratio"
    ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    modality: str = "rgb"


def natural_key(text: str) -> list:
    """Sort key that orders ``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def find_dir(root: Path, names: Iterable[str]) -> Path | None:
    """The first folder below ``root`` (depth ≤ 3) whose name is in ``names`` (case-insensitive), else
    ``root`` itself when its own name matches, else ``None``."""
    wanted = {n.lower() for n in names}
    frontier = [root]
    for _ in range(3):
        found = []
        for folder in frontier:
            for child in sorted(folder.iterdir(), key=lambda p: p.name):
                if child.is_dir():
                    if child.name.lower() in wanted:
                        return child
                    found.append(child)
        frontier = found
    return root if root.name.lower() in wanted else None


def files_with_suffix(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files directly in ``folder`` whose suffix is in ``suffixes`` (any case), naturally sorted."""
    wanted = {s.lower() for s in suffixes}
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in wanted and not p.name.startswith(".")
        ),
        key=lambda p: natural_key(p.name),
    )


def image_loader(path: Path) -> Callable[[], tuple[np.ndarray, dict]]:
    """Deferred :func:`~litenext_monai.io.read_image` of an image file."""
    return lambda: read_image(path)


def mask_loader(*paths: Path) -> Callable[[], list[np.ndarray]]:
    """Deferred reading of one or more mask files (palette indices kept)."""
    return lambda: [read_image(p, as_label=True)[0] for p in paths]


def pair_by_stem(
    images: Sequence[Path],
    masks: Sequence[Path],
    mask_stem: Callable[[str], str],
    report: ValidationReport,
) -> list[tuple[Path, Path]]:
    """Pair images with masks whose stem maps to the image stem; report the unpaired files.

    Args:
        images: image files.
        masks: mask files.
        mask_stem: maps a mask file stem to the stem of its image (e.g. drops ``"_segmentation"``).
        report: receives ``image_without_mask`` / ``mask_without_image`` warnings.
    """
    by_stem = {}
    for mask in masks:
        by_stem.setdefault(mask_stem(mask.stem), mask)
    pairs = []
    seen = set()
    for image in images:
        mask = by_stem.get(image.stem)
        if mask is None:
            report.warning("image_without_mask", image, "no matching mask file")
            continue
        seen.add(image.stem)
        pairs.append((image, mask))
    for stem, mask in sorted(by_stem.items()):
        if stem not in seen:
            report.warning("mask_without_image", mask, "no matching image file")
    return pairs


def relative(path: str | os.PathLike, root: Path) -> str:
    """``path`` relative to ``root`` when below it (for readable reports)."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
