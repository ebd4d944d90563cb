"""The LiteNeXt training objective (paper Algorithm 2) and the pixel-loss ablations of Table 9."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, FocalLoss
from torch import nn
from torch.nn.modules.loss import _Loss

from litenext_monai.losses.dice import DEFAULT_DICE_SMOOTH, SoftDiceLoss
from litenext_monai.losses.marginal_weight import (
    DEFAULT_KERNEL_SIZE,
    DEFAULT_W_BACKGROUND,
    DEFAULT_W_MARGIN,
    DEFAULT_W_OBJECT,
    MarginalWeightLoss,
    SoftmaxMarginalWeightLoss,
    check_label_map,
)
from litenext_monai.losses.serp import SeRPLoss

__all__ = ["DEFAULT_FOCAL_GAMMA", "MULTICLASS_SUPERVISED_KINDS", "SUPERVISED_KINDS", "LiteNeXtLoss"]

#: Pixel-loss choices: the paper's MWL and the ablations of its Table 9.
SUPERVISED_KINDS = ("mwl", "bce", "wbce", "bbce", "focal", "none")
#: Pixel-loss choices for ``num_classes >= 2`` (the Table 9 ablations are binary sigmoid losses).
MULTICLASS_SUPERVISED_KINDS = ("mwl", "none")
#: Focusing parameter of the focal-loss ablation (Lin et al. default).
DEFAULT_FOCAL_GAMMA = 2.0


class _BalancedBCEWithLogitsLoss(_Loss):
    """BCE-with-logits with class-balancing weights drawn from the batch itself.

    With β the fraction of negative pixels in the whole batch, positive pixels are weighted by β
    and negative pixels by 1 − β; the weighted per-pixel losses are averaged over all pixels.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(input.dtype)
        beta = 1.0 - target.mean()
        weight = (target * beta + (1.0 - target) * (1.0 - beta)).detach()
        return nn.functional.binary_cross_entropy_with_logits(input, target, weight=weight)


def _pixel_loss(
    kind: str,
    kernel_size: int,
    w_margin: float,
    w_object: float,
    w_background: float,
    pos_weight: float | None,
    focal_gamma: float,
) -> nn.Module:
    if kind == "mwl":
        return MarginalWeightLoss(kernel_size, w_margin, w_object, w_background)
    if kind == "bce":
        return nn.BCEWithLogitsLoss()
    if kind == "wbce":
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(pos_weight)))
    if kind == "bbce":
        return _BalancedBCEWithLogitsLoss()
    return FocalLoss(gamma=focal_gamma, use_softmax=False)


class LiteNeXtLoss(nn.Module):
    """Total LiteNeXt loss ``L = w_px·L_pixel + w_dice·L_Dice + w_serp·L_SeRP`` (paper Algorithm 2).

    The paper uses the Marginal Weight Loss as the pixel term and unit weights. The pixel term can
    be swapped for the ablations of the paper's Table 9:

    * ``"mwl"``: :class:`MarginalWeightLoss` (uses ``weight_map`` when given, else computes it);
    * ``"bce"``: plain BCE-with-logits;
    * ``"wbce"``: BCE-with-logits with a fixed positive-class weight ``pos_weight``;
    * ``"bbce"``: balanced BCE, positives weighted by β (fraction of negative pixels in the
      batch) and negatives by 1 − β;
    * ``"focal"``: MONAI ``FocalLoss(gamma=focal_gamma)`` on sigmoid probabilities;
    * ``"none"``: no pixel term.

    A component whose weight is 0 is neither built nor computed. The components are submodules
    (``pixel_loss``, ``dice_loss``, ``ce_loss``, ``serp_loss``; ``None`` when inactive).

    Several classes (``num_classes`` = N ≥ 2): the network outputs N + 1 logit channels (channel 0
    the background) and the target is a label map ``B×1×H×W`` with values ``0 .. N``. The total is
    ``w_px·L_MWL + w_dice·L_Dice + w_ce·L_CE + w_serp·L_SeRP`` where

    * ``L_MWL`` is :class:`SoftmaxMarginalWeightLoss` (one-vs-rest MWL per foreground class,
      averaged over the N classes); ``supervised`` may only be ``"mwl"`` or ``"none"``;
    * ``L_Dice + L_CE`` is MONAI's ``DiceCELoss(softmax=True, to_onehot_y=True,
      include_background=False, smooth_nr=0, smooth_dr=1e-12)`` split into its two terms: soft
      Dice per image and foreground class (the background channel is left out, as the binary Dice
      scores only the object), and cross-entropy over all N + 1 channels;
    * SeRP is unchanged (it compares encoder embeddings, not class outputs).

    ``num_classes = 1`` is the binary sigmoid objective above, unchanged.

    Args:
        supervised: pixel-loss kind, one of :data:`SUPERVISED_KINDS`.
        supervised_weight: weight of the pixel term.
        dice_weight: weight of :class:`SoftDiceLoss`.
        serp_weight: weight of :class:`SeRPLoss`.
        kernel_size: MWL structuring-element side (odd, pixels).
        w_margin: MWL weight of the boundary band.
        w_object: MWL weight of the object interior.
        w_background: MWL weight of the far background.
        pos_weight: positive-class weight, required (> 0) for ``"wbce"`` and rejected otherwise.
        focal_gamma: focusing parameter γ for ``"focal"``.
        num_classes: N foreground classes; 1 (default) is the binary sigmoid objective.
        ce_weight: weight of the cross-entropy term, only for ``num_classes >= 2`` (default 1).

    Raises:
        ValueError: on an unknown kind, a negative weight, a missing or misplaced ``pos_weight``,
            a binary-only kind or a ``ce_weight`` with the wrong ``num_classes``, or when every
            component is disabled.
    """

    def __init__(
        self,
        supervised: str = "mwl",
        supervised_weight: float = 1.0,
        dice_weight: float = 1.0,
        serp_weight: float = 1.0,
        kernel_size: int = DEFAULT_KERNEL_SIZE,
        w_margin: float = DEFAULT_W_MARGIN,
        w_object: float = DEFAULT_W_OBJECT,
        w_background: float = DEFAULT_W_BACKGROUND,
        pos_weight: float | None = None,
        focal_gamma: float = DEFAULT_FOCAL_GAMMA,
        num_classes: int = 1,
        ce_weight: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
        if supervised not in SUPERVISED_KINDS:
            raise ValueError(f"supervised must be one of {SUPERVISED_KINDS}, got {supervised!r}.")
        if num_classes > 1 and supervised not in MULTICLASS_SUPERVISED_KINDS:
            raise ValueError(
                f"supervised={supervised!r} is a binary sigmoid loss; with num_classes={num_classes} use one of "
                f"{MULTICLASS_SUPERVISED_KINDS} (Dice and cross-entropy are always part of the objective)."
            )
        if num_classes == 1 and ce_weight is not None:
            raise ValueError("ce_weight applies only to num_classes >= 2 (softmax outputs).")
        ce_weight = (1.0 if ce_weight is None else float(ce_weight)) if num_classes > 1 else 0.0
        for name, value in (
            ("supervised_weight", supervised_weight),
            ("dice_weight", dice_weight),
            ("serp_weight", serp_weight),
            ("ce_weight", ce_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if supervised == "wbce" and (pos_weight is None or pos_weight <= 0):
            raise ValueError(f"supervised='wbce' needs a positive float pos_weight, got {pos_weight!r}.")
        if supervised != "wbce" and pos_weight is not None:
            raise ValueError(f"pos_weight applies only to supervised='wbce', not {supervised!r}.")
        self.num_classes = num_classes
        self.supervised = supervised
        self.supervised_weight = supervised_weight if supervised != "none" else 0.0
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.serp_weight = serp_weight
        if self.supervised_weight == 0 and dice_weight == 0 and serp_weight == 0 and ce_weight == 0:
            raise ValueError("LiteNeXtLoss needs at least one component with a positive weight.")
        self.pixel_loss: nn.Module | None = None
        self.dice_loss: nn.Module | None = None
        self.ce_loss: nn.Module | None = None
        if num_classes == 1:
            if self.supervised_weight > 0:
                self.pixel_loss = _pixel_loss(
                    supervised, kernel_size, w_margin, w_object, w_background, pos_weight, focal_gamma
                )
            self.dice_loss = SoftDiceLoss() if dice_weight > 0 else None
        else:
            if self.supervised_weight > 0:
                self.pixel_loss = SoftmaxMarginalWeightLoss(kernel_size, w_margin, w_object, w_background)
            if dice_weight > 0:
                self.dice_loss = DiceLoss(
                    include_background=False,
                    to_onehot_y=True,
                    softmax=True,
                    smooth_nr=0.0,
                    smooth_dr=DEFAULT_DICE_SMOOTH,
                )
            self.ce_loss = nn.CrossEntropyLoss() if ce_weight > 0 else None
        self.serp_loss = SeRPLoss() if serp_weight > 0 else None

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        weight_map: torch.Tensor | None = None,
        online_embedding: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the total loss and its components.

        SeRP is skipped (and absent from the result) when both embeddings are ``None``, which is
        how validation calls this loss. ``weight_map`` is used only by ``"mwl"`` and ignored by
        the other kinds, so a pipeline may always provide it.

        Args:
            input: segmentation logits, shape ``B×C×H×W`` (C = 1 for the binary objective, N + 1
                for ``num_classes`` = N ≥ 2).
            target: binary ground truth ``B×C×H×W`` (binary), or label map ``B×1×H×W`` with values
                ``0 .. N`` (N ≥ 2).
            weight_map: optional precomputed MWL weight map, shape ``B×C×H×W`` (binary) or the
                per-class maps ``B×N×H×W`` (N ≥ 2, ``MarginalWeightMapd(num_classes=N)``).
            online_embedding: ProjectorS output ``B×D``.
            target_embedding: ProjectorT output ``B×D`` (stop-gradient is applied).

        Returns:
            dict of scalars: ``"loss"`` (weighted total) and the unweighted value of every
            computed component, keyed by the pixel kind (``"mwl"``, ``"bce"``, ``"wbce"``,
            ``"bbce"``, ``"focal"``), ``"dice"``, ``"ce"`` (N ≥ 2 only) and ``"serp"``.

        Raises:
            ValueError: on mismatched shapes, label values outside ``0 .. N``, when only one
                embedding is given, or when no component could be computed.
        """
        if self.num_classes == 1:
            if input.ndim != 4 or input.shape != target.shape:
                raise ValueError(
                    f"input and target must both have shape B×N×H×W, got input {tuple(input.shape)} "
                    f"and target {tuple(target.shape)}."
                )
        else:
            channels = self.num_classes + 1
            if input.ndim != 4 or input.shape[1] != channels:
                raise ValueError(
                    f"num_classes={self.num_classes} needs logits B×{channels}×H×W, got {tuple(input.shape)}."
                )
            if tuple(target.shape) != (input.shape[0], 1, *input.shape[2:]):
                raise ValueError(
                    f"num_classes={self.num_classes} needs a label map target B×1×H×W matching input "
                    f"{tuple(input.shape)}, got {tuple(target.shape)}."
                )
            target = check_label_map(target, self.num_classes, "target")
        if (online_embedding is None) != (target_embedding is None):
            raise ValueError("online_embedding and target_embedding must be given together.")
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if self.pixel_loss is not None:
            if self.supervised == "mwl":
                value = self.pixel_loss(input, target, weight_map)
            else:
                value = self.pixel_loss(input, target.to(input.dtype))
            terms[self.supervised] = (self.supervised_weight, value)
        if self.dice_loss is not None:
            terms["dice"] = (self.dice_weight, self.dice_loss(input, target))
        if self.ce_loss is not None:
            terms["ce"] = (self.ce_weight, self.ce_loss(input, target[:, 0]))
        if self.serp_loss is not None and online_embedding is not None:
            terms["serp"] = (self.serp_weight, self.serp_loss(online_embedding, target_embedding))
        if not terms:
            raise ValueError(
                "No loss component was computed: SeRP is the only active term but no embeddings were given."
            )
        total = sum(weight * value for weight, value in terms.values())
        return {"loss": total, **{name: value for name, (_, value) in terms.items()}}
