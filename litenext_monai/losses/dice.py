"""Soft Dice loss as trained by the LiteNeXt authors (spec §2.3)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from monai.utils import LossReduction

__all__ = ["DEFAULT_DICE_SMOOTH", "SoftDiceLoss"]

#: Smoothing term, added to the denominator only (authors' code).
DEFAULT_DICE_SMOOTH = 1e-12


class SoftDiceLoss(DiceLoss):
    """Soft Dice loss per image and channel, ``1 - 2Σ(p·y) / (Σp + Σy + smooth)`` with ``p = sigmoid(x)``.

    This is MONAI's ``DiceLoss(sigmoid=True, smooth_nr=0, smooth_dr=smooth)`` — the same formula —
    with the authors' smoothing as the default and ``"none"`` returning ``B×N``. The sums run over
    the spatial pixels of one image and one channel; ``"mean"`` then averages over batch and
    channels (spec §2.3).

    Note:
        Empty masks. Because ``smooth`` appears only in the denominator, an image/channel whose
        mask is all zero has numerator exactly 0, so its loss is exactly 1 whatever the prediction,
        and its gradient with respect to the logits is exactly 0 (``∂/∂p [0 / (Σp + smooth)] = 0``
        because the numerator's derivative ``2y`` is also 0). Such images therefore teach nothing
        through this term; the pixel loss (MWL/BCE) still supervises them.

    Args:
        smooth: denominator smoothing term.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per image and channel, ``B×N``).
    """

    def __init__(
        self, smooth: float = DEFAULT_DICE_SMOOTH, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(
            sigmoid=True, smooth_nr=0.0, smooth_dr=smooth, reduction=LossReduction(reduction).value
        )
        self.smooth = smooth

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            input: logits, shape ``B×N×H×W`` (any number of spatial dimensions ≥ 1).
            target: binary ground truth of the same shape.

        Returns:
            scalar for ``"mean"``/``"sum"``, ``B×N`` for ``"none"``.

        Raises:
            ValueError: if the shapes differ or have fewer than three dimensions.
        """
        if input.ndim < 3 or input.shape != target.shape:
            raise ValueError(
                f"input and target must both have shape B×N×H×W, got input {tuple(input.shape)} "
                f"and target {tuple(target.shape)}."
            )
        loss = super().forward(input, target.to(input.dtype))
        if self.reduction == LossReduction.NONE.value:
            return loss.reshape(input.shape[:2])
        return loss
