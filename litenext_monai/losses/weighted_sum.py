"""A weighted sum of segmentation losses, for recipes that add several MONAI losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.loss import _Loss

__all__ = ["WeightedSumLoss"]


class WeightedSumLoss(_Loss):
    """``Σ wᵢ · lossᵢ(input, target)`` over losses that each return a scalar.

    MONAI combines pairs (``DiceCELoss``, ``DiceFocalLoss``) but not arbitrary terms; Mini-Net's
    recipe is soft Dice + BCE + soft Jaccard, i.e. ``DiceCELoss`` plus ``DiceLoss(jaccard=True)``.

    Args:
        losses: the terms, each called as ``loss(input, target)``.
        weights: one weight per term (default: all 1).

    Raises:
        ValueError: no losses, or a weight count that does not match.
    """

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not losses:
            raise ValueError("WeightedSumLoss needs at least one loss.")
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ValueError(f"got {len(losses)} losses but {len(weights)} weights.")
        self.losses = nn.ModuleList(losses)
        self.weights = weights

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(input, target) for w, loss in zip(self.weights, self.losses))
