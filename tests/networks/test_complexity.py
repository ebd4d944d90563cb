"""Complexity counting (``networks.utils``): hand-computed MACs, the spec's measured counts, table names."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from litenext_monai.networks import (
    CMUNeXtXXS,
    LiteNeXt,
    LVUNet,
    MiniNet,
    complexity_report,
    count_macs,
    count_parameters,
    network_display_name,
    reparameterize,
)

SHAPE = (1, 3, 256, 256)


class _ConvThenMatmul(nn.Module):
    """A 3×3 convolution, a matrix product, an einsum and a batched product: all hand-countable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)  # bias: not a MAC
        self.bn = nn.BatchNorm2d(8)
        self.matrix = nn.Parameter(torch.randn(8, 5))
        self.mix = nn.Parameter(torch.randn(5, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))  # B, 8, H, W
        rows = y.permute(0, 2, 3, 1).reshape(-1, 8)  # B·H·W, 8
        z = rows @ self.matrix  # mm: B·H·W·8·5
        z = torch.einsum("pk,kj->pj", z, self.mix)  # B·H·W·5·4
        z = z.reshape(x.shape[0], -1, 4)
        return torch.bmm(z.transpose(1, 2), z)  # B·4·4·(H·W)


def test_executed_macs_of_a_hand_built_module():
    b, h, w = 2, 10, 12
    pixels = b * h * w
    conv = pixels * 8 * 3 * 9
    matmuls = pixels * 8 * 5 + pixels * 5 * 4 + b * 4 * 4 * (h * w)
    net = _ConvThenMatmul()
    assert count_macs(net, (b, 3, h, w)) == conv + matmuls
    assert count_macs(net, (b, 3, h, w), convention="executed") == conv + matmuls
    # thop: the convolution without bias, affine BN 4 ops per element, products 0
    assert count_macs(net, (b, 3, h, w), convention="thop") == conv + 4 * pixels * 8


def test_simple_layers_by_hand_in_both_conventions():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (2, 3, 10, 12)) == 2 * 8 * 10 * 12 * 3 * 9
    depthwise = nn.Conv2d(4, 4, 5, padding="same", groups=4)
    assert count_macs(depthwise, (1, 4, 6, 6), "thop") == 4 * 6 * 6 * 25
    assert count_macs(nn.Linear(5, 7), (3, 5)) == 3 * 7 * 5 == count_macs(nn.Linear(5, 7), (3, 5), "thop")
    # transposed 3×3 stride 2, 4→2 channels, 5×5 → 10×10: executed = every input pixel × weights;
    # thop multiplies output elements by C_in·k² (its formula), which is 4× more here.
    up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    assert count_macs(up, (1, 4, 5, 5)) == 25 * 4 * 2 * 9
    assert count_macs(up, (1, 4, 5, 5), "thop") == 2 * 100 * 4 * 9
    bilinear = nn.Upsample(scale_factor=2, mode="bilinear")
    assert count_macs(bilinear, (1, 3, 4, 4)) == 0
    assert count_macs(bilinear, (1, 3, 4, 4), "thop") == 11 * 3 * 8 * 8


def test_counting_leaves_batchnorm_statistics_and_mode_alone():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for convention in ("executed", "thop"):
        count_macs(net, (2, 1, 8, 8), convention)
    assert net.training and net[1].training
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="convention must be one of"):
        count_macs(nn.Conv2d(1, 1, 1), (1, 1, 4, 4), convention="fvcore")
    with pytest.raises(ValueError, match="input_shape must include"):
        count_macs(nn.Conv2d(1, 1, 1), (4,))


# ---- the spec's measured thop counts (baselines spec §0, thop 0.1.1 at 1×3×256×256) ------------


@pytest.mark.parametrize(
    "build,deploy,spec_g",
    [
        (lambda: CMUNeXtXXS(), False, 0.468),
        (lambda: MiniNet(), False, 0.660),
        (lambda: MiniNet(variant="dense"), False, 1.721),
        (lambda: LVUNet(), False, 0.219),
        (lambda: LVUNet(), True, 0.191),
    ],
    ids=["cmunext_xxs", "mininet_es2", "mininet_dense", "lvunet_train", "lvunet_deploy"],
)
def test_thop_convention_reproduces_the_spec(build, deploy, spec_g):
    net = build()
    if deploy:
        net.set_act_slope(1.0)
        reparameterize(net)
    macs = count_macs(net, SHAPE, convention="thop")
    assert macs == pytest.approx(spec_g * 1e9, rel=0.005)
    assert round(macs / 1e9, 3) == spec_g


def test_thop_convention_exact_for_cmunext():
    # The network module's documented thop count (spec §1.3: 0.468 G).
    assert count_macs(CMUNeXtXXS(), SHAPE, "thop") == 468_164_608


@pytest.mark.parametrize(
    "build,spec_g",
    [(lambda: CMUNeXtXXS(), 0.382), (lambda: MiniNet(), 0.500), (lambda: LVUNet(), 0.175)],
    ids=["cmunext_xxs", "mininet_es2", "lvunet"],
)
def test_executed_convention_equals_the_spec_conv_only_column(build, spec_g):
    # These networks do no matrix products outside conv/linear layers: executed = conv-only.
    assert round(count_macs(build(), SHAPE) / 1e9, 3) == spec_g


# ---- LiteNeXt: the fused decoder's matrix products are counted ----------------------------------


def _module_hook_macs(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Conv/Linear-module MACs only (the old counter that missed the decoder's products)."""
    total = 0

    def hook(mod: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net.eval()(torch.zeros(*shape))
    for handle in handles:
        handle.remove()
    return total


# LiteNeXt at 256²: GCF values of the encoder maps (16, 32, 64, 128 channels at 128², 64², 32², 16²)
# and of the decoded map (16²), context width D = 128, head projection width N = 16.
_PIXELS = {16: 128 * 128, 32: 64 * 64, 64: 32 * 32, 128: 16 * 16}
_D, _N = 128, 16


def test_litenext_paper_order_executes_the_spec_macs():
    net = LiteNeXt(fused_decoder=False)
    assert count_parameters(net) == 711_201
    assert count_macs(net, SHAPE) == 412_273_920  # litenext spec §4: 0.4123 G conv + linear
    assert count_macs(net, SHAPE) == _module_hook_macs(net, SHAPE)  # no products outside modules


def test_litenext_default_form_counts_the_decoder_products():
    net = LiteNeXt()
    # fused order: each value map (and the decoded map) times the D×N head matrix, per pixel
    products = (sum(_PIXELS.values()) + 16 * 16) * _D * _N
    assert products == 45_088_768
    executed = count_macs(net, SHAPE)
    assert executed == _module_hook_macs(net, SHAPE) + products
    # Exactly re-ordered, so it executes fewer MACs than the paper's order (0.412 G), not more.
    assert 0.38e9 < executed < 412_273_920


def test_litenext_deploy_form_counts_the_folded_products():
    net = reparameterize(LiteNeXt())
    products = 0
    for c, pixels in _PIXELS.items():
        if c + 1 < _D:  # LayerNorm folded into the projection: two GEMMs replace the 1×1 conv
            products += pixels * ((c + 1) * (c + 1) + (c + 2) * _D)
        products += pixels * _D * _N
    products += 16 * 16 * _D * _N  # decoded map
    executed = count_macs(net, SHAPE)
    assert executed == _module_hook_macs(net, SHAPE) + products
    assert executed > 1.3 * _module_hook_macs(net, SHAPE)  # the review finding: 30 % low before


# ---- reports and names ---------------------------------------------------------------------------


def test_complexity_report_lvunet_and_original_untouched():
    net = LVUNet()
    report = complexity_report(net, SHAPE)
    assert not net.is_deployed and net.act_slope == 1.0
    assert report["network"] == "LV-UNet (random init)"
    assert report["params_train"] == 934_545 and report["params_deploy"] == 513_585  # spec §3.7
    assert round(report["macs_thop_train"] / 1e9, 3) == 0.219 == round(report["macs_thop"] / 1e9, 3)
    assert round(report["macs_thop_deploy"] / 1e9, 3) == 0.191
    assert round(report["macs_executed_train"] / 1e9, 3) == 0.175  # spec conv-only column
    assert round(report["macs_executed_deploy"] / 1e9, 3) == 0.157
    assert report["input_shape"] == list(SHAPE)


def test_complexity_report_without_deploy_form_and_at_a_slope_below_one():
    report = complexity_report(MiniNet(), SHAPE)
    assert report["params_train"] == report["params_deploy"] == 36_625
    assert report["macs_executed_train"] == report["macs_executed_deploy"]
    net = LVUNet(act_slope=0.3)
    report = complexity_report(net, (1, 3, 128, 128))  # no warning escapes, the original keeps 0.3
    assert net.act_slope == pytest.approx(0.3) and report["params_deploy"] == 513_585


def test_display_names_of_networks_and_configs():
    unet = UNet(2, 3, 1, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2)
    assert [network_display_name(n) for n in (LiteNeXt(), CMUNeXtXXS(), MiniNet(), LVUNet(), unet)] == [
        "LiteNeXt",
        "CMUNeXt-XXS",
        "Mini-Net (ES-2)",
        "LV-UNet (random init)",
        "MONAI UNet 16-256 res2",
    ]
    assert network_display_name(MiniNet(variant="dense")) == "Mini-Net (dense)"
    assert LVUNet.__name__ == "LVUNet" and LVUNet().display_name == "LV-UNet (random init)"
    configs = {
        "litenext_monai.networks.LiteNeXt": "LiteNeXt",
        "litenext_monai.networks.CMUNeXtXXS": "CMUNeXt-XXS",
        "litenext_monai.networks.MiniNet": "Mini-Net (ES-2)",
        "litenext_monai.networks.LVUNet": "LV-UNet (random init)",
    }
    for target, name in configs.items():
        assert network_display_name({"_target_": target, "in_channels": 1}) == name
    lv = "litenext_monai.networks.LVUNet"
    assert network_display_name({"_target_": lv, "pretrained": True}) == "LV-UNet (ImageNet)"
    assert network_display_name({"_target_": lv, "pretrained_path": "/w.pth"}) == "LV-UNet (ImageNet)"
    assert network_display_name({"network_def": {"_target_": lv}}) == "LV-UNet (random init)"
    unet_def = {"_target_": "monai.networks.nets.UNet", "channels": [16, 32, 64, 128, 256], "num_res_units": 2}
    assert network_display_name(unet_def) == "MONAI UNet 16-256 res2"


def test_litenext_paper_order_thop_count_matches_the_spec():
    # litenext spec §4: "thop MACs 0.4327 G" for the k = 7 paper-order network
    assert round(count_macs(LiteNeXt(fused_decoder=False), SHAPE, "thop") / 1e9, 4) == 0.4327
