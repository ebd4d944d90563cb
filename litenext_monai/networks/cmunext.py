"""CMUNeXt-XXS ("Mobile-CMUNeXt", Carvalho & Véstias 2025): a 40.8k-parameter CMUNeXt variant.

Built from the project specification (baselines spec §1.2): the model the authors counted for their
"0.04M / 0.47 G MACs" claim — widths (8, 10, 12, 16, 24), block lengths (3, 1, 1, 1, 2), depth-wise
kernels (3, 3, 7, 7, 9), Hardswish, two depth-wise convolutions per block, additive skips and a
grouped (g = 2) 3×3 fusion convolution. With the defaults the network has 40,837 parameters and
468,164,608 thop-convention MACs for a 1×3×256×256 input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["CMUNeXtXXS", "MobileCMUNeXtBlock", "SkipFusion"]

#: Input height and width must be multiples of this (four 2×2 max-poolings).
SIZE_DIVISOR = 16

_ACTIVATIONS: dict[str, type[nn.Module]] = {"hardswish": nn.Hardswish, "relu": nn.ReLU, "gelu": nn.GELU}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"act must be one of {sorted(_ACTIVATIONS)}, got {name!r}.") from None


class _ConvBNAct(nn.Sequential):
    """3×3 convolution (bias) → BatchNorm → activation: stem, stage transitions and up-convolutions."""

    def __init__(self, in_channels: int, out_channels: int, act: str) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            _activation(act),
        )


class _ConvActBN(nn.Sequential):
    """Convolution (bias) → activation → BatchNorm: the CMUNeXt order inside blocks and fusions."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, act: str, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups),
            _activation(act),
            nn.BatchNorm2d(out_channels),
        )


class _Residual(nn.Module):
    """``x + fn(x)``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class MobileCMUNeXtBlock(nn.Sequential):
    """One Mobile-CMUNeXt block at width ``c`` (spec §1.2), shape-preserving.

    Two residual depth-wise steps ``x ← x + BN(σ(DW_k(x)))`` (the Mobile-CMUNeXt change: the
    original CMUNeXt has one), then the inverted bottleneck ``BN(σ(PW_{4c→c}(BN(σ(PW_{c→4c}(x))))))``
    without a residual around it. Parameters: ``8c² + 2c·k² + 21c``.

    Args:
        channels: width ``c``.
        kernel_size: depth-wise kernel ``k`` (odd; "same" padding ``k // 2``).
        act: activation σ.
    """

    def __init__(self, channels: int, kernel_size: int, act: str = "hardswish") -> None:
        super().__init__(
            _Residual(_ConvActBN(channels, channels, kernel_size, act, groups=channels)),
            _Residual(_ConvActBN(channels, channels, kernel_size, act, groups=channels)),
            _ConvActBN(channels, 4 * channels, 1, act),
            _ConvActBN(4 * channels, channels, 1, act),
        )


class SkipFusion(nn.Sequential):
    """Skip fusion of the summed encoder and decoder maps at width ``c`` (spec §1.2).

    3×3 convolution with ``groups`` groups, then 1×1 ``c→4c`` and ``4c→c``, each followed by σ and BN.
    The authors add the two maps before this module, so ``groups=2`` just halves the 3×3 cost.
    """

    def __init__(self, channels: int, act: str = "hardswish", groups: int = 2) -> None:
        super().__init__(
            _ConvActBN(channels, channels, 3, act, groups=groups),
            _ConvActBN(channels, 4 * channels, 1, act),
            _ConvActBN(4 * channels, channels, 1, act),
        )


class _DecoderStep(nn.Module):
    """Bilinear ×2 (``align_corners=False``) and a 3×3 ConvBNAct to the narrower width, **add** the
    encoder map, then :class:`SkipFusion`."""

    def __init__(self, in_channels: int, out_channels: int, act: str, fusion_groups: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            _ConvBNAct(in_channels, out_channels, act),
        )
        self.fusion = SkipFusion(out_channels, act, fusion_groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.up(x) + skip)


class CMUNeXtXXS(nn.Module):
    """CMUNeXt-XXS / Mobile-CMUNeXt: five-stage U-shaped network of large-kernel depth-wise blocks.

    Stem ConvBNAct → stage 1 at full resolution → four (MaxPool 2×2, blocks, transition) stages →
    four (bilinear ×2 up-convolution, **add** the encoder map, :class:`SkipFusion`) decoder steps →
    1×1 head. A stage runs its blocks at its input width, then a 3×3 ConvBNAct transition to its
    own width.

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported.
        in_channels: image channels (1 for grey images, 3 for RGB).
        out_channels: number of foreground logit maps (1 for binary segmentation).
        channels: stage widths ``C1..C5``; (8, 10, 12, 16, 24) for XXS.
        depths: blocks per stage ``L1..L5``; (3, 1, 1, 1, 2) is the counted model (the paper's
            Table II says (3, 1, 1, 2, 3), which gives 48,393 parameters).
        kernel_sizes: depth-wise kernel of each stage.
        act: ``"hardswish"`` (the counted code), ``"relu"`` (what the authors later trained) or
            ``"gelu"`` (original CMUNeXt); the choice changes neither parameters nor MACs.
        fusion_groups: groups of the fusion 3×3 convolution (2 counted; the later code uses 1).

    Returns (forward):
        logits ``B, out_channels, H, W``; no activation is applied.

    Examples::

        >>> net = CMUNeXtXXS(spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])

    Note:
        H and W must be multiples of 16 (four 2×2 max-poolings, each undone by a bilinear ×2
        before an additive skip); pad or resize the input, e.g. to 256×256 as in the paper.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        channels: Sequence[int] = (8, 10, 12, 16, 24),
        depths: Sequence[int] = (3, 1, 1, 1, 2),
        kernel_sizes: Sequence[int] = (3, 3, 7, 7, 9),
        act: str = "hardswish",
        fusion_groups: int = 2,
    ) -> None:
        super().__init__()
        channels, depths, kernel_sizes = tuple(channels), tuple(depths), tuple(kernel_sizes)
        if spatial_dims != 2:
            raise ValueError(f"CMUNeXtXXS is a 2D network; spatial_dims must be 2, got {spatial_dims}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if not len(channels) == len(depths) == len(kernel_sizes) == 5:
            raise ValueError(
                "channels, depths and kernel_sizes must each have 5 entries, got "
                f"{len(channels)}, {len(depths)} and {len(kernel_sizes)}."
            )
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd, got {tuple(kernel_sizes)}.")
        if any(c % fusion_groups for c in channels[:-1]):
            raise ValueError(f"fusion_groups={fusion_groups} must divide the widths {tuple(channels[:-1])}.")
        _activation(act)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stem = _ConvBNAct(in_channels, channels[0], act)
        self.pool = nn.MaxPool2d(2, 2)
        stage_inputs = [channels[0], *channels[:-1]]
        self.encoders = nn.ModuleList(
            nn.Sequential(
                *[MobileCMUNeXtBlock(c_in, k, act) for _ in range(depth)], _ConvBNAct(c_in, c_out, act)
            )
            for c_in, c_out, depth, k in zip(stage_inputs, channels, depths, kernel_sizes)
        )
        # Deepest step first: up C5 → C4, add x4, fuse; … ; up C2 → C1, add x1, fuse.
        self.decoders = nn.ModuleList(
            _DecoderStep(c_deep, c, act, fusion_groups)
            for c, c_deep in zip(channels[-2::-1], channels[:0:-1])
        )
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``B, in_channels, H, W`` with H, W multiples of 16."""
        _check_input("CMUNeXtXXS", x, self.in_channels, SIZE_DIVISOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self.check_input(x)
        skips: list[torch.Tensor] = []
        x = self.stem(x)
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                skips.append(x)
                x = self.pool(x)
            x = encoder(x)
        n = len(skips)
        for j, decoder in enumerate(self.decoders):
            x = decoder(x, skips[n - 1 - j])
        return self.head(x)


def _check_input(name: str, x: torch.Tensor, in_channels: int, divisor: int) -> None:
    """Shared ``B, C, H, W`` / channel / size check with an error that names a working size."""
    if x.dim() != 4:
        raise ValueError(f"{name} expects a B×C×H×W tensor, got shape {tuple(x.shape)}.")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{name} was built with in_channels={in_channels} but the input has "
            f"{x.shape[1]} channels (shape {tuple(x.shape)})."
        )
    h, w = int(x.shape[2]), int(x.shape[3])
    if h % divisor or w % divisor or h == 0 or w == 0:
        good_h = max(divisor, -(-h // divisor) * divisor)
        good_w = max(divisor, -(-w // divisor) * divisor)
        raise ValueError(
            f"{name} needs height and width that are multiples of {divisor}, got {h}×{w}; "
            f"pad or resize the input to e.g. {good_h}×{good_w}."
        )
