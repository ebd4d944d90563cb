"""LV-UNet: counts by hand from the spec, train/deploy equivalence, deep-training handler, pretrained file."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from litenext_monai.engines import DeepTrainingSlopeHandler
from litenext_monai.networks import LVUNet, count_parameters, reparameterize
from litenext_monai.networks.lvunet import imagenet_weights_path
from tests.networks.helpers import saved_torchscript
from tests.networks.test_cmunext import conv_only_macs, thop_style_macs

REPO = Path(__file__).resolve().parents[2]

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


# ---- pretrained=True through torch.hub, BN momentum, ImageNet normalisation ---------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's constants
WEIGHTS_FILE = "mobilenet_v3_large-8738ca79.pth"


def _bn_keys(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    keys = {f"{prefix}{n}": (channels,) for n in ("weight", "bias", "running_mean", "running_var")}
    keys[f"{prefix}num_batches_tracked"] = ()
    return keys


def _torchvision_key_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision's MobileNetV3-Large ``features.0..9`` keys and shapes, from the architecture table.

    Independent of LVUNet's modules: stem ``features.0.{0 conv,1 BN}``; block ``i`` has ``block.j``
    = [1×1 expand] (when expanded ≠ in), k×k depth-wise, [SE fc1/fc2], 1×1 project (spec §3.3).
    """
    shapes = {"features.0.0.weight": (16, 3, 3, 3), **_bn_keys("features.0.1.", 16)}
    for i, (c_in, k, exp, c_out, se) in enumerate(_MOBILENET, start=1):
        j, base = 0, f"features.{i}.block."
        if exp != c_in:
            shapes[f"{base}{j}.0.weight"] = (exp, c_in, 1, 1)
            shapes.update(_bn_keys(f"{base}{j}.1.", exp))
            j += 1
        shapes[f"{base}{j}.0.weight"] = (exp, 1, k, k)
        shapes.update(_bn_keys(f"{base}{j}.1.", exp))
        j += 1
        if se:
            shapes[f"{base}{j}.fc1.weight"], shapes[f"{base}{j}.fc1.bias"] = (se, exp, 1, 1), (se,)
            shapes[f"{base}{j}.fc2.weight"], shapes[f"{base}{j}.fc2.bias"] = (exp, se, 1, 1), (exp,)
            j += 1
        shapes[f"{base}{j}.0.weight"] = (c_out, exp, 1, 1)
        shapes.update(_bn_keys(f"{base}{j}.1.", c_out))
    return shapes


def _synthetic_imagenet_state(seed: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _torchvision_key_shapes().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g)
    state["features.10.block.0.0.weight"] = torch.randn(480, 80, 1, 1)  # later blocks: ignored
    state["classifier.3.weight"] = torch.randn(1000, 1280)
    return state


def test_torchvision_key_layout_has_the_spec_count():
    assert len(_torchvision_key_shapes()) == 174  # spec §3.3


@pytest.mark.parametrize("in_channels", [3, 1])
def test_pretrained_true_loads_the_cached_torch_hub_file(tmp_path, monkeypatch, in_channels):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = _synthetic_imagenet_state()
    torch.save(state, cache / WEIGHTS_FILE)  # a cached file is used without any network access
    net = LVUNet(in_channels=in_channels, pretrained=True)
    loaded = net.state_dict()
    for src, dst in _PREFIXES.items():
        for key, value in state.items():
            if key.startswith(src) and key != "features.0.0.weight":
                torch.testing.assert_close(loaded[dst + key[len(src) :]], value)
    stem = state["features.0.0.weight"]
    if in_channels == 1:  # oracle: the sum of the R, G and B kernels
        expected = stem[:, 0:1] + stem[:, 1:2] + stem[:, 2:3]
    else:
        expected = stem
    torch.testing.assert_close(loaded["firstconv.0.weight"], expected)
    assert net.display_name == "LV-UNet (ImageNet)" and net.encoder_weights == "imagenet"
    assert net.imagenet_normalization and net.encoder_bn_momentum == 0.01
    # the same as the local-file path
    torch.save(state, tmp_path / "local.pth")
    other = LVUNet(in_channels=in_channels, pretrained_path=tmp_path / "local.pth")
    for key, value in other.state_dict().items():
        if key.startswith(("firstconv", "encoder", "input_")):
            torch.testing.assert_close(loaded[key], value)


def test_pretrained_true_offline_names_the_file_to_place(tmp_path):
    # A real urllib download attempt through an unreachable proxy (closed loopback port): offline on
    # any machine, fast, and nothing is downloaded even where network exists.
    torch_home = tmp_path / "torch_home"
    env = {
        **os.environ,
        "TORCH_HOME": str(torch_home),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "",
        "no_proxy": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    code = "from litenext_monai.networks import LVUNet\nLVUNet(pretrained=True)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    expected_path = torch_home / "hub" / "checkpoints" / WEIGHTS_FILE
    assert "RuntimeError: LVUNet(pretrained=True) could not obtain" in proc.stderr
    assert str(expected_path) in proc.stderr
    assert "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth" in proc.stderr
    assert "pretrained_path=" in proc.stderr
    assert not expected_path.exists()


def test_imagenet_weights_path_follows_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert imagenet_weights_path() == tmp_path / "hub" / "checkpoints" / WEIGHTS_FILE


def _encoder_bns(net: LVUNet) -> list[nn.BatchNorm2d]:
    parts = (net.firstconv, net.encoder1, net.encoder2, net.encoder3)
    return [m for p in parts for m in p.modules() if isinstance(m, nn.BatchNorm2d)]


def test_encoder_bn_momentum_follows_the_initialisation(tmp_path):
    scratch = LVUNet()
    assert scratch.encoder_bn_momentum == 0.1 and not scratch.imagenet_normalization
    assert {bn.momentum for bn in _encoder_bns(scratch)} == {0.1}
    torch.save(_synthetic_imagenet_state(), tmp_path / "w.pth")
    pretrained = LVUNet(pretrained_path=tmp_path / "w.pth")
    assert {bn.momentum for bn in _encoder_bns(pretrained)} == {0.01}
    explicit = LVUNet(encoder_bn_momentum=0.05)
    assert {bn.momentum for bn in _encoder_bns(explicit)} == {0.05}
    with pytest.raises(ValueError, match="encoder_bn_momentum"):
        LVUNet(encoder_bn_momentum=1.5)
    # eval-mode statistics keep up from scratch: one train-mode batch moves the running mean by 10 %
    net = LVUNet()
    x = torch.rand(2, 3, 128, 128) + 2.0
    net.train()(x)
    bn = net.firstconv[1]
    with torch.no_grad():
        batch_mean = net.firstconv[0](x).mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, 0.1 * batch_mean, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("in_channels", [3, 1])
def test_imagenet_normalisation_inside_the_network(tmp_path, in_channels):
    torch.save(_synthetic_imagenet_state(), tmp_path / "w.pth")
    net = LVUNet(in_channels=in_channels, pretrained_path=tmp_path / "w.pth").eval()
    plain = LVUNet(in_channels=in_channels, imagenet_normalization=False).eval()
    plain.load_state_dict(net.state_dict(), strict=False)
    if in_channels == 3:
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    else:  # grey: the RGB statistics averaged, to match the summed stem kernel
        mean, std = torch.tensor([sum(IMAGENET_MEAN) / 3]), torch.tensor([sum(IMAGENET_STD) / 3])
    x = torch.rand(2, in_channels, 128, 128)
    with torch.no_grad():
        expected = plain((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    assert {"input_mean", "input_std"} <= net.state_dict().keys()
    assert not {"input_mean", "input_std"} & plain.state_dict().keys()  # old checkpoints still load


def test_pretrained_network_rebuilds_from_model_json_without_download(tmp_path):
    from litenext_monai.engines import network_config

    torch.save(_synthetic_imagenet_state(), tmp_path / "w.pth")
    net = LVUNet(in_channels=1, out_channels=2, pretrained_path=tmp_path / "w.pth").eval()
    config = network_config(net)
    assert not config.get("pretrained") and "pretrained_path" not in config  # inference never downloads
    assert config["imagenet_normalization"] is True and config["encoder_bn_momentum"] == 0.01
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    rebuilt = LVUNet(**kwargs).eval()
    rebuilt.load_state_dict(net.state_dict())
    x = torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(rebuilt(x), expected)
        # deploy and TorchScript keep the normalisation (random N(0, 1) encoder weights give logits
        # of ~1e6, so the fusion's float32 rounding is compared relative to their scale)
        deployed = reparameterize(rebuilt)
        scale = float(expected.abs().max())
        assert float((deployed(x) - expected).abs().max()) <= 1e-5 * scale
    scripted = saved_torchscript(deployed, tmp_path)
    with torch.no_grad():
        assert float((scripted(x) - expected).abs().max()) <= 1e-5 * scale
        plain = LVUNet(in_channels=1, out_channels=2, imagenet_normalization=False, deploy=True).eval()
        plain.load_state_dict(deployed.state_dict(), strict=False)
        assert float((plain(x) - expected).abs().max()) > 1e-3 * scale  # the normalisation matters
