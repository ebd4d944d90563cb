"""Losses of LiteNeXt: Marginal Weight Loss, soft Dice, SeRP and their combination (Algorithm 2)."""

from __future__ import annotations

from litenext_monai.losses.combined import (
    DEFAULT_FOCAL_GAMMA,
    MULTICLASS_SUPERVISED_KINDS,
    SUPERVISED_KINDS,
    LiteNeXtLoss,
)
from litenext_monai.losses.dice import DEFAULT_DICE_SMOOTH, SoftDiceLoss
from litenext_monai.losses.marginal_weight import (
    DEFAULT_KERNEL_SIZE,
    DEFAULT_W_BACKGROUND,
    DEFAULT_W_MARGIN,
    DEFAULT_W_OBJECT,
    MarginalWeightLoss,
    SoftmaxMarginalWeightLoss,
    check_label_map,
    marginal_weight_map,
    multiclass_marginal_weight_map,
)
from litenext_monai.losses.serp import DEFAULT_SERP_EPS, SeRPLoss
from litenext_monai.losses.weighted_sum import WeightedSumLoss

__all__ = [
    "DEFAULT_DICE_SMOOTH",
    "DEFAULT_FOCAL_GAMMA",
    "DEFAULT_KERNEL_SIZE",
    "DEFAULT_SERP_EPS",
    "DEFAULT_W_BACKGROUND",
    "DEFAULT_W_MARGIN",
    "DEFAULT_W_OBJECT",
    "MULTICLASS_SUPERVISED_KINDS",
    "SUPERVISED_KINDS",
    "LiteNeXtLoss",
    "MarginalWeightLoss",
    "SeRPLoss",
    "SoftDiceLoss",
    "SoftmaxMarginalWeightLoss",
    "WeightedSumLoss",
    "check_label_map",
    "marginal_weight_map",
    "multiclass_marginal_weight_map",
]
