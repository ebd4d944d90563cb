"""Sunnybrook Cardiac Data (MICCAI 2009 LV challenge): cine MR DICOM plus expert contour text files.

Each ``IM-SSSS-NNNN-icontour-manual.txt`` (endocardium) or ``…-ocontour-manual.txt`` (epicardium)
lists ``x y`` pixel coordinates of one closed contour on image ``NNNN`` of the patient's cine
short-axis series; the contour is filled into a binary mask (pixel centres inside the polygon).
Two layouts give the two binary tasks of the paper: ``sunnybrook_endo`` and ``sunnybrook_epi``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from skimage.draw import polygon

from litenext_monai.io import read_dicom

from ..validation import ValidationReport
from .base import Case, Layout

__all__ = ["SUNNYBROOK_ENDO", "SUNNYBROOK_EPI", "rasterize_contour", "normalize_patient"]

_CONTOUR = re.compile(r"^IM-(\d{4})-(\d{4})-([io])contour-manual\.txt$", re.IGNORECASE)
_DICOM = re.compile(r"^IM-(\d{4})-(\d{4})\.dcm$", re.IGNORECASE)


def normalize_patient(name: str) -> str:
    """``SC-HF-I-01`` and ``SC-HF-I-1`` both become ``SC-HF-I-1`` (contour and image folders differ)."""
    return "-".join(str(int(t)) if t.isdigit() else t.upper() for t in name.split("-"))


def rasterize_contour(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Fill the closed contour of a Sunnybrook text file (``x y`` per line, x = column) into a mask.

    Raises:
        ValueError: the file has fewer than three points or unparsable lines (named in the message).
    """
    try:
        points = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable contour file ({err})") from err
    if points.shape[0] < 3 or points.shape[1] < 2:
        raise ValueError(f"{path}: contour needs at least three 'x y' points, got shape {points.shape}")
    mask = np.zeros(shape, dtype=np.uint8)
    rr, cc = polygon(points[:, 1], points[:, 0], shape=shape)
    mask[rr, cc] = 1
    return mask


def _image_index(raw_dir: Path) -> dict[str, dict[str, dict[int, Path]]]:
    """patient → series → image number → DICOM file, from every ``IM-SSSS-NNNN.dcm`` under ``raw_dir``."""
    index: dict[str, dict[str, dict[int, Path]]] = {}
    for path in sorted(raw_dir.rglob("IM-*.dcm")):
        match = _DICOM.match(path.name)
        if not match:
            continue
        patient = normalize_patient(path.parent.name)
        index.setdefault(patient, {}).setdefault(match.group(1), {})[int(match.group(2))] = path
    return index


def _contour_loader(image: Path, contour: Path):
    def load() -> list[np.ndarray]:
        array, _ = read_dicom(image)
        return [rasterize_contour(contour, array.shape[:2])]

    return load


def _discover(raw_dir: Path, report: ValidationReport, kind: str) -> list[Case]:
    contours: dict[str, dict[int, Path]] = {}
    folders: dict[str, str] = {}
    for path in sorted(raw_dir.rglob(f"*-{kind}contour-manual.txt")):
        match = _CONTOUR.match(path.name)
        parents = [p.name for p in path.parents]
        if not match or "contours-manual" not in parents:
            continue
        folder = parents[parents.index("contours-manual") + 1]
        patient = normalize_patient(folder)
        folders[patient] = folder
        contours.setdefault(patient, {})[int(match.group(2))] = path
    if not contours:
        raise FileNotFoundError(
            f"{raw_dir}: no '<patient>/contours-manual/IRCCI-expert/IM-*-{kind}contour-manual.txt' files"
        )
    images = _image_index(raw_dir)
    cases = []
    for patient, by_number in sorted(contours.items()):
        series = images.get(patient, {})
        # The contour file names do not carry the image series; the cine short-axis series is the
        # one holding every contoured image number (the largest, if several do).
        covering = [s for s, files in series.items() if set(by_number) <= set(files)]
        chosen = max(
            covering or series,
            key=lambda s: (len(set(by_number) & set(series[s])), len(series[s])),
            default=None,
        )
        for number, contour in sorted(by_number.items()):
            image = series.get(chosen, {}).get(number) if chosen else None
            if image is None:
                report.warning(
                    "mask_without_image",
                    contour,
                    f"no DICOM image IM-*-{number:04d}.dcm for {folders[patient]}",
                )
                continue
            cases.append(
                Case(
                    case_id=f"{patient}_{number:04d}",
                    load_image=lambda image=image: read_dicom(image),
                    load_masks=_contour_loader(image, contour),
                    image_file=str(image),
                    mask_files=[str(contour)],
                    patient=patient,
                )
            )
    return cases


def discover_endo(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """Endocardium (``icontour``) cases."""
    return _discover(raw_dir, report, "i")


def discover_epi(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """Epicardium (``ocontour``) cases."""
    return _discover(raw_dir, report, "o")


SUNNYBROOK_ENDO = Layout(
    "sunnybrook_endo",
    "Sunnybrook cardiac MRI, endocardium",
    discover_endo,
    ratios=(0.8, 0.1, 0.1),
    modality="mr",
)
SUNNYBROOK_EPI = Layout(
    "sunnybrook_epi",
    "Sunnybrook cardiac MRI, epicardium",
    discover_epi,
    ratios=(0.8, 0.1, 0.1),
    modality="mr",
)
