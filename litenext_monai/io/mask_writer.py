"""Write predicted masks with the geometry of their input images, plus optional overlays.

One mask per input: an 8-bit PNG (0/255) for raster and DICOM inputs, a NIfTI (0/1, uint8)
with the input's affine and header for NIfTI inputs. The mask must already have the input's
``H×W`` (invert any resizing first, e.g. with ``monai.transforms.Invertd``); a mismatch is an
error rather than a silent resample. Every file is written atomically.
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

from .image2d import write_image_png, write_mask_png
from .nifti import is_nifti, write_nifti
from .normalize import normalize_intensity, to_channels
from .reader import read_image

__all__ = ["overlay_rgb", "mask_output_path", "write_mask_like", "SaveMask2Dd"]

logger = logging.getLogger(__name__)


def overlay_rgb(
    image: np.ndarray, pred: np.ndarray, label: np.ndarray | None = None, alpha: float = 0.45
) -> np.ndarray:
    """Blend masks onto an image: prediction tinted red, ground-truth boundary drawn green.

    Args:
        image: ``C×H×W`` (C = 1 or 3) or ``H×W`` float image in [0, 1].
        pred: ``H×W`` binary prediction.
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
    mask = np.asarray(pred) > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.array([1.0, 0.0, 0.0], dtype=np.float32)
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


def mask_output_path(
    reference: str | os.PathLike, output_dir: str | os.PathLike, postfix: str = "_mask"
) -> Path:
    """``output_dir/<input stem><postfix>`` with ``.nii.gz`` for NIfTI inputs and ``.png`` otherwise."""
    suffix = ".nii.gz" if is_nifti(reference) else ".png"
    return Path(output_dir) / f"{_stem(reference)}{postfix}{suffix}"


def write_mask_like(
    mask: np.ndarray,
    reference: str | os.PathLike,
    output_dir: str | os.PathLike,
    postfix: str = "_mask",
    overlay_dir: str | os.PathLike | None = None,
    modality: str = "rgb",
) -> Path:
    """Write a binary ``H×W`` mask for the input file ``reference``, matching its size and geometry.

    Args:
        mask: ``H×W`` (or ``1×H×W``) array; non-zero is foreground.
        reference: the input image the mask belongs to (read for its size, affine and overlay).
        output_dir: folder of the mask.
        postfix: appended to the input's stem.
        overlay_dir: if given, also write ``<stem>_overlay.png`` (input with the mask in red) there.
        modality: intensity normalisation used to display the input in the overlay.

    Returns:
        The mask path.

    Raises:
        ValueError: the mask's ``H×W`` differs from the input's.
    """
    data = np.asarray(mask)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    binary = (data != 0).astype(np.uint8)
    image, meta = read_image(reference)
    if tuple(binary.shape) != tuple(meta["spatial_shape"]):
        raise ValueError(
            f"{reference}: mask shape {tuple(binary.shape)} differs from the image's {tuple(meta['spatial_shape'])}"
        )
    target = mask_output_path(reference, output_dir, postfix)
    if is_nifti(reference):
        header = nib.load(str(reference)).header.copy()
        header.set_data_dtype(np.uint8)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        write_nifti(binary, meta["affine"], target, header=header)
    else:
        write_mask_png(binary, target)
    if overlay_dir is not None:
        shown = normalize_intensity(image, modality, value_range=meta.get("value_range"))
        shown = np.moveaxis(to_channels(shown, None), -1, 0)
        write_image_png(overlay_rgb(shown, binary), Path(overlay_dir) / f"{_stem(reference)}_overlay.png")
    return target


class SaveMask2Dd(MapTransform):
    """Post-processing transform: write each sample's binary ``pred`` next to its input's geometry.

    The input file is taken from the ``filename_or_obj`` meta data of ``keys`` (or of
    ``image_key``). A sample that fails to write is logged with its file name and skipped, so
    one bad file never stops a batch. The written path is stored under ``f"{key}_path"``.

    Args:
        keys: binarised mask keys (``1×H×W`` at the input's size).
        output_dir: folder of the masks.
        postfix: appended to the input's stem.
        overlay_dir: folder of overlay PNGs, or None for none.
        image_key: key whose meta data names the input file when the mask's does not.
        modality: intensity normalisation for the overlay display.
        allow_missing_keys: do not raise when a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        postfix: str = "_mask",
        overlay_dir: str | os.PathLike | None = None,
        image_key: str = "image",
        modality: str = "rgb",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = output_dir
        self.postfix = postfix
        self.overlay_dir = overlay_dir
        self.image_key = image_key
        self.modality = modality

    def _source(self, d: Mapping[Hashable, object], key: Hashable) -> str | None:
        for k in (key, self.image_key):
            meta = getattr(d.get(k), "meta", None) or d.get(f"{k}_meta_dict")
            if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
                return str(meta["filename_or_obj"])
        return None

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
                d[f"{key}_path"] = str(
                    write_mask_like(
                        mask, source, self.output_dir, self.postfix, self.overlay_dir, self.modality
                    )
                )
            except (OSError, ValueError) as err:
                logger.error("could not write the mask of %s: %s", Path(source).name, err)
        return d
