"""Loading transforms: any supported 2D file → normalised channel-first ``MetaTensor``.

``LoadImage2D`` replaces MONAI's ``LoadImage`` + ``EnsureChannelFirst`` + intensity scaling for 2D
segmentation data. It reads PNG/JPEG/BMP/TIFF/GIF without transposing them (unlike MONAI's
``PILReader``), so a PNG image and a NIfTI mask of the same ``H×W`` array line up.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from litenext_monai.io import (
    DEFAULT_CT_WINDOW,
    DEFAULT_PERCENTILES,
    MODALITIES,
    binarize_mask,
    normalize_intensity,
    read_image,
    to_channels,
)

__all__ = ["LoadImage2D", "LoadImage2Dd", "to_meta_tensor"]


def to_meta_tensor(data: np.ndarray, meta: Mapping[str, Any], filename: str | os.PathLike) -> MetaTensor:
    """A loaded ``C×H×W`` array as a ``MetaTensor`` with what inference needs to write its output.

    The metadata keeps ``filename_or_obj``, ``spatial_shape`` (the file's ``H, W``) and the affine
    (the reader's, identity for raster files).
    """
    affine = meta.get("affine")
    affine = (
        torch.eye(4, dtype=torch.float64) if affine is None else torch.as_tensor(affine, dtype=torch.float64)
    )
    tensor_meta = {
        "filename_or_obj": str(filename),
        "spatial_shape": np.asarray(meta["spatial_shape"]),
        "original_channel_dim": 0,
        "original_affine": affine.clone(),
        "affine": affine,
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), meta=tensor_meta)


class LoadImage2D(Transform):
    """Load a 2D image or mask file as a channel-first ``float32`` ``MetaTensor``.

    Images come out ``C×H×W`` in ``[0, 1]`` (except ``modality="none"``), masks ``1×H×W`` with
    values {0, 1}. The metadata keeps ``filename_or_obj``, ``spatial_shape`` (the file's ``H, W``)
    and the affine (the file's for NIfTI and DICOM, identity for raster files), which is what
    inference needs to write a prediction with the input's size and geometry.

    Args:
        modality: intensity normalisation, one of :data:`litenext_monai.io.MODALITIES`: ``"rgb"``/
            ``"natural"`` (divide by 255 or 65535), ``"ct"`` (window), ``"mr"``/``"microscopy"``
            (percentiles), ``"none"``.
        channels: ``None`` keeps the file's channels; ``1`` converts colour to grey; ``3``
            replicates grey to RGB (so a bundle can fix ``in_channels``).
        is_label: load as a mask: any non-zero value (or any of ``label_values``) → 1.
        label_values: stored values counted as foreground in masks (``None``: all non-zero).
        window: CT window ``(centre, width)`` in HU.
        percentiles: ``(low, high)`` percentiles for MR/microscopy.
        dicom_voi: for DICOM, use the file's VOI LUT/window instead of ``modality``.

    Raises:
        ValueError: unknown modality, or a file that cannot be read (named in the message).
    """

    def __init__(
        self,
        modality: str = "rgb",
        channels: int | None = None,
        is_label: bool = False,
        label_values: Iterable[float] | None = None,
        window: Sequence[float] = DEFAULT_CT_WINDOW,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        dicom_voi: bool = False,
    ) -> None:
        if modality.lower() not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        self.modality = modality.lower()
        self.channels = channels
        self.is_label = is_label
        self.label_values = None if label_values is None else tuple(label_values)
        self.window = tuple(window)
        self.percentiles = tuple(percentiles)
        self.dicom_voi = dicom_voi

    def normalize(self, array: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
        """A read image (``H×W`` or ``H×W×C``, with its reader's meta) as the network's ``C×H×W`` float32 input."""
        if meta.get("voi_applied"):
            # The file's own VOI already chose the window; only its output scale remains.
            image = normalize_intensity(array, "rgb", value_range=meta["value_range"])
        else:
            image = normalize_intensity(
                array,
                self.modality,
                value_range=meta.get("value_range"),
                window=self.window,
                percentiles=self.percentiles,
            )
        return np.moveaxis(to_channels(image, self.channels), -1, 0).astype(np.float32)

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        array, meta = read_image(filename, as_label=self.is_label, dicom_voi=self.dicom_voi)
        if self.is_label:
            data = binarize_mask(array, self.label_values)[None].astype(np.float32)
        else:
            data = self.normalize(array, meta)
        return to_meta_tensor(data, meta, filename)


class LoadImage2Dd(MapTransform):
    """Dictionary version of :class:`LoadImage2D`: images and masks in one call.

    Args:
        keys: keys holding file paths to load.
        label_keys: the subset of ``keys`` loaded as binary masks.
        modality, channels, label_values, window, percentiles, dicom_voi: as in :class:`LoadImage2D`
            (``modality`` and ``channels`` apply to the non-label keys).
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_keys: KeysCollection = ("label",),
        modality: str = "rgb",
        channels: int | None = None,
        label_values: Iterable[float] | None = None,
        window: Sequence[float] = DEFAULT_CT_WINDOW,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        dicom_voi: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = {label_keys} if isinstance(label_keys, str) else set(label_keys)
        self.image_loader = LoadImage2D(
            modality=modality, channels=channels, window=window, percentiles=percentiles, dicom_voi=dicom_voi
        )
        self.label_loader = LoadImage2D(is_label=True, label_values=label_values)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            loader = self.label_loader if key in self.label_keys else self.image_loader
            d[key] = loader(d[key])
        return d
