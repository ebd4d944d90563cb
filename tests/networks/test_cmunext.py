"""CMUNeXt-XXS: counts against hand arithmetic from the spec's layer list, shapes, export, input errors.

Also home of :func:`thop_style_macs`, the thop-convention counter the three baseline tests share.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from litenext_monai.networks import CMUNeXtXXS, count_parameters
from tests.networks.helpers import saved_torchscript


def thop_style_macs(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Count one eval forward pass the way ``thop.profile`` 0.1.1 does (baselines spec §0).

    Leaf modules only: convolutions (also transposed) ``out.numel() · C_in/groups · k²`` without
    bias; affine BatchNorm 4 ops per element; ``nn.Upsample`` bilinear 11 per output element;
    adaptive average pooling ``(kernel + 1)`` per output element; linear ``out.numel() · in``;
    activations and max-pooling 0.
    """
    total = 0

    def hook(mod: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            kh, kw = mod.kernel_size
            total += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.BatchNorm2d):
            total += (4 if mod.affine else 2) * inputs[0].numel()
        elif isinstance(mod, nn.Upsample):
            assert mod.mode == "bilinear"
            total += 11 * out.numel()
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            kernel = (inputs[0].shape[-2] // out.shape[-2]) * (inputs[0].shape[-1] // out.shape[-1])
            total += (kernel + 1) * out.numel()
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(*shape))
    finally:
        for h in handles:
            h.remove()
    return total


def conv_only_macs(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Convolution/linear MACs from torch's aten-level FLOP counter (2 FLOPs per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(torch.zeros(*shape))
    return counter.get_total_flops() // 2


# ---- hand arithmetic from the spec's layer list (§1.2) --------------------------------------


def _conv(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k + c_out  # every CMUNeXt conv has a bias


def _bn(c: int) -> int:
    return 2 * c


def _expected_params(
    in_ch=3, out_ch=1, dims=(8, 10, 12, 16, 24), depths=(3, 1, 1, 1, 2), kernels=(3, 3, 7, 7, 9), groups=2
) -> int:
    total = _conv(in_ch, dims[0], 3) + _bn(dims[0])  # stem
    widths_in = (dims[0],) + dims[:-1]
    for c, c_out, depth, k in zip(widths_in, dims, depths, kernels):
        block = 2 * (_conv(c, c, k, groups=c) + _bn(c)) + _conv(c, 4 * c, 1) + _bn(4 * c)
        block += _conv(4 * c, c, 1) + _bn(c)
        total += depth * block + _conv(c, c_out, 3) + _bn(c_out)
    for c, c_deep in zip(dims[:-1], dims[1:]):
        total += _conv(c_deep, c, 3) + _bn(c)  # up-conv
        total += (
            _conv(c, c, 3, groups) + _bn(c) + _conv(c, 4 * c, 1) + _bn(4 * c) + _conv(4 * c, c, 1) + _bn(c)
        )
    return total + _conv(dims[0], out_ch, 1)


def _expected_thop_macs(
    size=256, in_ch=3, dims=(8, 10, 12, 16, 24), depths=(3, 1, 1, 1, 2), kernels=(3, 3, 7, 7, 9)
):
    """thop convention by hand: conv MACs (no bias), BN 4/element, bilinear up 11/output element."""
    res = [size // 2**i for i in range(5)]
    px = [r * r for r in res]
    total = px[0] * (9 * in_ch * dims[0] + 4 * dims[0])
    widths_in = (dims[0],) + dims[:-1]
    for i, (c, c_out, depth, k) in enumerate(zip(widths_in, dims, depths, kernels)):
        block = 2 * (c * k * k + 4 * c) + (4 * c * c + 16 * c) + (4 * c * c + 4 * c)
        total += px[i] * (depth * block + 9 * c * c_out + 4 * c_out)
    for i, (c, c_deep) in enumerate(zip(dims[:-1], dims[1:])):
        up = 11 * c_deep + 9 * c_deep * c + 4 * c
        fusion = 9 * c * (c // 2) + 4 * c + 4 * c * c + 16 * c + 4 * c * c + 4 * c
        total += px[i] * (up + fusion)
    return total + px[0] * dims[0]


def test_hand_arithmetic_reproduces_the_spec_table():
    assert _expected_params() == 40_837
    assert _expected_params(depths=(3, 1, 1, 2, 3)) == 48_393  # paper Table II depths (spec §1.3)
    assert _expected_params(groups=1) == 43_375
    assert _expected_thop_macs() == 468_164_608  # the authors' table: 468.165M MACs


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"in_channels": 1},
        {"out_channels": 2},
        {"depths": (3, 1, 1, 2, 3)},
        {"fusion_groups": 1},
        {"act": "relu"},
    ],
)
def test_parameter_count_matches_hand_arithmetic(kwargs):
    net = CMUNeXtXXS(spatial_dims=2, **kwargs)
    expected = _expected_params(
        in_ch=kwargs.get("in_channels", 3),
        out_ch=kwargs.get("out_channels", 1),
        depths=kwargs.get("depths", (3, 1, 1, 1, 2)),
        groups=kwargs.get("fusion_groups", 2),
    )
    assert count_parameters(net) == expected


def test_default_is_the_counted_model_40837_params_468m_thop_macs():
    net = CMUNeXtXXS(spatial_dims=2, in_channels=3, out_channels=1)
    assert count_parameters(net) == 40_837
    macs = thop_style_macs(net, (1, 3, 256, 256))
    assert macs == _expected_thop_macs() == 468_164_608
    assert round(macs / 1e9, 3) == 0.468
    assert round(conv_only_macs(net, (1, 3, 256, 256)) / 1e9, 3) == 0.382  # spec §0, conv-only column


def test_thop_counter_counts_a_small_module_by_hand():
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, groups=2),
        nn.BatchNorm2d(4),
        nn.Upsample(scale_factor=2.0, mode="bilinear"),
    )
    assert thop_style_macs(net, (1, 2, 5, 5)) == 4 * 25 * 1 * 9 + 4 * 4 * 25 + 11 * 4 * 100


@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape_and_every_parameter_gets_a_gradient(in_channels):
    net = CMUNeXtXXS(in_channels=in_channels, out_channels=2)
    out = net(torch.randn(2, in_channels, 32, 48))
    assert out.shape == (2, 2, 32, 48)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_torchscript_round_trip(tmp_path):
    # torch.export also works (checked by hand); it takes ~15 s here, so the suite tests TorchScript.
    net = CMUNeXtXXS(in_channels=1).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        expected = net(x)
    loaded = saved_torchscript(net, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 3, 40, 64), r"multiples of 16, got 40×64.*48×64"),
        ((1, 3, 8, 8), r"multiples of 16, got 8×8.*16×16"),
        ((1, 1, 32, 32), r"in_channels=3 but the input has 1 channels"),
        ((3, 32, 32), r"B×C×H×W"),
    ],
)
def test_bad_input_raises_a_clear_error(shape, message):
    with pytest.raises(ValueError, match=message):
        CMUNeXtXXS()(torch.zeros(*shape))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"spatial_dims": 3}, "2D network"),
        ({"in_channels": 0}, "in_channels must be >= 1"),
        ({"act": "swish"}, "act must be one of"),
        ({"kernel_sizes": (3, 3, 7, 7, 8)}, "odd"),
        ({"depths": (1, 1, 1)}, "5 entries"),
        ({"fusion_groups": 3}, "fusion_groups=3"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CMUNeXtXXS(**kwargs)
