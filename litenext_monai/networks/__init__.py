"""LiteNeXt network, its blocks, and the SeRP training-only modules."""

from __future__ import annotations

from litenext_monai.networks.blocks import (
    ChannelLayerNorm,
    ConvNormAct,
    DownStage,
    LGEMixer,
    ProjectUp,
    ResidualBlock,
)
from litenext_monai.networks.cmunext import CMUNeXtXXS
from litenext_monai.networks.litenext import GenerateContext, LiteNeXt, LiteNeXtEncoder
from litenext_monai.networks.lvunet import LVUNet
from litenext_monai.networks.mininet import MiniNet
from litenext_monai.networks.serp import (
    DEFAULT_EMA_MOMENTUM,
    DEFAULT_PROJECTOR_HIDDEN,
    ProjectorS,
    ProjectorT,
    SeRPNetwork,
)
from litenext_monai.networks.utils import (
    complexity_report,
    count_macs,
    count_parameters,
    network_display_name,
    reparameterize,
)

__all__ = [
    "ChannelLayerNorm",
    "ConvNormAct",
    "DownStage",
    "LGEMixer",
    "ProjectUp",
    "ResidualBlock",
    "GenerateContext",
    "LiteNeXt",
    "LiteNeXtEncoder",
    "DEFAULT_EMA_MOMENTUM",
    "DEFAULT_PROJECTOR_HIDDEN",
    "ProjectorS",
    "ProjectorT",
    "SeRPNetwork",
    "complexity_report",
    "count_macs",
    "network_display_name",
    "count_parameters",
    "reparameterize",
    "CMUNeXtXXS",
    "LVUNet",
    "MiniNet",
]
