"""Logits → mask: the single post-processing rule of every inference route."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = ["LogitsToMask", "LogitsToMaskd", "logits_to_mask"]


def logits_to_mask(
    logits: torch.Tensor, num_classes: int = 1, threshold: float = 0.5, channel_dim: int = 1
) -> torch.Tensor:
    """Turn network logits into a mask with one channel.

    * ``num_classes = 1``: ``sigmoid(logits) >= threshold`` as float {0, 1}: the same values as
      the bundle's ``Activationsd(sigmoid=True)`` + ``AsDiscreted(threshold=...)`` (MONAI's
      ``AsDiscrete`` thresholds with ``>=``);
    * ``num_classes = N >= 2``: ``argmax`` over the N + 1 channels as float label map ``0 .. N``
      (ties go to the lower class index, as ``torch.argmax``/``AsDiscrete(argmax=True)``).

    Args:
        logits: ``B×C×H×W`` (``channel_dim=1``) or ``C×H×W`` (``channel_dim=0``) raw network
            output, C = 1 or N + 1.
        num_classes: N foreground classes.
        threshold: probability threshold for N = 1.
        channel_dim: the channel dimension (0 for a decollated sample, 1 for a batch).

    Returns:
        float tensor of ``logits``' shape with the channel dimension reduced to 1.

    Raises:
        ValueError: the channel count does not fit ``num_classes``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
    expected = 1 if num_classes == 1 else num_classes + 1
    if logits.ndim <= channel_dim or logits.shape[channel_dim] != expected:
        raise ValueError(
            f"num_classes={num_classes} needs {expected} logit channel(s) in dimension {channel_dim}, "
            f"got shape {tuple(logits.shape)}."
        )
    if num_classes == 1:
        return (torch.sigmoid(logits) >= threshold).to(torch.float32)
    return torch.argmax(logits, dim=channel_dim, keepdim=True).to(torch.float32)


class LogitsToMask(Transform):
    """Array transform of :func:`logits_to_mask` for one channel-first sample ``C×H×W``."""

    def __init__(self, num_classes: int = 1, threshold: float = 0.5) -> None:
        self.num_classes = num_classes
        self.threshold = threshold

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits_to_mask(torch.as_tensor(logits), self.num_classes, self.threshold, channel_dim=0)


class LogitsToMaskd(MapTransform):
    """Dictionary version of :class:`LogitsToMask` (replaces ``Activationsd`` + ``AsDiscreted``).

    A ``MetaTensor`` keeps its meta data (``torch.sigmoid``/``argmax`` preserve the subclass), so
    ``Invertd`` can still undo the resizing afterwards.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int = 1,
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = LogitsToMask(num_classes, threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
