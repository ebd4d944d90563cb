"""Intensity normalisation per modality, mask binarisation and channel conversion.

Every function takes channel-last arrays (``H×W`` or ``H×W×C``) as the readers return them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "MODALITIES",
    "DEFAULT_CT_WINDOW",
    "DEFAULT_PERCENTILES",
    "normalize_intensity",
    "apply_voi_window",
    "binarize_mask",
    "to_channels",
]

MODALITIES = ("rgb", "natural", "ct", "mr", "microscopy", "none")
"""Accepted ``modality`` names. ``rgb`` and ``natural`` are synonyms."""

DEFAULT_CT_WINDOW = (40.0, 400.0)
"""Soft-tissue CT window ``(centre, width)`` in Hounsfield units."""

DEFAULT_PERCENTILES = (1.0, 99.0)
"""Lower and upper percentiles mapped to 0 and 1 for MR and microscopy."""

# ITU-R BT.601 luma weights, the ones PIL's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def normalize_intensity(
    array: np.ndarray,
    modality: str = "rgb",
    value_range: Sequence[float] | None = None,
    window: Sequence[float] = DEFAULT_CT_WINDOW,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Scale intensities to ``[0, 1]`` (``float32``) according to the imaging modality.

    - ``"rgb"`` / ``"natural"``: divide by the file's full scale (255 for 8-bit, 65535 for 16-bit,
      ``value_range`` when given); float input is clipped to ``[0, 1]``.
    - ``"ct"``: linear window ``(centre, width)`` in Hounsfield units, clipped.
    - ``"mr"`` / ``"microscopy"``: the ``percentiles`` of the whole image (all channels together, so
      stain colours keep their balance) map to 0 and 1, clipped.
    - ``"none"``: cast to ``float32`` only.

    Args:
        array: ``H×W`` or ``H×W×C`` intensities.
        modality: one of :data:`MODALITIES`.
        value_range: ``(low, high)`` full scale of the stored values (from the reader's meta).
        window: CT ``(centre, width)``.
        percentiles: ``(low, high)`` in percent.

    Raises:
        ValueError: unknown modality or invalid window/percentiles.
    """
    modality = modality.lower()
    data = np.asarray(array, dtype=np.float32)
    if modality in ("rgb", "natural"):
        if value_range is None:
            if np.issubdtype(np.asarray(array).dtype, np.integer):
                info = np.iinfo(np.asarray(array).dtype)
                value_range = (min(info.min, 0), info.max)
            else:
                return np.clip(data, 0.0, 1.0)
        low, high = float(value_range[0]), float(value_range[1])
        return np.clip((data - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)
    if modality == "ct":
        centre, width = float(window[0]), float(window[1])
        if width <= 0:
            raise ValueError(f"CT window width must be positive, got {width}")
        return np.clip((data - (centre - width / 2.0)) / width, 0.0, 1.0).astype(np.float32)
    if modality in ("mr", "microscopy"):
        low_p, high_p = float(percentiles[0]), float(percentiles[1])
        if not 0.0 <= low_p < high_p <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        low, high = np.percentile(data, [low_p, high_p])
        if high <= low:
            return np.zeros_like(data)
        return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)
    if modality == "none":
        return data
    raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")


def apply_voi_window(values: np.ndarray, centre: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Apply a DICOM VOI window (PS3.3 C.11.2.1.2) with output range ``[0, 1]``.

    Args:
        values: modality-LUT output (e.g. Hounsfield units).
        centre: Window Center (0028,1050).
        width: Window Width (0028,1051).
        function: VOI LUT Function (0028,1056): ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``.
    """
    x = np.asarray(values, dtype=np.float64)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"VOI window width must be positive, got {width}")
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - centre) / width))
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"VOI window width must be positive, got {width}")
        out = (x - (centre - width / 2.0)) / width
    elif function == "LINEAR":
        if width < 1:
            raise ValueError(f"VOI window width must be >= 1 for LINEAR, got {width}")
        # The standard's LINEAR window is offset by half a stored unit.
        out = (x - (centre - 0.5)) / (width - 1.0) + 0.5
    else:
        raise ValueError(f"unsupported VOI LUT Function {function!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def binarize_mask(array: np.ndarray, label_values: Iterable[float] | None = None) -> np.ndarray:
    """Turn a stored mask into an ``H×W`` ``uint8`` {0, 1} foreground mask.

    Args:
        array: ``H×W`` mask (binary, {0, 255}, instance labels, class labels) or ``H×W×C``
            (colour masks; a pixel is foreground when any channel is).
        label_values: the stored values that count as foreground. ``None``: every non-zero value,
            which also binarises instance label images.
    """
    data = np.asarray(array)
    if label_values is None:
        fg = data != 0
    else:
        fg = np.isin(data, np.asarray(list(label_values)))
    if fg.ndim == 3:
        fg = fg.any(axis=-1)
    return fg.astype(np.uint8)


def to_channels(image: np.ndarray, channels: int | None) -> np.ndarray:
    """Convert an ``H×W`` or ``H×W×C`` image to ``H×W×channels``.

    ``None`` keeps the file's channels (grey becomes ``H×W×1``); ``1`` converts RGB to grey with
    the BT.601 luma weights; ``3`` replicates grey into three channels.

    Raises:
        ValueError: a conversion that has no meaning (e.g. 2 channels, or 4 → 1).
    """
    data = image[..., None] if image.ndim == 2 else image
    have = data.shape[-1]
    if channels is None or channels == have:
        return data
    if channels == 1 and have == 3:
        return (data.astype(np.float32) @ _LUMA)[..., None]
    if channels == 3 and have == 1:
        return np.repeat(data, 3, axis=-1)
    raise ValueError(f"cannot convert an image with {have} channels to {channels} channels")
