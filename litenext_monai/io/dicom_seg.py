"""DICOM Segmentation (SEG) output written with highdicom.

One BINARY SEG per source series (one frame per source instance, in position order) or per
single- or multi-frame source image. The SEG references every source instance and keeps the
source's Patient, Study and Frame of Reference, so a PACS files it next to the images.

What goes into a SEG:

* one segment, described by a label and coded category and type (``segment``; defaults
  :data:`DEFAULT_SEGMENT`, SNOMED CT "Tissue"), algorithm type AUTOMATIC;
* the algorithm identification: name, version and family (DCM "Artificial Intelligence"),
  with the checkpoint's SHA-256 as an algorithm parameter;
* for projection images and other sources without a plane position (DX, CR, US, SC, XA): pixel
  measures with the source's Pixel Spacing (else Imager Pixel Spacing, else Nominal Scanned Pixel
  Spacing, else 1 mm) and a slice thickness (the source's, else 1 mm), and the source's Patient
  Orientation, because the SEG IOD requires both there;
* an all-background prediction gives a valid SEG that encodes every (empty) frame.

Real archives hold files with values their VR does not allow (``PatientSex`` "female", a
malformed date). highdicom refuses to copy those, so the writer checks every top-level value of a
*copy* of each source header (inputs are never modified), repairs what has an unambiguous
meaning (sex spelled out), blanks the rest, and warns naming the file and the attribute keyword
(never the value, which may identify the patient). Identifiers that the SEG must reference
(Study, Series, SOP Instance, Frame of Reference UIDs) cannot be repaired: such a source is
rejected with an error naming the file.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import validate_value

from .atomic import atomic_write

__all__ = [
    "DEFAULT_SEGMENT",
    "SEG_SUFFIX",
    "coded_concept",
    "position_order",
    "read_dicom_headers",
    "sanitize_source",
    "write_dicom_seg",
]

logger = logging.getLogger(__name__)

SEG_SUFFIX = ".dcm"

#: The segment description used when a bundle does not configure one: ``[scheme, value, meaning]``.
DEFAULT_SEGMENT: dict[str, Any] = {
    "label": "Foreground",
    "category": ["SCT", "85756007", "Tissue"],
    "type": ["SCT", "85756007", "Tissue"],
}

# UIDs the SEG copies or references: a malformed one cannot be repaired without breaking the link.
_REFERENCED_UIDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "FrameOfReferenceUID",
)
# Value representations stored as text: the ones a malformed file can get wrong.
_TEXT_VRS = frozenset(
    ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT")
)
_SEX = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M", "O": "O", "OTHER": "O"}
# Where a projection image keeps its pixel spacing, in order of preference.
_SPACING_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
_NOMINAL_MM = 1.0


def coded_concept(value: Sequence[str] | Code | str) -> Code:
    """A :class:`~pydicom.sr.coding.Code` from ``[scheme, value, meaning]``, a ``Code``, or a keyword.

    A keyword is looked up in SNOMED CT, then DCM, of :data:`pydicom.sr.codedict.codes`
    (e.g. ``"Tissue"``, ``"Lesion"``, ``"Organ"``).

    Raises:
        ValueError: an unknown keyword or a malformed triple.
    """
    if isinstance(value, Code):
        return value
    if isinstance(value, str):
        for scheme in (codes.SCT, codes.DCM):
            try:
                return getattr(scheme, value)
            except AttributeError:
                continue
        raise ValueError(f"unknown code keyword {value!r}; give [scheme, value, meaning] instead")
    items = list(value)
    if len(items) != 3 or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"a code must be [scheme, value, meaning] (three non-empty strings), got {value!r}")
    scheme, code_value, meaning = items
    return Code(value=code_value, scheme_designator=scheme, meaning=meaning)


def read_dicom_headers(files: Sequence[str | os.PathLike]) -> list[Dataset]:
    """Read the headers (no pixel data) of DICOM files.

    Raises:
        ValueError: a file that is not readable DICOM (message names it).
    """
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(str(path), stop_before_pixels=True))
        except Exception as err:  # pydicom raises many types for damaged files
            raise ValueError(f"{path}: unreadable or truncated DICOM file ({err})") from err
    return headers


def position_order(headers: Sequence[Dataset]) -> list[int]:
    """Indices of ``headers`` in slice order: :func:`litenext_monai.io.dicom.slice_order`.

    Sorted by highdicom (projection of Image Position (Patient) onto the slice normal) when every
    instance has a position and they share one orientation, else by Instance Number, else kept
    as given.
    """
    from .dicom import slice_order

    return slice_order(headers)


def _name(ds: Dataset) -> str:
    return str(getattr(ds, "filename", None) or ds.get("SOPInstanceUID", "<dataset>"))


def sanitize_source(ds: Dataset) -> tuple[Dataset, list[str]]:
    """A copy of ``ds`` whose top-level values highdicom and ``dciodvfy`` accept, plus what was changed.

    Values that break their VR's rules are blanked; ``PatientSex`` spelled out ("female") is
    mapped to its code; anything else outside ``F``/``M``/``O`` is blanked.

    Returns:
        ``(copy, keywords)``: the repaired copy and the keywords of the attributes changed.

    Raises:
        ValueError: a UID the SEG must reference is malformed (message names the file).
    """
    fixed = copy.deepcopy(ds)
    changed: list[str] = []
    for elem in list(fixed):
        if elem.VR not in _TEXT_VRS or elem.value is None or elem.value == "":
            continue
        keyword = elem.keyword or str(elem.tag)
        values = list(elem.value) if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
        try:
            for value in values:
                validate_value(elem.VR, str(value), pydicom_config.RAISE)
            valid = True
        except (ValueError, TypeError):
            valid = False
        if valid and keyword != "PatientSex":
            continue
        if keyword in _REFERENCED_UIDS:
            raise ValueError(f"{_name(ds)}: malformed {keyword}; a DICOM SEG cannot reference this instance")
        if keyword == "PatientSex":
            code = _SEX.get(str(elem.value).strip().upper(), "")
            if code == elem.value:
                continue
            elem.value = code
        else:
            elem.value = None
        changed.append(keyword)
    return fixed, changed


def _pixel_measures(ds: Dataset) -> hd.PixelMeasuresSequence:
    spacing = next((ds.get(k) for k in _SPACING_KEYWORDS if ds.get(k)), None)
    pixel_spacing = [float(v) for v in spacing] if spacing else [_NOMINAL_MM, _NOMINAL_MM]
    thickness = float(ds.get("SliceThickness") or _NOMINAL_MM)
    return hd.PixelMeasuresSequence(pixel_spacing=pixel_spacing, slice_thickness=thickness)


def _has_plane_position(ds: Dataset) -> bool:
    if "ImagePositionPatient" in ds:
        return True
    groups = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    return any("PlanePositionSequence" in g for g in list(groups)[:1] + list(shared))


def _package_version() -> str:
    try:
        return metadata.version("litenext-monai")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_dicom_seg(
    sources: Sequence[str | os.PathLike | Dataset],
    masks: np.ndarray | Sequence[np.ndarray],
    output_path: str | os.PathLike,
    *,
    segment: Mapping[str, Any] | None = None,
    algorithm_name: str = "LiteNeXt",
    algorithm_version: str | None = None,
    checkpoint_sha256: str | None = None,
    series_description: str = "LiteNeXt segmentation",
    series_number: int | None = None,
) -> Path:
    """Write a BINARY DICOM SEG of ``masks`` over ``sources``, atomically.

    Args:
        sources: the source instances (paths or pydicom datasets; pixel data is not needed), all
            of one series, in the order of ``masks``: one single-frame instance per mask, or one
            multi-frame instance with one mask per frame.
        masks: ``F×H×W`` (or a sequence of ``H×W``) masks at the source's size; non-zero is
            the segment.
        output_path: the SEG file (conventionally ``.dcm``).
        segment: ``{"label": str, "category": code, "type": code}`` where a code is
            ``[scheme, value, meaning]`` or a keyword of :data:`pydicom.sr.codedict.codes`;
            missing keys come from :data:`DEFAULT_SEGMENT`.
        algorithm_name: Algorithm Name of the segment's algorithm identification.
        algorithm_version: Algorithm Version; default: the installed ``litenext-monai`` version.
        checkpoint_sha256: recorded as the algorithm parameter ``checkpoint_sha256`` when given.
        series_description: Series Description of the SEG.
        series_number: Series Number; default: the source's plus 1000.

    Returns:
        ``output_path``.

    Raises:
        ValueError: sources unreadable, from several series, malformed referenced UIDs, or masks
            that do not match the sources (every message names the file or the shapes).
    """
    output_path = Path(output_path)
    datasets = [s if isinstance(s, Dataset) else read_dicom_headers([s])[0] for s in sources]
    if not datasets:
        raise ValueError("write_dicom_seg: no source instances")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise ValueError(
            f"{_name(datasets[0])}: the sources belong to {len(series)} series; one SEG covers one series"
        )
    frames = (
        np.stack([np.asarray(m) for m in masks]) if not isinstance(masks, np.ndarray) else np.asarray(masks)
    )
    if frames.ndim == 2:
        frames = frames[None]
    n_frames = int(datasets[0].get("NumberOfFrames", 1) or 1)
    expected = n_frames if len(datasets) == 1 else len(datasets)
    if len(datasets) > 1 and any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise ValueError(f"{_name(datasets[0])}: several multi-frame sources cannot share one SEG")
    size = (int(datasets[0].Rows), int(datasets[0].Columns))
    if frames.ndim != 3 or frames.shape[0] != expected or tuple(frames.shape[1:]) != size:
        raise ValueError(
            f"{_name(datasets[0])}: masks of shape {tuple(frames.shape)} do not fit "
            f"{expected} source frame(s) of {size[0]}x{size[1]}"
        )

    clean = []
    for ds in datasets:
        fixed, changed = sanitize_source(ds)
        if changed:
            message = (
                f"{_name(ds)}: non-conformant source attributes {', '.join(changed)} were repaired or "
                "left empty in the DICOM SEG (the input file is unchanged)"
            )
            warnings.warn(message, stacklevel=2)
            logger.warning(message)
        clean.append(fixed)

    described = {**DEFAULT_SEGMENT, **(segment or {})}
    version = algorithm_version or _package_version()
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=codes.DCM.ArtificialIntelligence,
        version=version,
        parameters={"checkpoint_sha256": checkpoint_sha256} if checkpoint_sha256 else None,
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=str(described["label"]),
        segmented_property_category=coded_concept(described["category"]),
        segmented_property_type=coded_concept(described["type"]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    projection = not _has_plane_position(clean[0])
    try:
        source_number = int(clean[0].get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        source_number = 0
    with warnings.catch_warnings():
        # An all-background prediction makes highdicom say it encodes every frame: that is intended.
        warnings.filterwarnings("ignore", message=".*omit_empty_frames.*")
        try:
            seg = hd.seg.Segmentation(
                source_images=clean,
                pixel_array=frames != 0,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=[description],
                series_instance_uid=generate_uid(),
                series_number=series_number if series_number is not None else source_number % 100000 + 1000,
                sop_instance_uid=generate_uid(),
                instance_number=1,
                manufacturer="litenext-monai",
                manufacturer_model_name=algorithm_name,
                software_versions=version,
                device_serial_number="none",
                series_description=series_description,
                pixel_measures=_pixel_measures(clean[0]) if projection else None,
            )
        except (ValueError, TypeError, AttributeError, KeyError) as err:
            raise ValueError(
                f"{_name(datasets[0])}: cannot build a DICOM SEG from this source ({err})"
            ) from err
    if projection:
        # Type 2C for images without a plane orientation: the source's value, or present and empty.
        seg.PatientOrientation = clean[0].get("PatientOrientation") or ""
    atomic_write(output_path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
    return output_path
