"""Build the inferer a bundle or Predictor uses from its settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer

from litenext_monai.inferers.tta import FlipTTAInferer

__all__ = ["DEFAULT_SW_BATCH_SIZE", "DEFAULT_SW_OVERLAP", "INPUT_MODES", "build_inferer"]

#: ``input_mode`` values: resize the whole image to the network size, or slide a window over it.
INPUT_MODES = ("resize", "patch")
#: Fraction of the window shared by neighbouring windows.
DEFAULT_SW_OVERLAP = 0.25
#: Windows per network call.
DEFAULT_SW_BATCH_SIZE = 4
_KNOWN = {"input_mode", "image_size", "sw_batch_size", "sw_overlap", "tta"}


def _roi_size(value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"image_size must be an int or [H, W] of positive ints, got {value!r}.")
    if isinstance(value, int):
        sizes: Sequence[Any] = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        sizes = list(value)
    else:
        raise ValueError(f"image_size must be an int or [H, W] of positive ints, got {value!r}.")
    if len(sizes) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"image_size must be an int or [H, W] of positive ints, got {value!r}.")
    return int(sizes[0]), int(sizes[1])


def build_inferer(settings: Mapping[str, Any]) -> Inferer:
    """The inferer described by ``settings``.

    Keys (unknown keys are ignored, so a whole bundle/model-card settings dict may be passed):

    * ``input_mode``: ``"resize"`` (default; the image is resized to the network size beforehand,
      one forward pass: ``SimpleInferer``) or ``"patch"`` (the image is kept at its size and
      covered by windows of ``image_size``: ``SlidingWindowInferer(roi_size=image_size,
      sw_batch_size, overlap=sw_overlap, mode="gaussian")``; images smaller than the window are
      padded by MONAI and cropped back);
    * ``image_size``: window size, int or ``[H, W]`` in pixels (required for ``"patch"``);
    * ``sw_batch_size``: windows per network call (default :data:`DEFAULT_SW_BATCH_SIZE`);
    * ``sw_overlap``: overlap fraction in ``[0, 1)`` (default :data:`DEFAULT_SW_OVERLAP`);
    * ``tta``: when true, the inferer is wrapped in :class:`FlipTTAInferer` (default false).

    Raises:
        ValueError: unknown ``input_mode``, or a missing/invalid window setting (the message names it).
    """
    mode = settings.get("input_mode", "resize")
    if mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {mode!r}.")
    tta = settings.get("tta", False)
    if not isinstance(tta, bool):
        raise ValueError(f"tta must be true or false, got {tta!r}.")
    inferer: Inferer
    if mode == "resize":
        inferer = SimpleInferer()
    else:
        if "image_size" not in settings:
            raise ValueError("input_mode='patch' needs image_size (the sliding-window size).")
        roi_size = _roi_size(settings["image_size"])
        batch = settings.get("sw_batch_size", DEFAULT_SW_BATCH_SIZE)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"sw_batch_size must be a positive int, got {batch!r}.")
        overlap = settings.get("sw_overlap", DEFAULT_SW_OVERLAP)
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
            raise ValueError(f"sw_overlap must be a number in [0, 1), got {overlap!r}.")
        inferer = SlidingWindowInferer(
            roi_size=roi_size, sw_batch_size=batch, overlap=float(overlap), mode="gaussian"
        )
    return FlipTTAInferer(inferer) if tta else inferer
