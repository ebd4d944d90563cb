"""DICOM reading with pydicom: single-frame files, multi-frame files and series folders.

Pixel values go through the Modality LUT (Rescale Slope/Intercept, giving e.g. Hounsfield units);
optionally through the VOI LUT or window stored in the file; MONOCHROME1 images are inverted so
that bright always means high signal. Compressed transfer syntaxes are decoded by pydicom's
plugins (pylibjpeg with its libjpeg and openjpeg back-ends, or Pillow); what none of them can
decode is rejected with a message naming the file and the transfer syntax.

Patient identifiers never appear in messages or metadata: the patient is reduced to
:func:`patient_key`, an HMAC-SHA-256 pseudonym keyed with a per-dataset secret kept outside the
datalist (:func:`load_pseudonym_secret`).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from .normalize import apply_voi_window

__all__ = [
    "DICOM_SUFFIXES",
    "is_dicom",
    "PSEUDONYM_SECRET_ENV",
    "PSEUDONYM_SECRET_FILE",
    "load_pseudonym_secret",
    "patient_key",
    "pseudonym_secret",
    "read_dicom",
    "read_dicom_frames",
    "read_dicom_series",
    "dicom_affine",
    "slice_order",
]

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

#: Environment variable that can hold the pseudonym secret (instead of the dataset's secret file).
PSEUDONYM_SECRET_ENV = "LITENEXT_PSEUDONYM_SECRET"
#: File of the per-dataset pseudonym secret, in the prepared dataset's folder.
PSEUDONYM_SECRET_FILE = ".pseudonym_secret"
_PROCESS_SECRET = secrets.token_bytes(32)
_ACTIVE_SECRET: contextvars.ContextVar[bytes] = contextvars.ContextVar(
    "pseudonym_secret", default=_PROCESS_SECRET
)

# LPS (DICOM patient space) to RAS (NIfTI/MONAI world space).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM file: a DICOM suffix, or the ``DICM`` marker at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def load_pseudonym_secret(folder: str | os.PathLike | None, secret: str | bytes | None = None) -> bytes:
    """The per-dataset secret that keys patient pseudonyms; it never enters a datalist or a log.

    Taken, in this order, from ``secret``, the environment variable :data:`PSEUDONYM_SECRET_ENV`,
    or the file ``<folder>/.pseudonym_secret``, which is created on first use with 32 random bytes
    and mode 0600 (keep it with the dataset, do not publish it: whoever has it can test candidate
    patient IDs against the pseudonyms). With no folder and no secret, a random secret valid for
    this process only is used.

    Raises:
        ValueError: an empty secret.
    """
    given = secret if secret is not None else os.environ.get(PSEUDONYM_SECRET_ENV)
    if given is not None:
        key = given.encode("utf-8") if isinstance(given, str) else bytes(given)
        if not key:
            raise ValueError("the pseudonym secret is empty")
        return key
    if folder is None:
        return _PROCESS_SECRET
    path = Path(folder) / PSEUDONYM_SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if not key:
            raise ValueError(f"{path}: the pseudonym secret file is empty") from None
        return key
    key = secrets.token_hex(32).encode("ascii")
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key


@contextlib.contextmanager
def pseudonym_secret(key: bytes) -> Iterator[None]:
    """Within the block, :func:`patient_key` uses ``key`` (e.g. one dataset's secret)."""
    token = _ACTIVE_SECRET.set(key)
    try:
        yield
    finally:
        _ACTIVE_SECRET.reset(token)


def patient_key(ds: Dataset, secret: bytes | None = None) -> str:
    """A stable pseudonym for the patient of ``ds``: HMAC-SHA-256 of the Patient ID, never the ID itself.

    The key is ``secret``, else the one set by :func:`pseudonym_secret` (``prepare_dataset`` sets
    the dataset's), else a random key of this process, so a pseudonym cannot be reversed by
    hashing candidate IDs without the dataset's secret. Falls back to the Study Instance UID when
    Patient ID is empty, so that files of one study still group together.

    Returns:
        16 hex digits, or ``"unknown"`` when the file names neither.
    """
    source = str(ds.get("PatientID", "") or "") or str(ds.get("StudyInstanceUID", "") or "")
    if not source:
        return "unknown"
    key = secret if secret is not None else _ACTIVE_SECRET.get()
    return hmac.new(key, source.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def _read_dataset(path: Path, stop_before_pixels: bool = False) -> Dataset:
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: unreadable or truncated DICOM file ({err})") from err


def _transfer_syntax_name(ds: Dataset) -> str:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return getattr(uid, "name", str(uid)) if uid is not None else "unknown"


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError(f"{path}: DICOM file has no pixel data")
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError) as err:
        raise ValueError(
            f"{path}: cannot decode pixel data with transfer syntax {_transfer_syntax_name(ds)!r} "
            f"({err}). Decode it with a DICOM toolkit (e.g. 'dcmdjpeg' or 'gdcmconv --raw') "
            "or install a pydicom pixel-data plugin that supports it."
        ) from err
    except (ValueError, EOFError) as err:
        raise ValueError(f"{path}: pixel data is truncated or inconsistent with its header ({err})") from err


def _stored_range(ds: Dataset) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", 8) or 8)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1.0)
    return (0.0, 2.0**bits - 1.0)


def _modality_range(ds: Dataset) -> tuple[float, float]:
    """Full scale of the values after the Modality LUT."""
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return (0.0, 2.0**bits - 1.0)
    low, high = _stored_range(ds)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return (ends[0], ends[1])


def _first(value: object) -> float:
    if isinstance(value, pydicom.multival.MultiValue):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


def _grey_frame(ds: Dataset, frame: np.ndarray, voi: bool) -> tuple[np.ndarray, tuple[float, float], bool]:
    """Modality LUT, optional VOI, MONOCHROME1 inversion for one greyscale frame."""
    values = apply_modality_lut(frame, ds)
    value_range = _modality_range(ds)
    voi_applied = False
    if voi and ds.get("VOILUTSequence"):
        values = apply_voi(values, ds)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        value_range = (0.0, 2.0**bits - 1.0)
        voi_applied = True
    elif voi and "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        values = apply_voi_window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
        value_range = (0.0, 1.0)
        voi_applied = True
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        # MONOCHROME1 stores low values as white; invert within the full scale so the result
        # reads like MONOCHROME2 (and stays inside the same range).
        values = (value_range[0] + value_range[1]) - np.asarray(values, dtype=np.float64)
    return values, value_range, voi_applied


#: highdicom's pixel index convention of our voxel order: first index the row (down, "D"), second
#: the column (right, "R"). Our slice axis is ``cross(IOP[:3], IOP[3:])`` (the DICOM slice normal),
#: which after (D, R) makes a LEFT-handed index frame in highdicom's terms.
_ROW_COLUMN = ("D", "R")
_SLICE_HANDEDNESS = "LEFT_HANDED"


def _positive_spacing(ds: Dataset) -> list[float]:
    """Pixel Spacing (row, column) in mm; unit spacing when it is missing or not two positive numbers."""
    try:
        spacing = [float(v) for v in ds.get("PixelSpacing", [1.0, 1.0])]
    except (TypeError, ValueError):
        spacing = []
    if len(spacing) != 2 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        logger.warning(
            "Pixel Spacing %r is not two positive numbers; unit spacing used.", ds.get("PixelSpacing")
        )
        return [1.0, 1.0]
    return spacing


def dicom_affine(ds: Dataset, slice_step: float | None = None) -> np.ndarray:
    """4×4 affine mapping voxel ``(row, column, slice)`` to world RAS mm.

    Built by highdicom's ``create_affine_matrix_from_attributes`` (DICOM PS3.3 C.7.6.2.1.1) from
    Image Position/Orientation (Patient) and Pixel Spacing, in our index order (row first, then
    column, then slice along ``cross(row cosines, column cosines)``), then turned from DICOM's
    LPS into RAS. Identity directions and unit spacing where they are missing (e.g.
    secondary-capture images). ``slice_step`` is the signed distance between consecutive
    slices (default: Spacing Between Slices, Slice Thickness, or 1).

    Raises:
        ValueError: Image Position/Orientation (Patient) is not 3/6 numbers (message names the file).
    """
    from highdicom.spatial import create_affine_matrix_from_attributes

    if slice_step is None:
        slice_step = float(ds.get("SpacingBetweenSlices", 0) or ds.get("SliceThickness", 0) or 1.0)
    try:
        lps = create_affine_matrix_from_attributes(
            image_position=[float(v) for v in ds.get("ImagePositionPatient", [0.0, 0.0, 0.0])],
            image_orientation=[float(v) for v in ds.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])],
            pixel_spacing=_positive_spacing(ds),
            spacing_between_slices=float(slice_step),
            index_convention=_ROW_COLUMN,
            handedness=_SLICE_HANDEDNESS,
        )
    except (TypeError, ValueError) as err:
        name = getattr(ds, "filename", None) or "<dataset>"
        raise ValueError(f"{name}: cannot build the image affine: {err}") from err
    return _LPS_TO_RAS @ lps


def _slice_normal(ds: Dataset) -> np.ndarray:
    """Unit normal ``cross(row cosines, column cosines)`` of ``ds``'s image plane (LPS)."""
    from highdicom.spatial import get_normal_vector

    orientation = [float(v) for v in ds.ImageOrientationPatient]
    return get_normal_vector(orientation, index_convention=_ROW_COLUMN, handedness=_SLICE_HANDEDNESS)


def slice_order(headers: Sequence[Dataset]) -> list[int]:
    """Indices of ``headers`` (single-frame images of one series) in slice order.

    With Image Position and Orientation (Patient) in every header and one orientation, the order
    is highdicom's ``get_dataset_sort_index`` (the index form of ``highdicom.spatial.sort_datasets``):
    increasing projection of the position onto the slice normal ``cross(row cosines, column
    cosines)``. Otherwise (positions missing, orientations that differ, multi-frame headers) by
    Instance Number, else as given. Equal keys keep no particular order (NumPy's ``argsort``).
    """
    from highdicom.spatial import get_dataset_sort_index

    n = len(headers)
    if n and all("ImagePositionPatient" in h and "ImageOrientationPatient" in h for h in headers):
        try:
            return [
                int(i)
                for i in get_dataset_sort_index(
                    list(headers), index_convention=_ROW_COLUMN, handedness=_SLICE_HANDEDNESS
                )
            ]
        except (AttributeError, TypeError, ValueError):
            pass  # e.g. "Datasets do not have a consistent orientation."
    try:
        numbers = [int(h.get("InstanceNumber")) for h in headers]
    except (TypeError, ValueError):
        return list(range(n))
    return sorted(range(n), key=lambda i: (numbers[i], i))


def _frame_meta(ds: Dataset, path: Path, array: np.ndarray, value_range, voi_applied: bool) -> dict:
    return {
        "filename_or_obj": str(path),
        "spatial_shape": tuple(int(s) for s in array.shape[:2]),
        "value_range": value_range,
        "voi_applied": voi_applied,
        "affine": dicom_affine(ds),
        "modality": str(ds.get("Modality", "") or ""),
        "patient": patient_key(ds),
    }


def _colour(ds: Dataset, frames: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        frames = apply_color_lut(frames, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return frames, (0.0, 2.0**bits - 1.0)
    return frames, _stored_range(ds)


def read_dicom_frames(path: str | os.PathLike, voi: bool = False) -> list[tuple[np.ndarray, dict]]:
    """Read every frame of a single- or multi-frame DICOM file.

    Args:
        path: the file.
        voi: also apply the file's VOI LUT or window; the values then lie in ``meta["value_range"]``
            (``[0, 1]`` for a window) and ``meta["voi_applied"]`` is ``True``.

    Returns:
        One ``(array, meta)`` per frame: ``H×W`` (grey, after the Modality LUT) or ``H×W×3`` (colour,
        converted to RGB); ``meta`` adds ``frame`` (index) to the keys of :func:`read_dicom`.

    Raises:
        ValueError: unreadable, truncated, without pixels, or an undecodable compression.
    """
    path = Path(path)
    ds = _read_dataset(path)
    pixels = _pixels(ds, path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    colour = samples > 1 or str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR"
    frames = pixels if n_frames > 1 else pixels[None]
    result = []
    if colour:
        frames, value_range = _colour(ds, frames)
        for index, frame in enumerate(frames):
            meta = _frame_meta(ds, path, frame, value_range, False)
            meta["frame"] = index
            result.append((np.ascontiguousarray(frame), meta))
        return result
    for index, frame in enumerate(frames):
        values, value_range, voi_applied = _grey_frame(ds, frame, voi)
        meta = _frame_meta(ds, path, values, value_range, voi_applied)
        meta["frame"] = index
        result.append((np.ascontiguousarray(values), meta))
    return result


def read_dicom(path: str | os.PathLike, voi: bool = False) -> tuple[np.ndarray, dict]:
    """Read a single-frame DICOM image.

    Returns:
        ``(array, meta)``: ``array`` ``H×W`` (Modality LUT applied, MONOCHROME1 inverted, VOI applied
        when ``voi``) or ``H×W×3`` RGB; ``meta`` holds ``filename_or_obj``, ``spatial_shape``,
        ``value_range`` (full scale of the values), ``voi_applied``, ``affine`` (4×4, RAS),
        ``modality`` and ``patient`` (a pseudonym, see :func:`patient_key`).

    Raises:
        ValueError: unreadable file, undecodable compression, or a multi-frame file (use
            :func:`read_dicom_frames`).
    """
    frames = read_dicom_frames(path, voi=voi)
    if len(frames) != 1:
        raise ValueError(
            f"{path}: multi-frame DICOM with {len(frames)} frames; read it with read_dicom_frames "
            "or convert it with prepare_dataset"
        )
    return frames[0]


def read_dicom_series(folder: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a folder holding one DICOM series as a volume, ordered by slice position.

    Slices are sorted by :func:`slice_order` (highdicom: the projection of Image Position
    (Patient) onto the slice normal), not by file name, falling back to Instance Number when
    positions are missing or orientations differ. Files that are
    not DICOM images (DICOMDIR, notes) are ignored.

    Returns:
        ``(volume, meta)``: ``volume`` is ``H×W×S`` float32 after the Modality LUT (MONOCHROME1
        inverted); ``meta`` holds ``filename_or_obj`` (the folder), ``files`` (sorted), ``affine``
        (4×4 mapping ``(row, column, slice)`` to RAS mm), ``positions`` (mm along the normal),
        ``value_range``, ``modality`` and ``patient``.

    Raises:
        ValueError: no DICOM images, several series mixed, or slices of different sizes.
    """
    folder = Path(folder)
    headers: list[tuple[Path, Dataset]] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError):
            continue
        if "Rows" in ds and "Columns" in ds:
            headers.append((path, ds))
    if not headers:
        raise ValueError(f"{folder}: no DICOM images found")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) > 1:
        raise ValueError(f"{folder}: holds {len(series)} DICOM series; put each series in its own folder")
    first = headers[0][1]
    headers = [headers[i] for i in slice_order([ds for _, ds in headers])]
    if all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in headers):
        normal = _slice_normal(headers[0][1])
        positions = [
            float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=np.float64))) for _, ds in headers
        ]
    else:
        positions = [float(ds.get("InstanceNumber", 0) or 0) for _, ds in headers]
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in headers}
    if len(shapes) > 1:
        raise ValueError(f"{folder}: slices have different sizes {sorted(shapes)}")
    slices = []
    value_range = None
    for path, _ in headers:
        array, meta = read_dicom(path)
        if array.ndim != 2:
            raise ValueError(f"{path}: colour slices are not supported in a series volume")
        slices.append(array.astype(np.float32))
        value_range = meta["value_range"]
    step = float(np.mean(np.diff(positions))) if len(positions) > 1 else None
    sorted_first = pydicom.dcmread(str(headers[0][0]), stop_before_pixels=True)
    meta = {
        "filename_or_obj": str(folder),
        "files": [str(p) for p, _ in headers],
        "affine": dicom_affine(sorted_first, slice_step=step),
        "positions": positions,
        "value_range": value_range,
        "spatial_shape": tuple(int(s) for s in slices[0].shape),
        "modality": str(first.get("Modality", "") or ""),
        "patient": patient_key(first),
    }
    return np.stack(slices, axis=-1), meta
