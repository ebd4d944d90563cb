"""Write predicted masks with the geometry of their input images, plus optional overlays.

Output formats (``output_format``):

* ``png``: an 8-bit PNG (0/255; label maps of N ≥ 2 classes: the class values 0 .. N);
* ``nifti``: a NIfTI (0/1, or 0 .. N for label maps, uint8) with the input's affine (and header,
  for NIfTI inputs; the DICOM affine for DICOM inputs, identity for raster inputs);
* ``dicom-seg``: a BINARY DICOM SEG (:mod:`litenext_monai.io.dicom_seg`), one segment per class;
  the slices of a DICOM series are collected and written as one multi-frame SEG when the last
  one arrives;
* ``auto``: ``dicom-seg`` for DICOM inputs, ``nifti`` for NIfTI inputs, ``png`` otherwise.

The mask must already have the input's ``H×W`` (invert any resizing first, e.g. with
``monai.transforms.Invertd``); a mismatch is an error rather than a silent resample. Every file
is written atomically, and temporaries left by an interrupted run are removed when a writer
starts on the folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from .atomic import atomic_write, remove_stale_temporaries
from .dicom import is_dicom
from .image2d import is_image_2d, write_image_png, write_mask_png
from .nifti import is_nifti, write_nifti
from .normalize import normalize_intensity, to_channels
from .reader import read_image

__all__ = [
    "OUTPUT_FORMATS",
    "OUTPUT_SUFFIXES",
    "SaveMask2Dd",
    "mask_output_path",
    "output_format_for",
    "overlay_rgb",
    "to_label_map",
    "write_label_map_png",
    "write_mask_like",
]

#: ``output_format`` values: ``auto`` picks SEG for DICOM, NIfTI for NIfTI, PNG otherwise.
OUTPUT_FORMATS = ("auto", "png", "nifti", "dicom-seg")
#: What each concrete format appends to the input's stem.
OUTPUT_SUFFIXES = {"png": "_mask.png", "nifti": "_mask.nii.gz", "dicom-seg": "_seg.dcm"}

logger = logging.getLogger(__name__)

# Overlay colours of classes 1, 2, …: red, then distinguishable hues (cycled for many classes).
_CLASS_COLOURS = np.array(
    [[1.0, 0.0, 0.0], [0.0, 0.45, 1.0], [1.0, 0.85, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.5, 0.0]],
    dtype=np.float32,
)


def to_label_map(mask: np.ndarray, num_classes: int, name: str | os.PathLike = "mask") -> np.ndarray:
    """A label map as ``uint8`` values ``0 .. num_classes``, after checking them.

    Args:
        mask: ``H×W`` (or ``1×H×W``, or ``F×H×W`` frames) array of class indices (any numeric dtype).
        num_classes: N, the largest allowed value (at most 255).
        name: what the error message calls the mask (e.g. the input file).

    Raises:
        ValueError: values that are not integers in ``0 .. N``, or N outside ``1 .. 255``.
    """
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must be in 1..255 for a uint8 label map, got {num_classes}")
    data = np.asarray(mask)
    bad = (data < 0) | (data > num_classes)
    if np.issubdtype(data.dtype, np.floating):
        bad |= data != np.round(data)
    if bad.any():
        raise ValueError(
            f"{name}: label map values {np.unique(data[bad])[:8].tolist()} are not class indices 0..{num_classes}"
        )
    return data.astype(np.uint8)


def write_label_map_png(labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``H×W`` ``uint8`` label map (values are the class indices, not scaled) as PNG, atomically."""
    data = np.ascontiguousarray(labels)
    if data.ndim != 2 or data.dtype != np.uint8:
        raise ValueError(f"{path}: a label map must be uint8 H×W, got {data.dtype} {data.shape}")
    return atomic_write(path, lambda tmp: Image.fromarray(data).save(tmp, format="PNG", compress_level=1))


def overlay_rgb(
    image: np.ndarray, pred: np.ndarray, label: np.ndarray | None = None, alpha: float = 0.45
) -> np.ndarray:
    """Blend masks onto an image: prediction tinted red, ground-truth boundary drawn green.

    A label map prediction (values ``0 .. N``) gets one tint per class: 1 red, 2 blue, 3 yellow,
    4 magenta, 5 cyan, 6 orange, then cycling.

    Args:
        image: ``C×H×W`` (C = 1 or 3) or ``H×W`` float image in [0, 1].
        pred: ``H×W`` binary prediction or label map.
        label: optional ``H×W`` binary ground truth.
        alpha: opacity of the red tint.

    Returns:
        ``H×W×3`` uint8 RGB.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = np.moveaxis(np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3], 0, -1)
    else:
        img = np.repeat(img[..., None], 3, axis=-1)
    rgb = np.clip(img, 0.0, 1.0)
    values = np.asarray(pred)
    mask = values > 0
    # any positive value of a binary prediction is class 1 (red), as before label maps existed
    classes = np.maximum(np.rint(values[mask]).astype(np.int64), 1)
    colours = _CLASS_COLOURS[(classes - 1) % len(_CLASS_COLOURS)]
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colours
    if label is not None:
        lab = np.asarray(label) > 0
        padded = np.pad(lab, 1, mode="edge")
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        rgb[lab & ~interior] = (0.0, 1.0, 0.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def output_format_for(reference: str | os.PathLike, requested: str = "auto") -> str:
    """The concrete output format (``png``, ``nifti`` or ``dicom-seg``) of one input.

    Raises:
        ValueError: ``requested`` is not one of :data:`OUTPUT_FORMATS`.
    """
    if requested not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output_format {requested!r}; expected one of {OUTPUT_FORMATS}")
    if requested != "auto":
        return requested
    if is_nifti(reference):
        return "nifti"
    if not is_image_2d(reference) and is_dicom(reference):
        return "dicom-seg"
    return "png"


def mask_output_path(
    reference: str | os.PathLike,
    output_dir: str | os.PathLike,
    postfix: str = "_mask",
    output_format: str | None = None,
) -> Path:
    """``output_dir/<input stem><postfix>`` with ``.nii.gz`` for NIfTI and ``.png`` for PNG output.

    ``output_format`` defaults to the input's own (NIfTI for NIfTI inputs, PNG otherwise).
    """
    nifti = is_nifti(reference) if output_format is None else output_format == "nifti"
    return Path(output_dir) / f"{_stem(reference)}{postfix}{'.nii.gz' if nifti else '.png'}"


def write_mask_like(
    mask: np.ndarray,
    reference: str | os.PathLike,
    output_dir: str | os.PathLike,
    postfix: str = "_mask",
    overlay_dir: str | os.PathLike | None = None,
    modality: str = "rgb",
    output_format: str | None = None,
    output_path: str | os.PathLike | None = None,
    num_classes: int = 1,
) -> Path:
    """Write a binary ``H×W`` mask (or label map) for the input file ``reference``, matching its geometry.

    Args:
        mask: ``H×W`` (or ``1×H×W``) array; non-zero is foreground (``num_classes`` = 1), or class
            indices ``0 .. N`` (``num_classes`` = N ≥ 2), written unscaled as uint8.
        reference: the input image the mask belongs to (read for its size, affine and overlay).
        output_dir: folder of the mask.
        postfix: appended to the input's stem.
        overlay_dir: if given, also write ``<stem>_overlay.png`` (input with the mask in red) there.
        modality: intensity normalisation used to display the input in the overlay.
        output_format: ``"png"`` or ``"nifti"``; default: NIfTI for NIfTI inputs, PNG otherwise.
        output_path: the mask file; default :func:`mask_output_path`.
        num_classes: N foreground classes; 1 (default) writes a binary mask.

    Returns:
        The mask path.

    Raises:
        ValueError: the mask's ``H×W`` differs from the input's, or a label map holds values
            outside ``0 .. N`` (both messages name the input file).
    """
    data = np.asarray(mask)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    binary = (data != 0).astype(np.uint8) if num_classes == 1 else to_label_map(data, num_classes, reference)
    image, meta = read_image(reference)
    if tuple(binary.shape) != tuple(meta["spatial_shape"]):
        raise ValueError(
            f"{reference}: mask shape {tuple(binary.shape)} differs from the image's {tuple(meta['spatial_shape'])}"
        )
    fmt = output_format or ("nifti" if is_nifti(reference) else "png")
    if fmt not in ("png", "nifti"):
        raise ValueError(f"write_mask_like writes png or nifti, not {fmt!r}")
    target = (
        Path(output_path)
        if output_path is not None
        else mask_output_path(reference, output_dir, postfix, fmt)
    )
    if fmt == "nifti" and is_nifti(reference):
        header = nib.load(str(reference)).header.copy()
        header.set_data_dtype(np.uint8)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        write_nifti(binary, meta["affine"], target, header=header)
    elif fmt == "nifti":
        write_nifti(binary, meta.get("affine"), target)
    elif num_classes == 1:
        write_mask_png(binary, target)
    else:
        write_label_map_png(binary, target)
    if overlay_dir is not None:
        shown = normalize_intensity(image, modality, value_range=meta.get("value_range"))
        shown = np.moveaxis(to_channels(shown, None), -1, 0)
        overlay_name = target.name.replace(".nii.gz", ".png").replace("_mask.", "_overlay.")
        if not overlay_name.endswith("_overlay.png"):
            overlay_name = f"{_stem(reference)}_overlay.png"
        write_image_png(overlay_rgb(shown, binary), Path(overlay_dir) / overlay_name)
    return target


class SaveMask2Dd(MapTransform):
    """Post-processing transform: write each sample's binary ``pred`` with its input's geometry.

    The input file is taken from the ``filename_or_obj`` meta data of ``keys`` (or of
    ``image_key``). Items listed by :func:`~litenext_monai.engines.inference_items` also carry
    ``output_name`` (a collision-free file name), ``output_format`` and, for the slices of a DICOM
    series, ``series``/``series_index``/``series_size``: the slices are collected and written as
    one DICOM SEG once the last one has arrived. A sample that fails to write is recorded in
    ``failures`` (or logged) with its file name and skipped, so one bad file never stops a batch.
    The written path is stored under ``f"{key}_path"``.

    Args:
        keys: binarised mask keys (``1×H×W`` at the input's size).
        output_dir: folder of the masks; stale temporaries of an interrupted run are removed from it.
        postfix: appended to the input's stem when the item has no ``output_name``.
        overlay_dir: folder of overlay PNGs, or None for none.
        image_key: key whose meta data names the input file when the mask's does not.
        modality: intensity normalisation for the overlay display.
        output_format: used for items without ``output_format``: one of :data:`OUTPUT_FORMATS`.
        failures: a :class:`~litenext_monai.engines.FailureReport` (anything with ``add(input,
            reason)`` and ``add_finalizer(callable)``); unfinished series are reported through it.
        seg_metadata: keyword arguments of :func:`~litenext_monai.io.dicom_seg.write_dicom_seg`
            (``segment``, ``segments``, ``algorithm_name``, ``algorithm_version``,
            ``checkpoint_sha256``).
        allow_missing_keys: do not raise when a key is missing.
        num_classes: N foreground classes. 1 (default): binary masks. N ≥ 2: ``keys`` hold label
            maps ``1×H×W`` (values ``0 .. N``, e.g. from
            :func:`~litenext_monai.inferers.logits_to_mask`), written as PNG/NIfTI label maps and
            as a SEG with one segment per class; ``seg_metadata["segments"]`` (N entries) describes
            them, default ``"Class 1" … "Class N"`` with the default category and type.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        postfix: str = "_mask",
        overlay_dir: str | os.PathLike | None = None,
        image_key: str = "image",
        modality: str = "rgb",
        output_format: str = "auto",
        failures: object | None = None,
        seg_metadata: Mapping[str, object] | None = None,
        allow_missing_keys: bool = False,
        num_classes: int = 1,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output_format {output_format!r}; expected one of {OUTPUT_FORMATS}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= 255:
            raise ValueError(f"num_classes must be an integer in 1..255, got {num_classes!r}")
        self.num_classes = num_classes
        self.output_dir = output_dir
        self.postfix = postfix
        self.overlay_dir = overlay_dir
        self.image_key = image_key
        self.modality = modality
        self.output_format = output_format
        self.failures = failures
        self.seg_metadata = dict(seg_metadata or {})
        if num_classes > 1:
            from .dicom_seg import segment_descriptions

            if self.seg_metadata.get("segment") is not None:
                raise ValueError("num_classes >= 2 takes seg_metadata['segments'] (a list), not 'segment'")
            self.seg_metadata.pop("segment", None)
            segments = self.seg_metadata.get("segments") or [{} for _ in range(num_classes)]
            segments = segment_descriptions(segments)
            if len(segments) != num_classes:
                raise ValueError(
                    f"seg_metadata['segments'] describes {len(segments)} classes, not {num_classes}"
                )
            self.seg_metadata["segments"] = segments
        elif self.seg_metadata.get("segments") is not None:
            raise ValueError("seg_metadata['segments'] needs num_classes >= 2 (one segment per class)")
        self._series: dict[str, dict[int, tuple[str, np.ndarray]]] = {}
        self._series_info: dict[str, tuple[int, str]] = {}
        for folder in (output_dir, overlay_dir):
            if folder is not None and remove_stale_temporaries(folder):
                logger.info("removed temporary files an interrupted run left in %s", folder)
        if failures is not None:
            failures.add_finalizer(self.flush)

    def _source(self, d: Mapping[Hashable, object], key: Hashable) -> str | None:
        for k in (key, self.image_key):
            meta = getattr(d.get(k), "meta", None) or d.get(f"{k}_meta_dict")
            if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
                return str(meta["filename_or_obj"])
        return None

    def _fail(self, sources: list[str], reason: str) -> None:
        for source in sources:
            if self.failures is not None:
                self.failures.add(source, reason)
            else:
                logger.error("no output for %s: %s", Path(source).name, reason)

    def _add_slice(
        self, d: Mapping[Hashable, object], source: str, mask: np.ndarray, name: str
    ) -> str | None:
        """Keep one slice of a SEG; write the SEG when its series is complete and return its path."""
        series = str(d.get("series") or "") or f"file:{source}"
        index = int(torch.as_tensor(d.get("series_index", 0)))
        size = int(torch.as_tensor(d.get("series_size", 1)))
        slices = self._series.setdefault(series, {})
        frame = mask[0] if mask.ndim == 3 else mask
        if self.num_classes > 1:
            frame = to_label_map(frame, self.num_classes, source)
        slices[index] = (source, frame)
        self._series_info[series] = (size, name)
        if len(slices) < size:
            return None
        from .dicom_seg import write_dicom_seg  # highdicom is imported only when a SEG is written

        ordered = [slices[k] for k in sorted(slices)]
        del self._series[series], self._series_info[series]
        try:
            path = write_dicom_seg(
                [s for s, _ in ordered],
                [m for _, m in ordered],
                Path(self.output_dir) / name,
                **self.seg_metadata,
            )
        except (OSError, ValueError) as err:
            self._fail([s for s, _ in ordered], f"could not write the DICOM SEG: {err}")
            return None
        return str(path)

    def flush(self) -> None:
        """Report the series whose slices did not all arrive (their SEG cannot be written)."""
        for series, slices in list(self._series.items()):
            size, _ = self._series_info.pop(series)
            self._fail(
                [s for s, _ in slices.values()],
                f"DICOM series incomplete: {len(slices)} of {size} slices were segmented, no SEG written",
            )
        self._series.clear()

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = self._source(d, key)
            if source is None:
                raise KeyError(
                    f"SaveMask2Dd: no 'filename_or_obj' meta data for {key!r} or {self.image_key!r}."
                )
            mask = torch.as_tensor(d[key]).detach().cpu().numpy()
            try:
                fmt = str(d.get("output_format") or output_format_for(source, self.output_format))
                name = d.get("output_name")
                if fmt == "dicom-seg":
                    name = str(name) if name else f"{_stem(source)}{OUTPUT_SUFFIXES['dicom-seg']}"
                    written = self._add_slice(d, source, mask, name)
                else:
                    target = Path(self.output_dir) / str(name) if name else None
                    written = str(
                        write_mask_like(
                            mask,
                            source,
                            self.output_dir,
                            self.postfix,
                            self.overlay_dir,
                            self.modality,
                            output_format=fmt,
                            output_path=target,
                            num_classes=self.num_classes,
                        )
                    )
            except (OSError, ValueError) as err:
                self._fail([source], f"could not write the mask: {err}")
                continue
            if written is not None:
                d[f"{key}_path"] = written
        return d
