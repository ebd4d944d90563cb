"""LV-UNet: counts by hand from the spec, train/deploy equivalence, deep-training handler, pretrained file."""

from __future__ import annotations

import math
import pickle
import warnings

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from litenext_monai.engines import DeepTrainingSlopeHandler
from litenext_monai.networks import LVUNet, count_parameters, reparameterize
from tests.networks.helpers import saved_torchscript
from tests.networks.test_cmunext import conv_only_macs, thop_style_macs

# ---- hand arithmetic from the spec's layer list (§3.2–3.4) -------------------------------------

# MobileNetV3-Large features[1..9]: (in, kernel, expanded, out, squeeze-excite width or 0)
_MOBILENET = [
    (16, 3, 16, 16, 0),
    (16, 3, 64, 24, 0),
    (24, 3, 72, 24, 0),
    (24, 5, 72, 40, 24),
    (40, 5, 120, 40, 32),
    (40, 5, 120, 40, 32),
    (40, 3, 240, 80, 0),
    (80, 3, 200, 80, 0),
    (80, 3, 184, 80, 0),
]
# (c, c') of stage[0..2], up1[0..2], up2[0..2], final[0]
_FUSIBLE = [
    (80, 160),
    (160, 240),
    (240, 480),
    (480, 240),
    (240, 160),
    (160, 80),
    (80, 40),
    (40, 24),
    (24, 16),
    (16, 16),
]


def _mobilenet_params(in_ch: int = 3) -> int:
    total = 16 * in_ch * 9 + 2 * 16  # firstconv: bias-free conv + BN
    for c_in, k, c_exp, c_out, se in _MOBILENET:
        if c_exp != c_in:
            total += c_in * c_exp + 2 * c_exp
        total += c_exp * k * k + 2 * c_exp
        if se:
            total += (c_exp * se + se) + (se * c_exp + c_exp)
        total += c_exp * c_out + 2 * c_out
    return total


def _train_block(c: int, c2: int) -> int:
    # conv1 c→c (bias) + BN, conv2 c→c' (bias) + BN, 3×3 depth-wise (no bias) + BN
    return (c * c + c + 2 * c) + (c * c2 + c2 + 2 * c2) + (9 * c2 + 2 * c2)


def _deploy_block(c: int, c2: int) -> int:
    return (c * c2 + c2) + (9 * c2 + c2)


def _expected(deploy: bool, in_ch: int = 3, out_ch: int = 1) -> int:
    block = _deploy_block if deploy else _train_block
    return _mobilenet_params(in_ch) + sum(block(c, c2) for c, c2 in _FUSIBLE) + 16 * out_ch + out_ch


def test_hand_arithmetic_reproduces_the_spec_table():
    assert _mobilenet_params() == 159_952
    assert _train_block(480, 240) == 350_400 and _deploy_block(480, 240) == 117_840
    assert _expected(deploy=False) == 934_545
    assert _expected(deploy=True) == 513_585


@pytest.mark.parametrize("in_channels,out_channels", [(3, 1), (1, 1), (1, 2)])
def test_parameter_counts_train_and_deploy(in_channels, out_channels):
    net = LVUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels)
    assert count_parameters(net) == _expected(False, in_channels, out_channels)
    assert not net.is_deployed
    net.reparameterize()
    assert net.is_deployed
    assert count_parameters(net) == _expected(True, in_channels, out_channels)
    assert count_parameters(
        LVUNet(in_channels=in_channels, out_channels=out_channels, deploy=True)
    ) == _expected(True, in_channels, out_channels)


def test_macs_at_256_match_the_spec():
    net = LVUNet()
    assert round(thop_style_macs(net, (1, 3, 256, 256)) / 1e9, 3) == 0.219  # claimed 0.22 G
    assert round(conv_only_macs(net, (1, 3, 256, 256)) / 1e9, 3) == 0.175
    net.reparameterize()
    assert round(thop_style_macs(net, (1, 3, 256, 256)) / 1e9, 3) == 0.191
    assert round(conv_only_macs(net, (1, 3, 256, 256)) / 1e9, 3) == 0.157


@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape_and_every_parameter_gets_a_gradient(in_channels):
    net = LVUNet(in_channels=in_channels, out_channels=2)
    out = net(torch.randn(2, in_channels, 128, 256))
    assert out.shape == (2, 2, 128, 256)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# ---- train/deploy equivalence --------------------------------------------------------------


def _randomise(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, and non-zero conv biases, everywhere."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


def _train_and_deploy(slope: float, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, LVUNet]:
    torch.manual_seed(0)
    net = _randomise(LVUNet(in_channels=3, out_channels=2)).to(dtype)
    net.set_act_slope(slope)
    net.eval()
    x = torch.randn(2, 3, 128, 128, dtype=dtype)
    with torch.no_grad():
        before = net(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error" if slope == 1.0 else "ignore")
            reparameterize(net)
        after = net(x)
    return before, after, net


def test_deploy_equals_training_form_at_slope_one():
    before, after, net = _train_and_deploy(1.0)
    assert net.is_deployed and after.dtype == torch.float32
    assert before.std() > 0.05  # the outputs are not trivially small, so 1e-4 means something
    assert (after - before).abs().max() <= 1e-4
    before64, after64, _ = _train_and_deploy(1.0, torch.float64)
    assert (after64 - before64).abs().max() <= 1e-10


def test_deploy_differs_at_slope_below_one_and_warns():
    torch.manual_seed(0)
    net = _randomise(LVUNet()).eval()
    net.set_act_slope(0.5)
    with pytest.warns(UserWarning, match=r"slope 0.5 != 1"):
        net.reparameterize()
    before, after, _ = _train_and_deploy(0.5)
    assert (after - before).abs().max() > 1e-3  # 10× the tolerance of the equivalence test


def test_fused_block_by_hand_on_one_block():
    """A fused block equals conv(1×1) → pool → ReLU → DW conv with the formulas of spec §3.6."""
    torch.manual_seed(1)
    net = _randomise(LVUNet(), seed=1).eval()
    block = net.stages[0]
    x = torch.randn(1, 80, 8, 8)
    with torch.no_grad():
        expected = block(x)
        c1, bn1, c2, bn2 = block.conv1[0], block.conv1[1], block.conv2[0], block.conv2[1]
        s1 = bn1.weight / torch.sqrt(bn1.running_var + bn1.eps)
        s2 = bn2.weight / torch.sqrt(bn2.running_var + bn2.eps)
        w1 = s1[:, None] * c1.weight[:, :, 0, 0]
        b1 = s1 * (c1.bias - bn1.running_mean) + bn1.bias
        w2 = s2[:, None] * c2.weight[:, :, 0, 0]
        b2 = s2 * (c2.bias - bn2.running_mean) + bn2.bias
        net.reparameterize()
        fused = net.stages[0]
        torch.testing.assert_close(fused.conv.weight[:, :, 0, 0], w2 @ w1)
        torch.testing.assert_close(fused.conv.bias, w2 @ b1 + b2)
        torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-5)
    assert set(fused.state_dict()) == {"conv.weight", "conv.bias", "act.weight", "act.bias"}


def test_deploy_state_dict_loads_into_deploy_constructor_and_scripts(tmp_path):
    _, after, net = _train_and_deploy(1.0)
    fresh = LVUNet(in_channels=3, out_channels=2, deploy=True)
    fresh.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(fresh.eval()(x), expected)
    loaded = saved_torchscript(fresh, tmp_path)
    exported = torch.export.export(fresh, (x,))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)
        torch.testing.assert_close(exported.module()(x), expected)


def test_training_form_scripts_and_keeps_its_slope(tmp_path):
    net = LVUNet(in_channels=1).eval()
    net.set_act_slope(0.25)
    x = torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        expected = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected)
    # the slope is part of the state dict, so a checkpoint restores the network it was trained as
    restored = LVUNet(in_channels=1)
    restored.load_state_dict(net.state_dict())
    assert restored.act_slope == 0.25


def test_slope_is_the_leaky_relu_between_the_two_convs():
    net = LVUNet().eval()
    block = net.stages[0]
    x = torch.randn(1, 80, 8, 8)
    for slope in (0.0, 0.3):
        net.set_act_slope(slope)
        with torch.no_grad():
            y = nn.functional.leaky_relu(block.conv1(x), slope)
            expected = block.act(block.pool(block.conv2(y)))
            torch.testing.assert_close(block(x), expected)


def test_slope_errors():
    net = LVUNet()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        net.set_act_slope(1.5)
    net.reparameterize()
    net.reparameterize()  # idempotent
    net.set_act_slope(1.0)
    with pytest.raises(RuntimeError, match="already reparameterized"):
        net.set_act_slope(0.5)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 3, 64, 128), r"multiples of 128, got 64×128.*128×128"),
        ((1, 3, 300, 256), r"multiples of 128, got 300×256.*384×256"),
        ((1, 1, 128, 128), r"in_channels=3 but the input has 1 channels"),
    ],
)
def test_bad_input_raises_a_clear_error(shape, message):
    with pytest.raises(ValueError, match=message):
        LVUNet()(torch.zeros(*shape))


# ---- deep-training handler -------------------------------------------------------------------


class _NetworkWrapper(nn.Module):
    """Stand-in for a trainer-side wrapper exposing ``.network`` (like a SeRP wrapper)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network


def _run_schedule(handler_target, net: LVUNet, epochs: int, **kwargs) -> list[float]:
    seen: list[float] = []
    engine = Engine(lambda e, b: None)
    DeepTrainingSlopeHandler(handler_target, **kwargs).attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(net.act_slope))
    engine.run([0, 1], max_epochs=epochs)
    return seen[::2]


def test_handler_applies_cosine_schedule_then_slope_one():
    net = LVUNet()
    slopes = _run_schedule(net, net, epochs=4)
    # a(e) = 1 - cos(pi e / 2E): 0, 1 - cos(pi/8), 1 - cos(pi/4), 1 - cos(3 pi/8)
    expected = [0.0, 1 - 0.9238795325112867, 1 - 0.7071067811865476, 1 - 0.3826834323650898]
    assert slopes == pytest.approx(expected, abs=1e-6)
    assert net.act_slope == 1.0  # set at COMPLETED, before anyone fuses


def test_handler_with_shorter_deep_training_and_through_wrappers():
    net = LVUNet()
    wrapped = _NetworkWrapper(_NetworkWrapper(net))
    slopes = _run_schedule(wrapped, net, epochs=4, max_epochs=2)
    assert slopes == pytest.approx([0.0, 1 - math.cos(math.pi / 4), 1.0, 1.0], abs=1e-6)
    assert net.act_slope == 1.0


def test_handler_unwraps_distributed_data_parallel(tmp_path):
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        net = LVUNet()
        ddp = nn.parallel.DistributedDataParallel(net)
        slopes = _run_schedule(ddp, net, epochs=2)
        assert slopes == pytest.approx([0.0, 1 - math.cos(math.pi / 4)], abs=1e-6)
        assert net.act_slope == 1.0
    finally:
        dist.destroy_process_group()


def test_handler_rejects_a_network_without_deep_training():
    with pytest.raises(TypeError, match="set_act_slope"):
        DeepTrainingSlopeHandler(_NetworkWrapper(nn.Conv2d(1, 1, 1)))


# ---- ImageNet MobileNetV3 weights from a local file ---------------------------------------------

# torchvision MobileNetV3-Large prefix → LV-UNet prefix (spec §3.3)
_PREFIXES = {
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


def _torchvision_layout_file(path, seed: int = 3) -> dict[str, torch.Tensor]:
    """A torchvision-layout MobileNetV3-Large state dict with random values, plus keys to ignore."""
    g = torch.Generator().manual_seed(seed)
    own = LVUNet().state_dict()
    state: dict[str, torch.Tensor] = {}
    for src, dst in _PREFIXES.items():
        for key, value in own.items():
            if key.startswith(dst):
                new = value.clone() if value.dtype == torch.int64 else torch.randn(value.shape, generator=g)
                state[src + key[len(dst) :]] = new
    assert len(state) == 174  # spec §3.3: 174 tensors incl. BN statistics
    state["features.10.block.0.0.weight"] = torch.randn(480, 80, 1, 1)
    state["classifier.0.weight"] = torch.randn(1280, 960)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("in_channels", [3, 1])
def test_pretrained_encoder_from_local_file(tmp_path, in_channels):
    path = tmp_path / "mobilenet_v3_large.pth"
    state = _torchvision_layout_file(path)
    net = LVUNet(in_channels=in_channels, pretrained_path=path)
    loaded = net.state_dict()
    for src, dst in _PREFIXES.items():
        for key, value in state.items():
            if key.startswith(src) and not (key == "features.0.0.weight" and in_channels == 1):
                torch.testing.assert_close(loaded[dst + key[len(src) :]], value)
    if in_channels == 1:  # the RGB kernel summed over colours: same response to a grey image
        torch.testing.assert_close(
            loaded["firstconv.0.weight"], state["features.0.0.weight"].sum(1, keepdim=True)
        )


def test_pretrained_file_errors(tmp_path):
    path = tmp_path / "partial.pth"
    state = _torchvision_layout_file(path)
    del state["features.4.block.2.fc1.weight"]
    torch.save(state, path)
    with pytest.raises(
        ValueError, match=r"partial.pth.*1 encoder tensors missing.*encoder2.1.block.2.fc1.weight"
    ):
        LVUNet(pretrained_path=path)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list.pth: expected a state dict"):
        LVUNet(pretrained_path=tmp_path / "list.pth")
    with open(tmp_path / "pickled.pth", "wb") as f:
        pickle.dump(_NetworkWrapper(nn.Conv2d(1, 1, 1)), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):  # weights_only=True refuses arbitrary objects
        LVUNet(pretrained_path=tmp_path / "pickled.pth")
