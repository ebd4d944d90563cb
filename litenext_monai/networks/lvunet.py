"""LV-UNet (Jiang et al., BIBM 2024 workshop): MobileNetV3 stem + fusible "vanilla" U-Net blocks.

Built from the project specification (baselines spec §3). The encoder is the first ten blocks of
MobileNetV3-Large (``features[0..9]``), rebuilt here with torchvision's module layout so that an
ImageNet checkpoint can be loaded (``pretrained=True`` via torch.hub, or a local file) without
depending on torchvision; the rest is seven fusible encoder/decoder blocks whose two 1×1
convolutions merge into one after deep training (the slope of the LeakyReLU between them is raised
to 1, making it the identity).

Training form: 934,545 parameters, deploy form (after :meth:`LVUNet.reparameterize`): 513,585.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from litenext_monai.networks.cmunext import _check_input

__all__ = [
    "LVUNet",
    "FusibleBlock",
    "FusedBlock",
    "SeriesActivation",
    "InvertedResidual",
    "IMAGENET_WEIGHTS_URL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_weights_path",
]

#: torchvision's ``MobileNet_V3_Large_Weights.IMAGENET1K_V1`` (the weights ``pretrained=True`` gave in
#: the LV-UNet code; spec §3.3). The 8 hex digits in the name are the SHA-256 prefix that
#: ``torch.hub`` checks with ``check_hash=True``.
IMAGENET_WEIGHTS_URL = "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth"
#: ImageNet channel statistics (RGB, for inputs scaled to [0, 1]) the pretrained encoder expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's MobileNetV3 BatchNorm momentum, kept when fine-tuning ImageNet weights.
PRETRAINED_BN_MOMENTUM = 0.01
#: BatchNorm momentum from scratch: PyTorch's default, so eval-mode statistics keep up (spec §3.3).
SCRATCH_BN_MOMENTUM = 0.1

#: Input height and width must be multiples of this (2×2 stem stride, three stride-2 MobileNet
#: blocks and three 2×2 max-poolings: the deepest map is H/128).
SIZE_DIVISOR = 128

#: MobileNetV3-Large ``features[1..9]``: (in, kernel, expanded, out, squeeze-excite, hardswish, stride),
#: grouped as LV-UNet's encoder1 (blocks 1–2), encoder2 (3–5) and encoder3 (6–9).
_MOBILENET_V3_BLOCKS = (
    (
        (16, 3, 16, 16, False, False, 1),
        (16, 3, 64, 24, False, False, 2),
    ),
    (
        (24, 3, 72, 24, False, False, 1),
        (24, 5, 72, 40, True, False, 2),
        (40, 5, 120, 40, True, False, 1),
    ),
    (
        (40, 5, 120, 40, True, False, 1),
        (40, 3, 240, 80, False, True, 2),
        (80, 3, 200, 80, False, True, 1),
        (80, 3, 184, 80, False, True, 1),
    ),
)
#: torchvision ``features.{i}.`` prefix → LV-UNet prefix, for loading ImageNet weights (spec §3.3).
_PRETRAINED_PREFIXES = {
    "features.0.": "firstconv.",
    "features.1.": "encoder1.0.",
    "features.2.": "encoder1.1.",
    "features.3.": "encoder2.0.",
    "features.4.": "encoder2.1.",
    "features.5.": "encoder2.2.",
    "features.6.": "encoder3.0.",
    "features.7.": "encoder3.1.",
    "features.8.": "encoder3.2.",
    "features.9.": "encoder3.3.",
}
#: Widths of the fusible encoder stages after the MobileNet part (80 channels at H/16).
_STAGE_WIDTHS = (80, 160, 240, 480)
#: BatchNorm epsilon of the fusible blocks (the MobileNet part uses 1e-3).
_FUSIBLE_BN_EPS = 1e-6


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` without going below 90% (MobileNet widths)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _ConvBNAct(nn.Sequential):
    """Bias-free convolution → BatchNorm (eps 1e-3) → optional activation (keys ``0``, ``1``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        groups: int,
        act: type[nn.Module] | None,
        bn_momentum: float,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                (kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, eps=1e-3, momentum=bn_momentum),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class _SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: ``x · hardsigmoid(fc2(ReLU(fc1(GAP(x)))))`` with 1×1 convolutions."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.relu = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_activation(self.fc2(self.relu(self.fc1(self.avgpool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 inverted residual: [1×1 expand] → k×k depth-wise (stride) → [SE] → 1×1 project.

    The residual is added when the stride is 1 and the width is unchanged. State-dict keys follow
    torchvision (``block.{j}.0.weight``, ``block.{j}.1.*``, ``block.{j}.fc1/fc2``).

    Args:
        in_channels, kernel_size, expanded_channels, out_channels: the block's widths and kernel.
        use_se: add squeeze-and-excitation with ``make_divisible(expanded / 4)`` channels.
        use_hardswish: Hardswish instead of ReLU after the expand and depth-wise convolutions.
        stride: depth-wise stride (1 or 2).
        bn_momentum: BatchNorm momentum (torchvision's MobileNetV3 uses 0.01).
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        expanded_channels: int,
        out_channels: int,
        use_se: bool,
        use_hardswish: bool,
        stride: int,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        act = nn.Hardswish if use_hardswish else nn.ReLU
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(_ConvBNAct(in_channels, expanded_channels, 1, 1, 1, act, bn_momentum))
        layers.append(
            _ConvBNAct(
                expanded_channels, expanded_channels, kernel_size, stride, expanded_channels, act, bn_momentum
            )
        )
        if use_se:
            layers.append(_SqueezeExcite(expanded_channels, _make_divisible(expanded_channels / 4)))
        layers.append(_ConvBNAct(expanded_channels, out_channels, 1, 1, 1, None, bn_momentum))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class SeriesActivation(nn.Module):
    """Series-informed activation ``A_s(y) = BN(DW_{(2n+1)²}(ReLU(y)))`` (paper eq. 1, VanillaNet style).

    Args:
        channels: width.
        act_num: ``n``; the neighbourhood is ``(2n+1)×(2n+1)`` (1 in the paper's best setting).
    """

    def __init__(self, channels: int, act_num: int = 1) -> None:
        super().__init__()
        k = 2 * act_num + 1
        self.conv = nn.Conv2d(channels, channels, k, padding=act_num, groups=channels, bias=False)
        nn.init.trunc_normal_(self.conv.weight, std=0.02)
        self.bn = nn.BatchNorm2d(channels, eps=_FUSIBLE_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


def _resample(upsample: bool) -> nn.Module:
    if upsample:
        return nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)
    return nn.MaxPool2d(2)


def _fold_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode BN into the preceding convolution (paper eq. 4), in float64."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    b = bias.double() if bias is not None else torch.zeros_like(scale)
    return weight.double() * scale.reshape(-1, 1, 1, 1), scale * (
        b - bn.running_mean.double()
    ) + bn.bias.double()


class FusedBlock(nn.Module):
    """Deploy form of :class:`FusibleBlock`: 1×1 conv → MaxPool 2 / bilinear ×2 → ReLU → 3×3 DW conv."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool, act_num: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.pool = _resample(upsample)
        k = 2 * act_num + 1
        self.act = nn.Conv2d(out_channels, out_channels, k, padding=act_num, groups=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.relu(self.pool(self.conv(x))))


class FusibleBlock(nn.Module):
    """Training form of LV-UNet's vanilla block (spec §3.4), ``c → c'``.

    ``y = BN1(conv1×1_{c→c}(x))``, ``y = max(a·y, y)`` (LeakyReLU with slope ``a``),
    ``y = BN2(conv1×1_{c→c'}(y))``, then MaxPool 2 (encoder) or bilinear ×2 (decoder), then
    :class:`SeriesActivation`. Deep training raises ``a`` from 0 to 1; at ``a = 1`` the block is
    linear up to the pooling and :meth:`fuse` merges it into one 1×1 convolution (eqs. 4–5).
    Parameters: ``c² + c·c' + 3c + 14c'`` (deploy: ``c·c' + 11c'``).

    Args:
        in_channels: ``c``.
        out_channels: ``c'``.
        upsample: decoder block (bilinear ×2) instead of encoder block (MaxPool 2).
        act_num: ``n`` of the series activation.
        act_slope: initial LeakyReLU slope ``a`` in [0, 1].
    """

    def __init__(
        self, in_channels: int, out_channels: int, upsample: bool, act_num: int = 1, act_slope: float = 1.0
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.upsample = upsample
        self.act_num = act_num
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 1), nn.BatchNorm2d(in_channels, eps=_FUSIBLE_BN_EPS)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels, eps=_FUSIBLE_BN_EPS)
        )
        self.pool = _resample(upsample)
        self.act = SeriesActivation(out_channels, act_num)
        # A buffer, so a checkpoint restores the slope its weights were trained at.
        self.register_buffer("act_slope", torch.tensor(float(act_slope)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        y = torch.maximum(y, y * self.act_slope)
        return self.act(self.pool(self.conv2(y)))

    @torch.no_grad()
    def fuse(self) -> FusedBlock:
        """The equivalent :class:`FusedBlock` (exact when the slope is 1; uses BN running statistics)."""
        w1, b1 = _fold_bn(self.conv1[0].weight, self.conv1[0].bias, self.conv1[1])
        w2, b2 = _fold_bn(self.conv2[0].weight, self.conv2[0].bias, self.conv2[1])
        w1, w2 = w1.flatten(1), w2.flatten(1)
        wa, ba = _fold_bn(self.act.conv.weight, None, self.act.bn)
        ref = self.conv1[0].weight
        fused = FusedBlock(self.in_channels, self.out_channels, self.upsample, self.act_num)
        fused = fused.to(device=ref.device, dtype=ref.dtype)
        fused.conv.weight.copy_((w2 @ w1).reshape(fused.conv.weight.shape))
        fused.conv.bias.copy_(w2 @ b1 + b2)
        fused.act.weight.copy_(wa)
        fused.act.bias.copy_(ba)
        return fused


class LVUNet(nn.Module):
    """LV-UNet: MobileNetV3-Large ``features[0..9]`` → three fusible encoder stages → six fusible
    decoder blocks with additive skips → fusible ×2 block and 1×1 head (spec §3.2).

    Widths are 16, 24, 40, 80, 160, 240 and 480. Skips are additions of the encoder map of equal
    shape: ``t2`` (H/64), ``t1`` (H/32), ``t0`` (H/16, the MobileNet output), ``e2`` (H/8) and
    ``e1`` (H/4); the H/2 maps are not used as skips.

    Deep training: :meth:`set_act_slope` sets the LeakyReLU slope ``a`` of every fusible block
    (:class:`~litenext_monai.engines.DeepTrainingSlopeHandler` applies the paper's per-epoch cosine
    schedule and sets ``a = 1`` when training completes); :meth:`reparameterize` then converts the
    network in place to its deploy form (513,585 parameters), which computes the same function.

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported.
        in_channels: image channels (1 for grey images, 3 for RGB).
        out_channels: number of foreground logit maps (1 for binary segmentation).
        act_slope: initial slope ``a`` in [0, 1]. The default 1 makes a network trained without the
            deep-training handler exactly fusible; the handler starts its schedule at 0.
        act_num: ``n`` of the series-informed activation (``(2n+1)²`` depth-wise kernel).
        pretrained_path: optional local file with ImageNet MobileNetV3-Large weights in
            torchvision's layout (``features.N.…``, e.g. ``mobilenet_v3_large-8738ca79.pth``), loaded
            with ``weights_only=True``. Same effect as ``pretrained=True`` without any download.
        encoder_bn_momentum: BatchNorm momentum of the MobileNet part. ``None`` (default): 0.01
            (torchvision's value) with ImageNet weights, 0.1 from scratch, where 0.01 makes the
            eval-mode statistics lag the weights for hundreds of iterations (spec §3.3).
        deploy: build the deploy form directly (to load a state dict saved after
            :meth:`reparameterize`).
        pretrained: load torchvision's ImageNet MobileNetV3-Large weights (IMAGENET1K_V1,
            :data:`IMAGENET_WEIGHTS_URL`) through ``torch.hub`` with hash checking, cached under
            ``$TORCH_HOME/hub/checkpoints/``. Offline, place the file there (see
            :func:`imagenet_weights_path`) or pass ``pretrained_path``. torchvision is not needed.
        imagenet_normalization: normalise the input inside the network with the ImageNet mean and
            std (a buffer, so deploy and exported forms keep it); inputs are then expected in
            [0, 1]. ``None`` (default): on exactly when ImageNet weights are loaded. One input
            channel uses the mean of the RGB statistics (matching the summed grey stem kernel).

    Returns (forward):
        logits ``B, out_channels, H, W``; no activation is applied.

    Examples::

        >>> net = LVUNet(spatial_dims=2, in_channels=3, out_channels=1)
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])

    Note:
        H and W must be multiples of 128 (the deepest map is H/128 × W/128); pad or resize the
        input, e.g. to 256×256 as in the paper.
    """

    __jit_unused_properties__ = ["is_deployed", "act_slope", "display_name"]

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        act_slope: float = 1.0,
        act_num: int = 1,
        pretrained_path: str | PathLike | None = None,
        encoder_bn_momentum: float | None = None,
        deploy: bool = False,
        pretrained: bool = False,
        imagenet_normalization: bool | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"LVUNet is a 2D network; spatial_dims must be 2, got {spatial_dims}.")
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("act_num", act_num),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        _check_slope(act_slope)
        imagenet = bool(pretrained) or pretrained_path is not None
        if encoder_bn_momentum is None:
            encoder_bn_momentum = PRETRAINED_BN_MOMENTUM if imagenet else SCRATCH_BN_MOMENTUM
        if not 0.0 <= encoder_bn_momentum <= 1.0:
            raise ValueError(f"encoder_bn_momentum must lie in [0, 1], got {encoder_bn_momentum}.")
        if imagenet_normalization is None:
            imagenet_normalization = imagenet
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.encoder_bn_momentum = float(encoder_bn_momentum)
        self.imagenet_normalization = bool(imagenet_normalization)
        #: ``"imagenet"`` or ``"random"``: which encoder initialisation this network started from.
        self.encoder_weights = "imagenet" if imagenet else "random"
        mean, std = _input_statistics(in_channels)
        # Persistent only when used, so checkpoints of networks without normalisation keep their keys.
        self.register_buffer("input_mean", mean, persistent=self.imagenet_normalization)
        self.register_buffer("input_std", std, persistent=self.imagenet_normalization)
        self.firstconv = _ConvBNAct(in_channels, 16, 3, 2, 1, nn.Hardswish, encoder_bn_momentum)
        self.encoder1, self.encoder2, self.encoder3 = (
            nn.Sequential(*[InvertedResidual(*cfg, bn_momentum=encoder_bn_momentum) for cfg in group])
            for group in _MOBILENET_V3_BLOCKS
        )
        self._init_mobilenet()

        def block(c_in: int, c_out: int, upsample: bool) -> nn.Module:
            if deploy:
                return FusedBlock(c_in, c_out, upsample, act_num)
            return FusibleBlock(c_in, c_out, upsample, act_num, act_slope)

        w = _STAGE_WIDTHS
        self.stages = nn.ModuleList(block(w[i], w[i + 1], False) for i in range(3))
        self.up1 = nn.ModuleList(block(w[i + 1], w[i], True) for i in (2, 1, 0))
        self.up2 = nn.ModuleList([block(80, 40, True), block(40, 24, True), block(24, 16, True)])
        self.final = nn.Sequential(block(16, 16, True), nn.Conv2d(16, out_channels, 1))
        if pretrained_path is not None:
            self.load_pretrained_encoder(pretrained_path)
        elif pretrained:
            self.load_pretrained_encoder(_download_imagenet_weights())

    @property
    def display_name(self) -> str:
        """Table name stating which encoder initialisation ran: ``"LV-UNet (ImageNet)"`` or ``"LV-UNet (random init)"``."""
        return "LV-UNet (ImageNet)" if self.encoder_weights == "imagenet" else "LV-UNet (random init)"

    def _init_mobilenet(self) -> None:
        """torchvision's MobileNetV3 initialisation: Kaiming-normal (fan-out) convs, BN 1/0."""
        for part in (self.firstconv, self.encoder1, self.encoder2, self.encoder3):
            for m in part.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def _fusible_blocks(self) -> list[nn.Module]:
        return [*self.stages, *self.up1, *self.up2, self.final[0]]

    @property
    def is_deployed(self) -> bool:
        """Whether the network is in its fused deploy form."""
        return not any(isinstance(b, FusibleBlock) for b in self._fusible_blocks())

    @property
    def act_slope(self) -> float:
        """The current deep-training slope ``a`` (1 once deployed)."""
        for b in self._fusible_blocks():
            if isinstance(b, FusibleBlock):
                return float(b.act_slope)
        return 1.0

    def set_act_slope(self, slope: float) -> None:
        """Set the LeakyReLU slope ``a`` ∈ [0, 1] of every fusible block (``a = 1``: identity).

        Raises:
            ValueError: ``slope`` outside [0, 1].
            RuntimeError: the network is already in deploy form and ``slope`` is not 1.
        """
        _check_slope(slope)
        if self.is_deployed:
            if slope != 1.0:
                raise RuntimeError(
                    f"LVUNet is already reparameterized; its slope is fixed at 1, not {slope}."
                )
            return
        for b in self._fusible_blocks():
            if isinstance(b, FusibleBlock):
                b.act_slope.fill_(float(slope))

    def reparameterize(self) -> None:
        """Convert every fusible block in place to its deploy form (934,545 → 513,585 parameters).

        Uses the BatchNorm running statistics, so the deploy network equals the training network in
        eval mode. The merge is exact only at slope 1: call ``set_act_slope(1.0)`` first (the
        deep-training handler does so when training completes); otherwise a warning is issued and
        the result differs. Calling it again does nothing.
        """
        slope = self.act_slope
        if not self.is_deployed and slope != 1.0:
            warnings.warn(
                f"LVUNet.reparameterize() at act slope {slope:g} != 1: the deploy network is not "
                "equivalent to the trained one; call set_act_slope(1.0) first.",
                stacklevel=2,
            )
        for blocks in (self.stages, self.up1, self.up2, self.final):
            for i, b in enumerate(blocks):
                if isinstance(b, FusibleBlock):
                    blocks[i] = b.fuse()

    def load_pretrained_encoder(self, path: str | PathLike | Mapping[str, torch.Tensor]) -> None:
        """Load ImageNet MobileNetV3-Large weights (torchvision layout) from a local file or a state dict.

        Keys ``features.0.`` … ``features.9.`` are mapped to ``firstconv`` and ``encoder1..3``
        (spec §3.3); all other keys (later blocks, classifier) are ignored. With ``in_channels != 3``
        the RGB stem kernel is adapted: summed over colours for one channel, otherwise repeated and
        rescaled by ``3 / in_channels``.

        Raises:
            ValueError: the file is not a state dict, lacks encoder tensors or has wrong shapes.
        """
        if isinstance(path, Mapping):
            state, path = path, "<state dict>"
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(
                f"{path}: expected a state dict (mapping of tensors), got {type(state).__name__}."
            )
        mapped: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            for src, dst in _PRETRAINED_PREFIXES.items():
                if key.startswith(src):
                    mapped[dst + key[len(src) :]] = value
        stem_key = "firstconv.0.weight"
        if stem_key in mapped and self.in_channels != 3 and mapped[stem_key].shape[1] == 3:
            mapped[stem_key] = _adapt_stem(mapped[stem_key], self.in_channels)
        own = self.state_dict()
        expected = {k for k in own if k.startswith(("firstconv.", "encoder1.", "encoder2.", "encoder3."))}
        missing = sorted(expected - mapped.keys())
        unexpected = sorted(mapped.keys() - expected)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a MobileNetV3-Large state dict in torchvision's layout "
                f"({len(missing)} encoder tensors missing, e.g. {missing[:3]}; "
                f"{len(unexpected)} unknown, e.g. {unexpected[:3]})."
            )
        wrong = [
            f"{k}: {tuple(v.shape)} != {tuple(own[k].shape)}"
            for k, v in mapped.items()
            if v.shape != own[k].shape
        ]
        if wrong:
            raise ValueError(f"{path}: tensor shapes do not match MobileNetV3-Large: {wrong[:3]}.")
        self.load_state_dict(mapped, strict=False)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``B, in_channels, H, W`` with H, W multiples of 128."""
        _check_input("LVUNet", x, self.in_channels, SIZE_DIVISOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self.check_input(x)
        if self.imagenet_normalization:
            x = (x - self.input_mean) / self.input_std
        e1 = self.encoder1(self.firstconv(x))
        e2 = self.encoder2(e1)
        t0 = self.encoder3(e2)
        t1 = self.stages[0](t0)
        t2 = self.stages[1](t1)
        d = self.stages[2](t2)
        d = self.up1[0](d) + t2
        d = self.up1[1](d) + t1
        d = self.up1[2](d) + t0
        d = self.up2[0](d) + e2
        d = self.up2[1](d) + e1
        d = self.up2[2](d)
        return self.final(d)


def _check_slope(slope: float) -> None:
    if not 0.0 <= slope <= 1.0:  # also rejects NaN
        raise ValueError(f"the deep-training slope must lie in [0, 1], got {slope}.")


def _adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB stem kernel ``16×3×k×k`` → ``16×in_channels×k×k`` keeping the response to a grey image."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (3.0 / in_channels)


def _input_statistics(in_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as ``1×in_channels×1×1``: RGB as is, grey the RGB average, else cycled."""
    if in_channels == 1:
        mean, std = [sum(IMAGENET_MEAN) / 3.0], [sum(IMAGENET_STD) / 3.0]
    else:
        mean = [IMAGENET_MEAN[i % 3] for i in range(in_channels)]
        std = [IMAGENET_STD[i % 3] for i in range(in_channels)]
    return torch.tensor(mean).reshape(1, -1, 1, 1), torch.tensor(std).reshape(1, -1, 1, 1)


def imagenet_weights_path() -> Path:
    """Where ``LVUNet(pretrained=True)`` looks for (and caches) the ImageNet weights file.

    ``$TORCH_HOME/hub/checkpoints/mobilenet_v3_large-8738ca79.pth`` (``torch.hub.get_dir()``, which
    also honours ``torch.hub.set_dir``; ``TORCH_HOME`` defaults to ``~/.cache/torch``).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET_WEIGHTS_URL)


def _download_imagenet_weights() -> Mapping[str, torch.Tensor]:
    """torchvision's ImageNet MobileNetV3-Large state dict, from the torch.hub cache or downloaded.

    Raises:
        RuntimeError: the file is neither cached nor downloadable (e.g. offline), fails the SHA-256
            prefix check, or cannot be read; the message names the file to place and the
            ``pretrained_path`` alternative.
    """
    target = imagenet_weights_path()
    try:
        return torch.hub.load_state_dict_from_url(
            IMAGENET_WEIGHTS_URL, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except Exception as exc:  # URLError/OSError offline, RuntimeError on a hash mismatch, unpickling errors
        raise RuntimeError(
            f"LVUNet(pretrained=True) could not obtain the ImageNet MobileNetV3-Large weights "
            f"({type(exc).__name__}: {exc}). Download {IMAGENET_WEIGHTS_URL} on a machine with network "
            f"access and place it at {target} (the torch.hub cache under $TORCH_HOME), or pass "
            f"pretrained_path='/path/to/{target.name}'."
        ) from exc
