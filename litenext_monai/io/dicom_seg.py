"""DICOM Segmentation (SEG) output written with highdicom.

One BINARY SEG per source series (one frame per source instance, in position order) or per
single- or multi-frame source image. The SEG references every source instance and keeps the
source's Patient, Study and Frame of Reference, so a PACS files it next to the images.

What goes into a SEG:

* one segment, described by a label and coded category and type (``segment``; defaults
  :data:`DEFAULT_SEGMENT`, SNOMED CT "Tissue"), algorithm type AUTOMATIC; or, for a label map
  of N classes, N segments described by the list ``segments`` (segment k = label value k);
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
meaning (sex spelled out), blanks the rest for highdicom, and warns naming the file and the
attribute keyword (never the value, which may identify the patient). The identity of the patient,
the study and the accession (:data:`IDENTITY_KEYWORDS`) is then set on the SEG exactly as the
source has it, valid or not: a SEG that a PACS files under another patient or study, or under
none, is worse than one that repeats the source's own VR violation (which ``dciodvfy`` then
reports, as it does for the source). Identifiers that the SEG must reference (Study, Series, SOP
Instance, Frame of Reference UIDs) cannot be repaired: such a source is rejected with an error
naming the file.

Type 2 attributes of the Patient and General Study modules (:data:`TYPE2_KEYWORDS`: Patient's
Sex and Birth Date, Study ID, Accession Number, Referring Physician, ...) that a source lacks are
present and empty in the SEG, as the standard asks, never an error.

Duplicates: :func:`deduplicate_instances` keeps one readable copy per SOP Instance UID (a
truncated duplicate never blocks its good twin) and warns about the others.
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
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import validate_value

from .atomic import atomic_write

__all__ = [
    "DEFAULT_SEGMENT",
    "IDENTITY_KEYWORDS",
    "SEG_SUFFIX",
    "TYPE2_KEYWORDS",
    "coded_concept",
    "deduplicate_instances",
    "parse_code",
    "position_order",
    "read_sop_instance_uid",
    "read_dicom_headers",
    "sanitize_source",
    "segment_descriptions",
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
#: Patient, study and accession identity: copied onto the SEG exactly as the source has it.
IDENTITY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "StudyID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
#: Type 2 attributes (Patient and General Study modules) that are present, empty if unknown, in a SEG.
TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
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


def parse_code(text: str) -> list[str]:
    """``"SCHEME:VALUE:MEANING"`` (e.g. ``"SCT:10200004:Liver"``) as ``[scheme, value, meaning]``.

    The meaning may itself contain colons (only the first two separate).

    Raises:
        ValueError: fewer than three non-empty parts (message shows the expected form).
    """
    parts = [p.strip() for p in str(text).split(":", 2)]
    if len(parts) != 3 or not all(parts):
        raise ValueError(
            f"a segment code must look like SCHEME:VALUE:MEANING (e.g. SCT:10200004:Liver), got {text!r}"
        )
    return parts


def read_sop_instance_uid(path: str | os.PathLike) -> str | None:
    """The SOP Instance UID of a DICOM file, read from its header alone; ``None`` when unreadable."""
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        uid = ds.get("SOPInstanceUID")
        return str(uid) if uid else None
    except Exception:  # noqa: BLE001 - pydicom raises many types for damaged files
        return None


def _is_complete(path: str | os.PathLike) -> bool:
    """Whether the file reads completely, pixel data included (a truncated copy does not)."""
    try:
        ds = pydicom.dcmread(str(path))
        if "PixelData" not in ds:
            return False
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and not pydicom.uid.UID(str(syntax)).is_encapsulated:
            from pydicom.pixels.utils import get_expected_length

            return len(ds.PixelData) >= get_expected_length(ds, unit="bytes")
        return len(ds.PixelData) > 0
    except Exception:  # noqa: BLE001 - unreadable means incomplete
        return False


def deduplicate_instances(
    files: Sequence[str | os.PathLike],
) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """Keep one copy per SOP Instance UID, preferring a copy that reads completely.

    Archives and exports hold the same instance twice (a re-sent study, a copy in another
    folder), sometimes one copy truncated. Files whose SOP Instance UID cannot be read are kept
    (the caller reports them). Files are only read in full where there are duplicates.

    Returns:
        ``(kept, dropped)``: the kept files in the given order, and ``(dropped, kept twin)`` pairs.
    """
    paths = [Path(f) for f in files]
    by_uid: dict[str, list[int]] = {}
    for index, path in enumerate(paths):
        uid = read_sop_instance_uid(path)
        if uid is not None:
            by_uid.setdefault(uid, []).append(index)
    drop: dict[int, int] = {}
    for indices in by_uid.values():
        if len(indices) < 2:
            continue
        keep = next((i for i in indices if _is_complete(paths[i])), indices[0])
        for i in indices:
            if i != keep:
                drop[i] = keep
    kept = [p for i, p in enumerate(paths) if i not in drop]
    dropped = [(paths[i], paths[k]) for i, k in sorted(drop.items())]
    for path, twin in dropped:
        message = (
            f"{path}: duplicate SOP Instance UID of {twin}; segmenting the readable copy {twin.name} once"
        )
        warnings.warn(message, stacklevel=2)
        logger.warning(message)
    return kept, dropped


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


def _copy_identity(source: Dataset, seg: Dataset) -> None:
    """Set the patient, study and accession identity of ``source`` on ``seg`` verbatim.

    Elements are copied as they are (no value validation, which would also quote the value in a
    warning); a missing Type 2 one stays present and empty.
    """
    if "SpecificCharacterSet" in source and "SpecificCharacterSet" not in seg:
        seg.SpecificCharacterSet = source.SpecificCharacterSet
    for keyword in IDENTITY_KEYWORDS:
        try:
            elem = source[keyword] if keyword in source else None
        except Exception:  # noqa: BLE001 - an element pydicom cannot even decode stays as highdicom set it
            continue
        if elem is None:
            if keyword in TYPE2_KEYWORDS and keyword not in seg:
                setattr(seg, keyword, "")
            continue
        seg[elem.tag] = DataElement(
            elem.tag, elem.VR, copy.deepcopy(elem.value), validation_mode=pydicom_config.IGNORE
        )


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


def _segment_description(
    number: int, described: Mapping[str, Any], algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=str(described["label"]),
        segmented_property_category=coded_concept(described["category"]),
        segmented_property_type=coded_concept(described["type"]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def segment_descriptions(segments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Complete and check a model card's ``segments`` list (one entry per class 1 .. N).

    Each entry is ``{"label": str, "category": code, "type": code}`` (codes as for
    :func:`coded_concept`); a missing ``category``/``type`` comes from :data:`DEFAULT_SEGMENT`,
    a missing ``label`` becomes ``"Class k"``.

    Raises:
        ValueError: an empty list, an entry that is not a mapping, unknown keys, repeated labels or
            malformed codes.
    """
    if isinstance(segments, (str, bytes, Mapping)) or not isinstance(segments, Sequence) or not segments:
        raise ValueError(f"segments must be a non-empty list of {{label, category, type}}, got {segments!r}")
    completed = []
    for k, entry in enumerate(segments, start=1):
        if not isinstance(entry, Mapping):
            raise ValueError(f"segments[{k - 1}] must be a mapping {{label, category, type}}, got {entry!r}")
        unknown = set(entry) - set(DEFAULT_SEGMENT)
        if unknown:
            raise ValueError(
                f"segments[{k - 1}] has unknown keys {sorted(unknown)}; expected label, category, type"
            )
        described = {**DEFAULT_SEGMENT, "label": f"Class {k}", **entry}
        for key in ("category", "type"):  # fail early on a malformed code
            coded_concept(described[key])
        completed.append(described)
    labels = [str(d["label"]) for d in completed]
    if len(set(labels)) != len(labels):
        raise ValueError(f"segment labels must differ from each other, got {labels}")
    return completed


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
    segments: Sequence[Mapping[str, Any]] | None = None,
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
        segments: several classes: one description per class (see :func:`segment_descriptions`);
            ``masks`` are then label maps whose value k (1 .. ``len(segments)``) is segment k and 0
            the background. Exclusive with ``segment``.
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
        for keyword in TYPE2_KEYWORDS:  # highdicom needs them present; the SEG has them empty
            if keyword not in fixed or fixed[keyword].value is None:
                setattr(fixed, keyword, "")
        if changed:
            kept = [k for k in changed if k in IDENTITY_KEYWORDS]
            fixed_up = [k for k in changed if k not in IDENTITY_KEYWORDS]
            parts = []
            if fixed_up:
                parts.append(f"{', '.join(fixed_up)} were repaired or left empty")
            if kept:
                parts.append(
                    f"{', '.join(kept)} (patient/study identity) were copied verbatim, invalid as they are"
                )
            message = (
                f"{_name(ds)}: non-conformant source attributes: {'; '.join(parts)} in the DICOM SEG "
                "(the input file is unchanged)"
            )
            warnings.warn(message, stacklevel=2)
            logger.warning(message)
        clean.append(fixed)

    if segments is not None and segment is not None:
        raise ValueError("give either segment (one class) or segments (several classes), not both")
    if segments is not None:
        described_list = segment_descriptions(segments)
        if not np.issubdtype(frames.dtype, np.integer):
            if not np.array_equal(frames, np.round(frames)):
                raise ValueError(f"{_name(datasets[0])}: a label map must hold integer class values")
        if frames.size and (frames.min() < 0 or frames.max() > len(described_list)):
            raise ValueError(
                f"{_name(datasets[0])}: label map values {sorted(np.unique(frames).tolist())[:8]} outside "
                f"0..{len(described_list)} ({len(described_list)} segments described)"
            )
        pixel_array = frames.astype(np.uint8 if len(described_list) < 256 else np.uint16)
    else:
        described_list = [{**DEFAULT_SEGMENT, **(segment or {})}]
        pixel_array = frames != 0
    version = algorithm_version or _package_version()
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=codes.DCM.ArtificialIntelligence,
        version=version,
        parameters={"checkpoint_sha256": checkpoint_sha256} if checkpoint_sha256 else None,
    )
    descriptions = [
        _segment_description(k, described, algorithm) for k, described in enumerate(described_list, start=1)
    ]
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
                pixel_array=pixel_array,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
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
    _copy_identity(datasets[0], seg)
    atomic_write(output_path, lambda tmp: seg.save_as(tmp, enforce_file_format=True), fsync=True)
    return output_path
