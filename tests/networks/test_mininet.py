"""Mini-Net (ES-2 reconstruction and literal dense reading): counts by hand from the spec, shapes, errors."""

from __future__ import annotations

import pytest
import torch

from litenext_monai.networks import MiniNet, count_parameters
from litenext_monai.networks.mininet import ExpandSqueeze
from tests.networks.helpers import saved_torchscript
from tests.networks.test_cmunext import conv_only_macs, thop_style_macs

# ---- hand arithmetic from the spec's layer list (§2.2–2.3); every conv has a bias --------------


def _conv(c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k + c_out


def _spatial(c: int, k: int, variant: str) -> int:
    if variant == "dense":
        return _conv(c, c, k)
    return _conv(c, 2 * c, k, groups=c) + _conv(2 * c, c, 1)  # depth-wise ×2 expand, 1×1 squeeze


def _dmres(c: int, variant: str) -> int:
    # four k×k convs (3, 5 in S1; 3', 5' in the output), two 1×1 convs, a BN after each of the six
    return sum(_spatial(c, k, variant) for k in (3, 5, 3, 5)) + 2 * _conv(c, c, 1) + 6 * 2 * c


def _expected(variant: str, in_ch: int = 3, out_ch: int = 1, c: int = 8) -> tuple[int, int]:
    """(trainable parameters, BatchNorm running-statistic elements)."""
    es2 = variant == "es2"
    x_out = 2 if es2 else c
    params = _conv(in_ch, c, 3) + 2 * c  # stem conv + BN
    params += 2 * _dmres(c, variant) + 2 * _dmres(2 * c, variant) + _dmres(4 * c, variant)
    for width in (c, 2 * c):  # down-sampling c → 2c
        params += (
            (_conv(width, width, 3, groups=width) + _conv(width, 2 * width, 1))
            if es2
            else _conv(width, 2 * width, 3)
        )
    for width in (2 * c, 4 * c):  # transposed conv 2c → c (+ BN in ES-2)
        params += _conv(width, width // 2, 3) + (2 * (width // 2) if es2 else 0)
    params += _conv(c, x_out, 1) + 2 * x_out + _conv(x_out, out_ch, 1)
    bn_channels = c + 6 * (2 * c + 2 * 2 * c + 4 * c) + x_out + ((2 * c + c) if es2 else 0)
    return params, 2 * bn_channels


def test_hand_arithmetic_reproduces_the_spec_table():
    assert _expected("es2") == (36_625, 1_028)  # claimed: 36,657 trainable, 1,028 non-trainable
    assert _expected("dense") == (129_849, 992)
    assert _dmres(32, "dense") == 72_256
    for c in (8, 16, 32):
        assert _dmres(c, "es2") == 10 * c * c + 162 * c
        assert _dmres(c, "dense") == 70 * c * c + 18 * c


def _running_stat_elements(net: torch.nn.Module) -> int:
    return sum(b.numel() for name, b in net.named_buffers() if name.endswith(("running_mean", "running_var")))


@pytest.mark.parametrize("variant", ["es2", "dense"])
@pytest.mark.parametrize("in_channels,out_channels", [(3, 1), (1, 1), (1, 3)])
def test_parameter_counts_match_hand_arithmetic(variant, in_channels, out_channels):
    net = MiniNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, variant=variant)
    params, stats = _expected(variant, in_channels, out_channels)
    assert count_parameters(net, trainable_only=True) == params
    assert _running_stat_elements(net) == stats


def test_default_is_es2_with_36625_trainable_and_37653_total():
    net = MiniNet()
    assert net.variant == "es2"
    assert count_parameters(net) == 36_625
    assert count_parameters(net) + _running_stat_elements(net) == 37_653


@pytest.mark.parametrize("variant,thop_g,conv_g", [("es2", 0.660, 0.500), ("dense", 1.721, 1.562)])
def test_macs_at_256_match_the_spec(variant, thop_g, conv_g):
    net = MiniNet(variant=variant)
    assert round(thop_style_macs(net, (1, 3, 256, 256)) / 1e9, 3) == thop_g
    assert round(conv_only_macs(net, (1, 3, 256, 256)) / 1e9, 3) == conv_g


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_expand_squeeze_is_a_depth_multiplier_2_convolution_then_1x1(kernel_size):
    torch.manual_seed(0)
    es = ExpandSqueeze(4, kernel_size)
    x = torch.randn(2, 4, 9, 7)
    expand = es.expand
    # the paper's form: groups=c convolution c→2c, each input channel feeding two output channels
    expanded = torch.nn.functional.conv2d(x, expand.weight, expand.bias, padding=kernel_size // 2, groups=4)
    expected = torch.nn.functional.conv2d(expanded, es.squeeze.weight, es.squeeze.bias)
    torch.testing.assert_close(es(x), expected)


@pytest.mark.parametrize("variant", ["es2", "dense"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape_and_every_parameter_gets_a_gradient(variant, in_channels):
    net = MiniNet(in_channels=in_channels, out_channels=2, variant=variant)
    out = net(torch.randn(2, in_channels, 20, 28))
    assert out.shape == (2, 2, 20, 28)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_torchscript_and_export_round_trip(tmp_path):
    net = MiniNet(in_channels=1).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        expected = net(x)
    loaded = saved_torchscript(net, tmp_path)
    exported = torch.export.export(net, (x,))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)
        torch.testing.assert_close(exported.module()(x), expected)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 3, 30, 32), r"multiples of 4, got 30×32.*32×32"),
        ((1, 1, 16, 16), r"in_channels=3 but the input has 1 channels"),
        ((1, 3, 16), r"B×C×H×W"),
    ],
)
def test_bad_input_raises_a_clear_error(shape, message):
    with pytest.raises(ValueError, match=message):
        MiniNet()(torch.zeros(*shape))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"variant": "es3"}, "variant must be one of"),
        ({"spatial_dims": 3}, "2D network"),
        ({"out_channels": 0}, "out_channels must be >= 1"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MiniNet(**kwargs)
