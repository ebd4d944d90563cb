"""Colonoscopy polyp sets: Kvasir-SEG, CVC-ClinicDB and CVC-ColonDB."""

from __future__ import annotations

from pathlib import Path

from ..validation import ValidationReport
from .base import Case, Layout, files_with_suffix, find_dir, image_loader, mask_loader, pair_by_stem

__all__ = ["KVASIR_SEG", "CVC_CLINICDB", "CVC_COLONDB"]

_RASTER = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"]


def _paired(image_dir: Path, mask_dir: Path, mask_kind: str, report: ValidationReport) -> list[Case]:
    images = files_with_suffix(image_dir, _RASTER)
    masks = files_with_suffix(mask_dir, _RASTER)
    return [
        Case(image.stem, image_loader(image), mask_loader(mask), str(image), [str(mask)], mask_kind=mask_kind)
        for image, mask in pair_by_stem(images, masks, lambda s: s, report)
    ]


def _subdirs(raw_dir: Path, dataset: list[str], images: list[str], masks: list[str]) -> tuple[Path, Path]:
    root = find_dir(raw_dir, dataset) or raw_dir
    image_dir, mask_dir = find_dir(root, images), find_dir(root, masks)
    if image_dir is None or mask_dir is None:
        raise FileNotFoundError(
            f"{raw_dir}: expected folders {images[0]!r} and {masks[0]!r} under {dataset[0]}"
        )
    return image_dir, mask_dir


def discover_kvasir(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """``Kvasir-SEG/images/<id>.jpg`` with ``Kvasir-SEG/masks/<id>.jpg`` (JPEG masks, thresholded)."""
    image_dir, mask_dir = _subdirs(raw_dir, ["Kvasir-SEG"], ["images"], ["masks"])
    return _paired(image_dir, mask_dir, "lossy", report)


def discover_clinicdb(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """``CVC-ClinicDB/Original/<n>.tif`` with ``CVC-ClinicDB/Ground Truth/<n>.tif`` (or the PNG copy)."""
    image_dir, mask_dir = _subdirs(
        raw_dir, ["CVC-ClinicDB", "PNG", "TIF"], ["Original"], ["Ground Truth", "GroundTruth"]
    )
    return _paired(image_dir, mask_dir, "binary", report)


def discover_colondb(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """``CVC-ColonDB/images/<n>.png`` with ``CVC-ColonDB/masks/<n>.png``."""
    image_dir, mask_dir = _subdirs(raw_dir, ["CVC-ColonDB"], ["images"], ["masks"])
    return _paired(image_dir, mask_dir, "binary", report)


KVASIR_SEG = Layout("kvasir_seg", "Kvasir-SEG polyps", discover_kvasir)
CVC_CLINICDB = Layout("cvc_clinicdb", "CVC-ClinicDB polyps", discover_clinicdb)
CVC_COLONDB = Layout("cvc_colondb", "CVC-ColonDB polyps", discover_colondb)
