"""Mini-Net (Javed et al., arXiv 2405.17520): DMRes blocks in a two-level encoder-decoder.

No public code exists; the network is built from the paper's equations 1–11 as reconstructed in
the project specification (baselines spec §2). Two readings are available:

* ``variant="es2"`` (default), the reconstruction "ES-2": every k×k convolution inside a DMRes
  block is an expand-squeeze pair (depth-wise k×k with multiplier 2, then 1×1 2c→c); it has
  36,625 trainable parameters (claimed: 36,657) and exactly the claimed 1,028 BatchNorm
  statistics. The layout is a reconstruction, not the authors' network.
* ``variant="dense"``, the literal reading of the equations (every convolution dense): 129,849
  trainable parameters, 3.5× the claimed budget.
"""

from __future__ import annotations

import torch
from torch import nn

from litenext_monai.networks.cmunext import _check_input

__all__ = ["MiniNet", "DMRes", "ExpandSqueeze"]

#: Input height and width must be multiples of this (two stride-2 convolutions).
SIZE_DIVISOR = 4

VARIANTS = ("es2", "dense")


class ExpandSqueeze(nn.Module):
    """ES-2 k×k convolution c→c: depth-wise k×k with depth multiplier 2 (c→2c), then 1×1 2c→c.

    The expand step is computed as a true depth-wise convolution on the channel-duplicated input
    (output ``2i + j`` reads input ``i``, exactly a ``groups=c`` convolution c→2c with the same
    weights), because PyTorch's CPU kernels have a fast path only for multiplier 1: up to 10× faster.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(
            2 * channels, 2 * channels, kernel_size, padding=kernel_size // 2, groups=2 * channels
        )
        self.squeeze = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squeeze(self.expand(torch.repeat_interleave(x, 2, dim=1)))


def _spatial_conv(channels: int, kernel_size: int, variant: str) -> nn.Module:
    """A "same"-padded k×k convolution c→c: dense, or ES-2's :class:`ExpandSqueeze`."""
    if variant == "dense":
        return nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
    return ExpandSqueeze(channels, kernel_size)


class _ConvBN(nn.Sequential):
    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__(conv, nn.BatchNorm2d(channels))


class DMRes(nn.Module):
    """Dual multi-residual block at width ``c`` (eqs. 2–4 in the encoder, 7–9 in the decoder).

    ``S1 = ReLU(BN(f3(x)) + BN(f5(x)))``, ``S2 = ReLU(BN(conv1×1(S1)) + S1)`` and
    ``out = BN(conv1×1(x)) + BN(f3'(S2)) + BN(f5'(S2))`` with no activation after the sum, where the
    ``f_k`` are k×k convolutions (see :func:`_spatial_conv`). The decoder's stride-1 "deconvolutions"
    are implemented as ordinary convolutions: same function class, parameters and MACs, and faster.
    Parameters: ``10c² + 162c`` for ES-2, ``70c² + 18c`` dense.

    Args:
        channels: width ``c`` (input = output).
        variant: ``"es2"`` or ``"dense"``.
    """

    def __init__(self, channels: int, variant: str = "es2") -> None:
        super().__init__()
        self.branch3 = _ConvBN(_spatial_conv(channels, 3, variant), channels)
        self.branch5 = _ConvBN(_spatial_conv(channels, 5, variant), channels)
        self.mix = _ConvBN(nn.Conv2d(channels, channels, 1), channels)
        self.shortcut = _ConvBN(nn.Conv2d(channels, channels, 1), channels)
        self.out3 = _ConvBN(_spatial_conv(channels, 3, variant), channels)
        self.out5 = _ConvBN(_spatial_conv(channels, 5, variant), channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.relu(self.branch3(x) + self.branch5(x))
        s2 = self.relu(self.mix(s1) + s1)
        return self.shortcut(x) + self.out3(s2) + self.out5(s2)


def _down(channels: int, variant: str) -> nn.Module:
    """Strided 3×3 convolution c→2c (eq. 5); ES-2: depth-wise 3×3 stride 2 then 1×1 c→2c. No BN/act."""
    if variant == "dense":
        return nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1)
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels),
        nn.Conv2d(channels, 2 * channels, 1),
    )


def _up(in_channels: int, variant: str) -> nn.Module:
    """Transposed 3×3 stride-2 convolution 2c→c doubling H and W (eq. 6); ES-2 adds BN → ReLU."""
    deconv = nn.ConvTranspose2d(in_channels, in_channels // 2, 3, stride=2, padding=1, output_padding=1)
    if variant == "dense":
        return deconv
    return nn.Sequential(deconv, nn.BatchNorm2d(in_channels // 2), nn.ReLU())


class MiniNet(nn.Module):
    """Mini-Net: stem → DMRes → down → DMRes → down → DMRes bottleneck → up → DMRes (+skip) → up →
    DMRes (+skip) → ``X_out`` → 1×1 head (eqs. 1–11).

    Widths are ``C, 2C, 4C`` (8, 16, 32). Skips are additive: the encoder DMRes output at each scale
    is added to the decoder DMRes output (eq. 9). The stem (eq. 1) is a 3×3 convolution and BN with
    no activation; ``X_out`` (eq. 10) is ``ReLU(BN(conv1×1))`` to 2 channels (ES-2) or ``C`` (dense).

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported.
        in_channels: image channels (1 for grey images, 3 for RGB).
        out_channels: number of foreground logit maps (1 for binary segmentation).
        variant: ``"es2"`` (the reconstruction matching the claimed budget) or ``"dense"`` (the
            literal reading of the equations).
        base_channels: width ``C`` of the first level (8 in the paper).

    Returns (forward):
        logits ``B, out_channels, H, W``; no activation is applied (the paper's sigmoid belongs in
        the loss and at inference).

    Examples::

        >>> net = MiniNet(spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])

    Note:
        H and W must be multiples of 4 (two stride-2 convolutions, each undone by a transposed
        convolution before an additive skip); pad or resize the input, e.g. to 256×256.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        variant: str = "es2",
        base_channels: int = 8,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"MiniNet is a 2D network; spatial_dims must be 2, got {spatial_dims}.")
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("base_channels", base_channels),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.variant = variant
        c = base_channels
        self.stem = _ConvBN(nn.Conv2d(in_channels, c, 3, padding=1), c)
        self.enc1 = DMRes(c, variant)
        self.down1 = _down(c, variant)
        self.enc2 = DMRes(2 * c, variant)
        self.down2 = _down(2 * c, variant)
        self.bottleneck = DMRes(4 * c, variant)
        self.up1 = _up(4 * c, variant)
        self.dec1 = DMRes(2 * c, variant)
        self.up2 = _up(2 * c, variant)
        self.dec2 = DMRes(c, variant)
        # ES-2's 2-channel X_out reproduces the claimed BN count (a 2-class softmax original).
        x_out = 2 if variant == "es2" else c
        self.x_out = nn.Sequential(nn.Conv2d(c, x_out, 1), nn.BatchNorm2d(x_out), nn.ReLU())
        self.head = nn.Conv2d(x_out, out_channels, 1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``B, in_channels, H, W`` with H, W multiples of 4."""
        _check_input("MiniNet", x, self.in_channels, SIZE_DIVISOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self.check_input(x)
        s1 = self.enc1(self.stem(x))
        s2 = self.enc2(self.down1(s1))
        b = self.bottleneck(self.down2(s2))
        d1 = s2 + self.dec1(self.up1(b))
        d2 = s1 + self.dec2(self.up2(d1))
        return self.head(self.x_out(d2))
