"""Training-only parts of Self-embedding Representation Parallel (SeRP, paper §3.1.2, spec §2.1).

None of these modules belongs to the inference network or its checkpoint: the projectors and
the EMA target encoder are discarded after training.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from litenext_monai.networks.litenext import global_pool

__all__ = ["ProjectorS", "ProjectorT", "EMATargetEncoder", "DEFAULT_EMA_MOMENTUM", "DEFAULT_PROJECTOR_HIDDEN"]

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


class EMATargetEncoder(nn.Module):
    """Target encoder F_φ: a frozen copy of the main encoder updated by exponential moving average.

    ``φ ← α·φ + (1 − α)·θ`` after every optimiser step (:meth:`update`). Its parameters never
    require gradients and :meth:`forward` runs without autograd (stop-gradient).

    Args:
        encoder: the main encoder F_θ; it is deep-copied, so φ starts equal to θ.
        momentum: α in ``[0, 1]`` (default 0.99 per step). 1 freezes the target; 0 copies θ.
    """

    def __init__(self, encoder: nn.Module, momentum: float = DEFAULT_EMA_MOMENTUM) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
        self.momentum = float(momentum)
        self.encoder = copy.deepcopy(encoder)
        self.encoder.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """Move every target parameter towards ``online``'s by ``(1 − α)·(θ − φ)``; copy buffers."""
        target_params = dict(self.encoder.named_parameters())
        online_params = dict(online.named_parameters())
        if target_params.keys() != online_params.keys():
            raise ValueError("the online encoder does not have the target encoder's parameters.")
        for name, target in target_params.items():
            target.lerp_(online_params[name].detach().to(target.dtype), 1.0 - self.momentum)
        for target_buf, online_buf in zip(self.encoder.buffers(), online.buffers()):
            target_buf.copy_(online_buf)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)
