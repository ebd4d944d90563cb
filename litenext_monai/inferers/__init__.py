"""MONAI-style inferers shared by every inference route (bundle, Predictor, volume inference, DICOM node).

* :class:`FlipTTAInferer`: flip test-time augmentation (identity, horizontal, vertical, both),
  logits averaged after each flip is undone;
* :func:`build_inferer`: ``SimpleInferer`` (``input_mode="resize"``) or Gaussian-weighted
  ``SlidingWindowInferer`` (``input_mode="patch"``), optionally wrapped in TTA;
* :func:`logits_to_mask` / :class:`LogitsToMaskd`: the one post-processing rule, sigmoid and
  ``>= threshold`` for one class, argmax for several.
"""

from __future__ import annotations

from litenext_monai.inferers.factory import (
    DEFAULT_SW_BATCH_SIZE,
    DEFAULT_SW_OVERLAP,
    INPUT_MODES,
    build_inferer,
)
from litenext_monai.inferers.postprocess import LogitsToMask, LogitsToMaskd, logits_to_mask
from litenext_monai.inferers.tta import FLIP_DIMS, FlipTTAInferer

__all__ = [
    "DEFAULT_SW_BATCH_SIZE",
    "DEFAULT_SW_OVERLAP",
    "FLIP_DIMS",
    "INPUT_MODES",
    "FlipTTAInferer",
    "LogitsToMask",
    "LogitsToMaskd",
    "build_inferer",
    "logits_to_mask",
]
