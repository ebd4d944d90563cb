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
        # Set by fold_norm (deploy form only); not saved in the state_dict, rebuilt from the weights.
        self.norm_folded = False
        self.fold_eps = 1e-5
        self.register_buffer("fold_scale", torch.empty(0), persistent=False)
        self.register_buffer("fold_weight", torch.empty(0), persistent=False)

    @torch.no_grad()
    def fold_norm(self) -> bool:
        """Fold the LayerNorm into the 1×1 projection when the input is narrower than the output.

        With ``y = W x + b`` (``D`` outputs, ``c`` inputs) and ``x̃ = [x; 1]``, the centred output is
        linear in ``x̃``: ``y − mean_D(y) = A x̃`` with ``A = [W − 1 w̄ᵀ, b − b̄]``, and its variance is
        ``‖A x̃‖²/D = ‖R x̃‖²/D`` for the ``(c+1)×(c+1)`` triangular factor ``R`` of ``A = Q R``
        (``Q`` has orthonormal columns). So, exactly,
        ``LN(y) = diag(γ) A (r x̃) + β`` with ``r = (‖R x̃‖²/D + ε)^(−1/2)``: the ``D``-channel map
        is written once, already normalised, and the LayerNorm's mean and variance passes over
        ``D`` channels become a ``(c+1)``-channel product. Used by the deploy form for the GCF
        values at H/2..H/8 (``c`` = 16, 32, 64 against ``D`` = 128); a no-op when ``c + 1 ≥ D``.

        Returns:
            whether the projection was folded.
        """
        conv, norm = self.project[0], self.project[1]
        c_in, d = conv.in_channels, conv.out_channels
        if self.norm_folded or c_in + 1 >= d or not isinstance(norm, ChannelLayerNorm):
            return self.norm_folded
        weight = conv.weight.detach().flatten(1).double()
        bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(d)
        a = torch.cat([weight - weight.mean(0, keepdim=True), (bias - bias.mean())[:, None]], dim=1)
        r = torch.linalg.qr(a, mode="r").R  # (c+1)×(c+1)
        gamma = norm.weight.detach().double() if norm.weight is not None else a.new_ones(d)
        beta = norm.bias.detach().double() if norm.bias is not None else a.new_zeros(d)
        dtype = conv.weight.dtype
        self.fold_scale = (r / d**0.5).t().contiguous().to(dtype)  # x̃ @ fold_scale: ‖·‖² is the variance
        self.fold_weight = torch.cat([(gamma[:, None] * a).t(), beta[None]]).contiguous().to(dtype)  # (c+2)×D
        self.fold_eps = float(norm.eps)
        self.norm_folded = True
        return True

    def _folded_rows(self, x: torch.Tensor) -> torch.Tensor:
        """GELU(LN(conv(x))) of every pixel as rows ``B, h·w, D`` through the folded factors."""
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)
        rows = torch.cat([rows, rows.new_ones(b * h * w, 1)], dim=1)
        spread = torch.mm(rows, self.fold_scale)
        rstd = torch.rsqrt(spread.square().sum(dim=1, keepdim=True) + self.fold_eps)
        # [r·x̃, 1] @ [diag(γ)A; β]: the β row rides in the GEMM, so the D-channel map is written
        # once and read once by GELU (a bias add or addmm would make one more pass over it).
        scaled = torch.cat([rows * rstd, rows.new_ones(b * h * w, 1)], dim=1)
        normed = torch.mm(scaled, self.fold_weight)
        return F.gelu(normed).view(b, h * w, normed.shape[1])

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
            return self._project_linear(x, matrix)
        h, w = x.shape[2], x.shape[3]
        # Per image, not per batch: an export with a free batch dimension stays valid.
        rows = max(1, max_tile_elements // max(1, self.out_channels * w))
        if rows >= h:
            return self._project_linear(x, matrix)
        parts = [self._project_linear(x[:, :, i : i + rows], matrix) for i in range(0, h, rows)]
        return torch.cat(parts, dim=2)

    def _project_linear(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        if not self.norm_folded:
            return apply_per_pixel(self.project(x), matrix)
        b, _, h, w = x.shape
        out = torch.matmul(self._folded_rows(x), matrix)
        return out.view(b, h, w, out.shape[-1]).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        if self.scale == 1:
            return x
        return F.interpolate(x, scale_factor=float(self.scale), mode="bilinear", align_corners=False)
