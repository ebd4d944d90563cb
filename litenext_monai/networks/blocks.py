"""Building blocks of LiteNeXt (Tran et al., arXiv 2405.15779, §3.1; spec §1.1).

Every block works on 2D feature maps shaped ``B, C, H, W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChannelLayerNorm",
    "ConvNormAct",
    "LGEMixer",
    "DownStage",
    "ResidualBlock",
    "ProjectUp",
    "apply_per_pixel",
]


def apply_per_pixel(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Linear map of every pixel's channel vector: ``B, C, h, w`` → ``B, N, h, w`` (a 1×1 convolution).

    ``matrix`` is ``C, N`` (shared) or ``B, C, N`` (one per image, e.g. weighted by per-image
    attention). A channels-last input is read without a copy and the result is channels-last.
    """
    b, c, h, w = x.shape
    out = torch.matmul(x.permute(0, 2, 3, 1).reshape(b, h * w, c), matrix)
    return out.view(b, h, w, out.shape[-1]).permute(0, 3, 1, 2)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel vector of every pixel.

    Mean and biased variance are taken over channels only (eps 1e-5) with a per-channel affine,
    as the authors' code does through an NHWC view. Unlike ``GroupNorm(1, C)`` it does not pool
    over H and W, and it has no running statistics.

    Args:
        num_channels: number of channels ``C`` of the ``B, C, H, W`` input.
        eps: added to the variance.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNormAct(nn.Sequential):
    """Convolution (with bias, zero padding) → :class:`ChannelLayerNorm` → exact GELU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; odd sizes get "same" padding, even sizes none.
        stride: convolution stride.
        groups: convolution groups (``in_channels`` for a depth-wise convolution).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> None:
        # Integer padding (not padding="same") keeps the layers visible to every FLOP counter.
        padding = kernel_size // 2 if kernel_size % 2 == 1 else 0
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups),
            ChannelLayerNorm(out_channels),
            nn.GELU(),
        )


class LGEMixer(nn.Module):
    """Local-Global Extraction Mixer block (paper eqs. 1–3).

    ``x1 = LocalMixer(x)`` (full 3×3 convolution), ``x2 = FarMixer(x1) + x1`` (depth-wise k×k),
    ``y = ChannelMixer(x2 + x)`` (1×1). Each mixer is convolution → LN → GELU. Keeps channels and
    resolution; ``10c² + k²c + 9c`` parameters.

    Args:
        channels: channels ``c`` in and out.
        kernel_size: depth-wise kernel ``k`` of the FarMixer (7 in the paper).
    """

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        self.local_mixer = ConvNormAct(channels, channels, 3)
        self.far_mixer = ConvNormAct(channels, channels, kernel_size, groups=channels)
        self.channel_mixer = ConvNormAct(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.local_mixer(x)
        # In-place adds on a fresh GELU output (autograd keeps GELU's input, not its output):
        # two fewer full-size allocations per block.
        x2 = self.far_mixer(x1)
        x2 += x1
        x2 += x
        return self.channel_mixer(x2)


class DownStage(nn.Sequential):
    """2×2 max-pooling then a 1×1 widening convolution → LN → GELU (the code's stage entry, spec §1.1)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2, 2), ConvNormAct(in_channels, out_channels, 1))


class ResidualBlock(nn.Module):
    """Bottleneck: two 3×3 convolution → LN → GELU layers with an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3)
        self.conv2 = ConvNormAct(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.conv1(x))
        h += x
        return h


class ProjectUp(nn.Module):
    """1×1 convolution → LN → GELU, then bilinear upsampling by ``scale`` (``align_corners=False``).

    The projection runs before the upsampling, at the lower resolution.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        scale: integer upsampling factor; 1 skips the upsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        self.project = ConvNormAct(in_channels, out_channels, 1)
        self.out_channels = int(out_channels)
        self.scale = int(scale)

    def project_linear(
        self, x: torch.Tensor, matrix: torch.Tensor, max_tile_elements: int = 0
    ) -> torch.Tensor:
        """``apply_per_pixel(self.project(x), matrix)``: the projection then a per-pixel linear map, no upsampling.

        Every step acts on each pixel alone, so the rows may be processed in tiles whose
        projection holds at most ``max_tile_elements`` elements per image (0: no tiling). Tiling changes
        only the size of the temporaries: a D-channel map at H/2 is 8 MiB for a 256² image, which
        glibc hands back to the OS after each pass and page-faults in again on the next.
        """
        if max_tile_elements <= 0:
            return apply_per_pixel(self.project(x), matrix)
        h, w = x.shape[2], x.shape[3]
        # Per image, not per batch: an export with a free batch dimension stays valid.
        rows = max(1, max_tile_elements // max(1, self.out_channels * w))
        if rows >= h:
            return apply_per_pixel(self.project(x), matrix)
        parts = [apply_per_pixel(self.project(x[:, :, i : i + rows]), matrix) for i in range(0, h, rows)]
        return torch.cat(parts, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        if self.scale == 1:
            return x
        return F.interpolate(x, scale_factor=float(self.scale), mode="bilinear", align_corners=False)
