"""Self-embedding Representation Parallel (SeRP) loss (paper §3.1.2, eq. 9)."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["DEFAULT_SERP_EPS", "SeRPLoss"]

#: Lower bound of the norm product in eq. 9 (the paper gives none; PyTorch's cosine default).
DEFAULT_SERP_EPS = 1e-8


class SeRPLoss(_Loss):
    """Negative cosine agreement between the online and target embeddings (paper eq. 9).

    ``L = 1 - <e_m, e_t> / max(||e_m|| · ||e_t||, eps)``, averaged over the batch by default.
    The target embedding is detached inside the loss (stop-gradient), so even a target that was
    computed with autograd enabled never receives a gradient.

    Args:
        eps: lower bound of the product of the two norms.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per sample, shape ``B``).
    """

    def __init__(
        self, eps: float = DEFAULT_SERP_EPS, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.eps = eps

    def forward(self, online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            online: ProjectorS output e_m, shape ``B×D``.
            target: ProjectorT output e_t, shape ``B×D``; no gradient flows into it.

        Returns:
            scalar for ``"mean"``/``"sum"``, ``B`` for ``"none"``.

        Raises:
            ValueError: if the shapes differ or are not 2-D.
        """
        if online.ndim != 2 or online.shape != target.shape:
            raise ValueError(
                f"online and target embeddings must both have shape B×D, got online {tuple(online.shape)} "
                f"and target {tuple(target.shape)}."
            )
        target = target.detach().to(online.dtype)
        dot = (online * target).sum(dim=1)
        norms = online.norm(dim=1) * target.norm(dim=1)
        loss = 1.0 - dot / norms.clamp_min(self.eps)
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss
