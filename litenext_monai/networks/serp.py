"""Training-only parts of Self-embedding Representation Parallel (SeRP, paper §3.1.2, spec §2.1).

None of these modules belongs to the inference network or its checkpoint: the projectors and
the EMA target encoder are discarded after training.
"""

from __future__ import annotations

import torch
from torch import nn

from litenext_monai.networks.litenext import global_pool

__all__ = [
    "ProjectorS",
    "ProjectorT",
    "SeRPNetwork",
    "DEFAULT_EMA_MOMENTUM",
    "DEFAULT_PROJECTOR_HIDDEN",
]

#: EMA momentum α per optimiser step (unspecified by the paper; spec §6).
DEFAULT_EMA_MOMENTUM = 0.99
#: ProjectorS hidden width h = 128/16, the authors' squeeze-and-excitation ratio (spec §6).
DEFAULT_PROJECTOR_HIDDEN = 8


class ProjectorS(nn.Module):
    """Main-branch projector: ``FC₂(GELU(FC₁(GAP(f) + GMP(f))))`` (squeeze-and-excitation style).

    Args:
        in_channels: channels of the stage-4 map ``e4`` (``8C`` = 128).
        hidden_channels: width ``h`` of the squeeze layer (default 8).
        bias: whether the two linear layers have biases (default False, as the authors' SE block).

    Returns (forward):
        embedding ``e_m`` shaped ``B, in_channels``.
    """

    def __init__(
        self, in_channels: int = 128, hidden_channels: int = DEFAULT_PROJECTOR_HIDDEN, bias: bool = False
    ):
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden_channels, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_channels, in_channels, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(global_pool(features).flatten(1))))


class ProjectorT(nn.Module):
    """Target-branch projector: ``GAP(f) + GMP(f)``, no parameters. Returns ``B, C``."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return global_pool(features).flatten(1)


class SeRPNetwork(nn.Module):
    """Training wrapper that adds SeRP to any network exposing its encoder features.

    One module holds the segmentation network, the main-branch :class:`ProjectorS` and the EMA
    target encoder, so a ``DistributedDataParallel`` wrapper around it all-reduces the gradients
    of the network *and* the projector. The target encoder is frozen: its parameters never require
    gradients (an optimiser built from ``requires_grad`` parameters skips it, and DDP ignores it),
    and Ignite's ``EMAHandler`` moves it towards the online encoder after every optimiser step.

    The wrapped network must provide ``forward_features(x)`` (a sequence of encoder maps, the
    deepest last) and ``forward_head(features)`` (logits), and the target encoder, called on an
    image, must return the same sequence — :class:`~litenext_monai.networks.LiteNeXt` and the
    ``ema_model`` of ``EMAHandler(network.encoder)`` do.

    Args:
        network: the segmentation network being trained.
        target_encoder: the frozen EMA copy of the network's encoder (``EMAHandler.ema_model``).
        hidden_channels: width of the projector's squeeze layer (spec default 8).

    Returns (forward):
        ``forward(x)``: logits ``B, N, H, W`` (validation, inference).
        ``forward(x, weak=w)``: ``{"pred": logits, "online_embedding": e_m, "target_embedding": e_t}``
        with ``e_m = ProjectorS(e4(x))`` and ``e_t = ProjectorT(e4_target(w))`` computed without
        autograd (stop-gradient), as :class:`~litenext_monai.losses.LiteNeXtLoss` takes them.
    """

    def __init__(
        self,
        network: nn.Module,
        target_encoder: nn.Module,
        hidden_channels: int = DEFAULT_PROJECTOR_HIDDEN,
    ) -> None:
        super().__init__()
        missing = [name for name in ("forward_features", "forward_head") if not hasattr(network, name)]
        if missing:
            raise TypeError(
                f"SeRP needs a network exposing encoder features; {type(network).__name__} has no "
                f"{' or '.join(missing)}. Train it with SeRP off (--serp False)."
            )
        channels = getattr(network, "feature_channels", None)
        if not isinstance(channels, int):
            raise TypeError(
                f"{type(network).__name__} must state the channels of its deepest encoder map as an int "
                "`feature_channels` attribute for the SeRP projector."
            )
        self.network = network
        self.projector = ProjectorS(channels, hidden_channels)
        self.target_projector = ProjectorT()
        self.target_encoder = target_encoder.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> SeRPNetwork:
        """Set the network and projector to ``mode``; the EMA target encoder always stays in eval.

        The target only follows the online encoder through EMA updates: in train mode its
        BatchNorm layers would also update their running statistics from the weak views and its
        dropout would drop, so it is kept in eval mode whatever ``mode`` is.
        """
        super().train(mode)
        self.target_encoder.eval()
        return self

    def forward(self, x: torch.Tensor, weak: torch.Tensor | None = None):
        features = self.network.forward_features(x)
        logits = self.network.forward_head(features)
        if weak is None:
            return logits
        online = self.projector(features[-1])
        with torch.no_grad():
            target = self.target_projector(self.target_encoder(weak)[-1])
        return {"pred": logits, "online_embedding": online, "target_embedding": target}
