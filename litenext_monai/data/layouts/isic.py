"""ISIC skin-lesion segmentation: the 2016 (ISBI) Part 1 and 2018 Task 1 releases."""

from __future__ import annotations

from pathlib import Path

from ..validation import ValidationReport
from .base import Case, Layout, files_with_suffix, find_dir, image_loader, mask_loader, pair_by_stem

__all__ = ["ISIC2016", "ISIC2018"]


def _strip_segmentation(stem: str) -> str:
    return stem[: -len("_segmentation")] if stem.lower().endswith("_segmentation") else stem


def _cases(image_dir: Path, mask_dir: Path, subset: str | None, report: ValidationReport) -> list[Case]:
    images = files_with_suffix(image_dir, [".jpg", ".jpeg", ".png"])
    masks = files_with_suffix(mask_dir, [".png"])
    return [
        Case(
            case_id=image.stem,
            load_image=image_loader(image),
            load_masks=mask_loader(mask),
            image_file=str(image),
            mask_files=[str(mask)],
            subset=subset,
        )
        for image, mask in pair_by_stem(images, masks, _strip_segmentation, report)
    ]


def _require(raw_dir: Path, name: str) -> Path:
    folder = find_dir(raw_dir, [name])
    if folder is None:
        raise FileNotFoundError(f"{raw_dir}: folder {name!r} not found")
    return folder


def discover_2016(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """ISBI 2016 Part 1: official training (900) and test (379) sets."""
    cases = _cases(
        _require(raw_dir, "ISBI2016_ISIC_Part1_Training_Data"),
        _require(raw_dir, "ISBI2016_ISIC_Part1_Training_GroundTruth"),
        "train",
        report,
    )
    test_images = find_dir(raw_dir, ["ISBI2016_ISIC_Part1_Test_Data"])
    test_masks = find_dir(raw_dir, ["ISBI2016_ISIC_Part1_Test_GroundTruth"])
    if test_images is not None and test_masks is not None:
        cases += _cases(test_images, test_masks, "test", report)
    return cases


def discover_2018(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """ISIC 2018 Task 1 training set (2594 images), split 70/10/20 as in the LiteNeXt paper."""
    return _cases(
        _require(raw_dir, "ISIC2018_Task1-2_Training_Input"),
        _require(raw_dir, "ISIC2018_Task1_Training_GroundTruth"),
        None,
        report,
    )


ISIC2016 = Layout("isic2016", "ISIC 2016 (ISBI) lesion segmentation", discover_2016, split="official")
ISIC2018 = Layout("isic2018", "ISIC 2018 Task 1 lesion boundary segmentation", discover_2018)
