"""Sunnybrook Cardiac Data (MICCAI 2009 LV challenge): cine MR DICOM plus expert contour text files.

Each ``IM-SSSS-NNNN-icontour-manual.txt`` (endocardium) or ``…-ocontour-manual.txt`` (epicardium)
lists ``x y`` pixel coordinates of one closed contour on image ``NNNN`` of the patient's cine
short-axis series; the contour is filled into a binary mask (pixel centres inside the polygon).
Two layouts give the two binary tasks of the paper: ``sunnybrook_endo`` and ``sunnybrook_epi``.

With the option ``multiclass=True`` (either layout; ``--multiclass`` on the command line) both
contours of an image are read into one label map: LV cavity (inside the endocardium) = 1,
myocardium (inside the epicardium, outside the endocardium) = 2, background = 0. Only images with
both contours are kept; an image with one of them is reported (``missing_contour``) and skipped,
because its other class would be silently labelled background.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from skimage.draw import polygon

from litenext_monai.io import read_dicom

from ..validation import ValidationReport
from .base import Case, Layout

__all__ = [
    "MULTICLASS_LABELS",
    "SUNNYBROOK_ENDO",
    "SUNNYBROOK_EPI",
    "lv_label_map",
    "rasterize_contour",
    "normalize_patient",
]

#: Class values of the multi-class reading (index = stored value).
MULTICLASS_LABELS = ("background", "left ventricle cavity", "myocardium")

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


def lv_label_map(endo: np.ndarray, epi: np.ndarray) -> np.ndarray:
    """Label map of one slice from its filled contours: cavity (endo) = 1, myocardium (epi \\ endo) = 2.

    A cavity pixel outside the epicardium (a contouring inconsistency) stays cavity.
    """
    labels = np.where(np.asarray(epi) != 0, 2, 0).astype(np.uint8)
    labels[np.asarray(endo) != 0] = 1
    return labels


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


def _lv_loader(image: Path, endo: Path, epi: Path):
    def load() -> list[np.ndarray]:
        array, _ = read_dicom(image)
        shape = array.shape[:2]
        return [lv_label_map(rasterize_contour(endo, shape), rasterize_contour(epi, shape))]

    return load


def _contour_files(raw_dir: Path, kind: str) -> tuple[dict[str, dict[int, Path]], dict[str, str]]:
    """patient → image number → contour file of ``kind`` (``"i"``/``"o"``), and patient → folder name."""
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
    return contours, folders


def _discover(raw_dir: Path, report: ValidationReport, kind: str, multiclass: bool = False) -> list[Case]:
    other: dict[str, dict[int, Path]] = {}
    if not multiclass:
        contours, folders = _contour_files(raw_dir, kind)
    else:
        # endocardium files drive the discovery, epicardium files are paired by image number
        contours, folders = _contour_files(raw_dir, "i")
        other, other_folders = _contour_files(raw_dir, "o")
        for patient, by_number in other.items():
            folders.setdefault(patient, other_folders[patient])
            for number, path in by_number.items():
                if number not in contours.get(patient, {}):
                    report.warning("missing_contour", path, "epicardium contour without endocardium: skipped")
        kind = "i"
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
            if multiclass:
                epi = other.get(patient, {}).get(number)
                if epi is None:
                    report.warning(
                        "missing_contour", contour, "endocardium contour without epicardium: skipped"
                    )
                    continue
                cases.append(
                    Case(
                        case_id=f"{patient}_{number:04d}",
                        load_image=lambda image=image: read_dicom(image),
                        load_masks=_lv_loader(image, contour, epi),
                        image_file=str(image),
                        mask_files=[str(contour), str(epi)],
                        patient=patient,
                        mask_kind="labels",
                        num_classes=2,
                    )
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


def discover_endo(raw_dir: Path, report: ValidationReport, multiclass: bool = False) -> list[Case]:
    """Endocardium (``icontour``) cases; ``multiclass=True``: cavity/myocardium label maps instead."""
    return _discover(raw_dir, report, "i", multiclass)


def discover_epi(raw_dir: Path, report: ValidationReport, multiclass: bool = False) -> list[Case]:
    """Epicardium (``ocontour``) cases; ``multiclass=True``: cavity/myocardium label maps instead."""
    return _discover(raw_dir, report, "o", multiclass)


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
