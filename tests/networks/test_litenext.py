"""LiteNeXt architecture: counts against the spec, shapes, export round-trips and input errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from parameterized import parameterized
from torch.utils.flop_counter import FlopCounterMode

from litenext_monai.networks import LGEMixer, LiteNeXt, count_macs, count_parameters


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _flop_counter_macs(net: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """MACs from torch's own aten-level FLOP counter (2 FLOPs per MAC): an independent oracle."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(*shape))
    return counter.get_total_flops() // 2


# (kwargs, in-shape, parameters, MACs) from spec §1.2 and §4.
COUNT_CASES = [
    ({}, (1, 3, 256, 256), 711_201, 412_273_920),
    ({"in_channels": 1}, (1, 1, 256, 256), 711_073, None),
    ({"kernel_size": 3}, (1, 3, 256, 256), 701_601, None),
]


@parameterized.expand(COUNT_CASES)
def test_parameter_and_mac_counts(kwargs, shape, expected_params, expected_macs):
    # The paper's MAC convention counts the decoder in the paper's order; the default fused order
    # computes the same function with fewer MACs (tests/networks/test_litenext_deploy.py).
    net = LiteNeXt(spatial_dims=2, fused_decoder=False, **kwargs)
    assert _n_params(net) == expected_params
    assert count_parameters(net) == expected_params
    oracle = _flop_counter_macs(net, shape)
    assert count_macs(net, shape) == oracle
    if expected_macs is not None:
        assert oracle == expected_macs
        assert round(oracle / 1e9, 3) == 0.412


def test_paper_counts_per_block():
    net = LiteNeXt()
    assert _n_params(net.encoder) == 243_184
    assert _n_params(net.bottleneck) == 295_680
    assert _n_params(net.context) == 168_176
    assert _n_params(net.head_project) + _n_params(net.head) == 4_144 + 17


@pytest.mark.parametrize("channels,kernel", [(16, 7), (32, 3), (64, 5)])
def test_lgemixer_parameter_formula(channels, kernel):
    assert _n_params(LGEMixer(channels, kernel)) == 10 * channels**2 + kernel**2 * channels + 9 * channels


def test_count_macs_single_conv_by_hand():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (2, 3, 10, 12)) == 2 * 8 * 10 * 12 * 3 * 9
    depthwise = torch.nn.Conv2d(4, 4, 5, padding="same", groups=4)
    assert count_macs(depthwise, (1, 4, 6, 6)) == 4 * 6 * 6 * 25
    assert count_macs(torch.nn.Linear(5, 7), (3, 5)) == 3 * 7 * 5


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("out_channels", [1, 2])
def test_output_shape(in_channels, out_channels):
    net = LiteNeXt(spatial_dims=2, in_channels=in_channels, out_channels=out_channels).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, 64, 96))
    assert out.shape == (2, out_channels, 64, 96)


def test_features_and_head_compose_forward():
    net = LiteNeXt(base_channels=8).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = net.forward_features(x)
        assert [tuple(f.shape) for f in features] == [
            (1, 8, 32, 32),
            (1, 16, 16, 16),
            (1, 32, 8, 8),
            (1, 64, 4, 4),
        ]
        assert net.feature_channels == 64
        torch.testing.assert_close(net.forward_head(features), net(x))


def test_channel_layernorm_normalises_each_pixel_over_channels():
    net = LiteNeXt()
    norm = net.encoder.stem[1]
    x = torch.randn(2, 16, 5, 7) * 3 + 1
    y = norm(x)
    # Independent formula: per pixel, over channels, biased variance, eps 1e-5.
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5))


def test_gcf_weights_are_softmax_across_scales():
    net = LiteNeXt(base_channels=4).eval()
    gcf = net.context
    feats = net.forward_features(torch.randn(1, 3, 32, 32))
    decoded = net.bottleneck(feats[-1])
    # Zero the LN affine of the values of scales 2-4 (GELU(0) = 0): the context is alpha_1 * V_1.
    for proj in list(gcf.values)[1:]:
        torch.nn.init.zeros_(proj.project[1].weight)
        torch.nn.init.zeros_(proj.project[1].bias)
    out = gcf(feats, decoded)
    query = gcf.query(torch.amax(decoded, (2, 3), keepdim=True) + decoded.mean((2, 3), keepdim=True)).flatten(
        1
    )
    scores = []
    for key_mlp, f in zip(gcf.keys, feats):
        pooled = torch.amax(f, (2, 3), keepdim=True) + f.mean((2, 3), keepdim=True)
        scores.append(gcf.score(torch.cat([key_mlp(pooled).flatten(1), query], 1)))
    s = torch.stack(scores, 1)
    alpha1 = torch.exp(s[:, 0]) / torch.exp(s).sum(1)
    v1 = gcf.values[0](feats[0])
    torch.testing.assert_close(out[:, : v1.shape[1]], alpha1[:, :, None, None] * v1)


def test_torchscript_and_export_round_trip(tmp_path):
    net = LiteNeXt(in_channels=1, out_channels=2).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        expected = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, str(tmp_path / "net.ts"))
        loaded = torch.jit.load(str(tmp_path / "net.ts"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)
    exported = torch.export.export(net, (x,))
    torch.export.save(exported, str(tmp_path / "net.pt2"))
    reloaded = torch.export.load(str(tmp_path / "net.pt2"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.module()(x), expected)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 3, 250, 256), r"multiples of 16, got 250×256.*256×256"),
        ((1, 3, 64, 40), r"multiples of 16, got 64×40.*64×48"),
        ((1, 1, 64, 64), r"in_channels=3 but the input has 1 channels"),
        ((3, 64, 64), r"B×C×H×W"),
    ],
)
def test_bad_input_shapes_raise(shape, message):
    net = LiteNeXt()
    with pytest.raises(ValueError, match=message):
        net(torch.zeros(*shape))


@pytest.mark.parametrize(
    "kwargs", [{"spatial_dims": 3}, {"in_channels": 0}, {"out_channels": 0}, {"kernel_size": 4}]
)
def test_bad_constructor_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        LiteNeXt(**kwargs)
