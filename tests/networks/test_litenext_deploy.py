"""LiteNeXt's exact re-orderings: the fused training-form decoder and the deploy form.

The oracle is the paper's order (``fused_decoder=False``): the GCF builds the four upsampled
D-channel values and the 2D-channel concatenation, then the head projects and upsamples. Every
other form must give the same logits (and, for the training form, gradients) within float32
rounding, on weights far from initialisation.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from litenext_monai.losses import LiteNeXtLoss
from litenext_monai.networks import LiteNeXt, reparameterize

TOL = 1e-5


def _randomise_(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial LayerNorm affines and biases (at init they are 1 and 0, which hides mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=gen) - 0.5)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.mul_(1.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=gen) * 0.4 - 0.2)
    return net


def _pair(**kwargs) -> tuple[LiteNeXt, LiteNeXt]:
    torch.manual_seed(0)
    paper = _randomise_(LiteNeXt(fused_decoder=False, **kwargs))
    other = LiteNeXt(**kwargs)
    other.load_state_dict(paper.state_dict())
    return paper, other


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


@pytest.mark.parametrize("kwargs", [{}, {"in_channels": 1, "out_channels": 2, "kernel_size": 3}])
def test_fused_training_form_equals_paper_order_in_value_and_gradient(kwargs):
    paper, fused = _pair(**kwargs)
    x = torch.randn(2, paper.in_channels, 64, 96)
    out_paper, out_fused = paper(x), fused(x)
    assert out_fused.shape == (2, paper.out_channels, 64, 96)
    assert out_paper.abs().max() > 0.1  # a meaningful, non-degenerate output
    assert _max_diff(out_paper, out_fused) <= TOL
    target = torch.randn_like(out_paper)
    ((out_paper - target) ** 2).mean().backward()
    ((out_fused - target) ** 2).mean().backward()
    for (name, p_paper), p_fused in zip(paper.named_parameters(), fused.parameters()):
        # Some gradients are exactly zero in exact arithmetic (biases right before a LayerNorm):
        # float noise of ~1e-8 there is not a discrepancy, hence the absolute floor.
        bound = 1e-4 * float(p_paper.grad.abs().max()) + 1e-6
        assert _max_diff(p_paper.grad, p_fused.grad) <= bound, name


def test_fused_decoder_keeps_parameters_and_executes_fewer_macs():
    paper, fused = _pair()
    assert sum(p.numel() for p in fused.parameters()) == 711_201
    assert fused.state_dict().keys() == paper.state_dict().keys()
    counts = []
    for net in (paper, fused):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 3, 256, 256))
        counts.append(counter.get_total_flops() // 2)
    assert counts[0] == 412_273_920
    assert counts[1] < counts[0]


@pytest.mark.parametrize("shape", [(2, 3, 64, 96), (1, 3, 128, 128), (3, 3, 32, 32)])
def test_deploy_form_equals_training_form_on_random_weights(shape):
    paper, deploy = _pair()
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = paper(x)
    assert reparameterize(deploy) is deploy
    assert deploy.deployed and deploy.context.score is None and not deploy.training
    # No training-form state_dict entry can load into a folded layer by name.
    folded = {k for k in deploy.state_dict() if k.startswith(("context.key_scores", "context.query_score"))}
    assert len(folded) == 20 and not folded & set(paper.state_dict())
    with torch.inference_mode():
        got = deploy(x)
    assert got.shape == expected.shape and got.is_contiguous()
    assert _max_diff(expected, got) <= TOL
    deploy.reparameterize()  # a second call is a no-op
    with torch.no_grad():
        assert _max_diff(expected, deploy(x)) <= TOL


def test_deploy_form_equals_training_form_after_training():
    torch.manual_seed(1)
    net = LiteNeXt(fused_decoder=False, base_channels=8)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    loss_fn = LiteNeXtLoss(serp_weight=0.0)
    x = torch.rand(2, 3, 32, 32)
    y = (x[:, :1] > 0.5).float()
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    for _ in range(6):
        optimizer.zero_grad()
        loss_fn(net(x), y)["loss"].backward()
        optimizer.step()
    moved = {k: float((v - initial[k]).abs().max()) for k, v in net.state_dict().items()}
    # Every LayerNorm affine left its initial 1/0 (biases right before a LayerNorm get no gradient).
    norms = [k for k in moved if k.endswith((".1.weight", ".1.bias")) and initial[k].ndim == 1]
    assert len(norms) > 40 and all(moved[k] > 1e-3 for k in norms)
    net.eval()
    test_x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        expected = net(test_x)
    net.reparameterize()
    with torch.no_grad():
        assert _max_diff(expected, net(test_x)) <= TOL


def test_deploy_form_torchscript_and_onnx_runtime(tmp_path):
    """The paths of the bundle's ``ckpt_export`` and ``onnx_export --use_trace True`` (dynamo off)."""
    ort = pytest.importorskip("onnxruntime")
    from monai.networks.utils import convert_to_onnx, convert_to_torchscript

    paper, deploy = _pair(in_channels=1)
    reparameterize(deploy)
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        expected = paper(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_to_torchscript(deploy, filename_or_obj=str(tmp_path / "net.ts"))
        loaded = torch.jit.load(str(tmp_path / "net.ts"))
        convert_to_onnx(
            deploy,
            inputs=[x],
            input_names=["image"],
            output_names=["logits"],
            filename=str(tmp_path / "net.onnx"),
            use_trace=True,
            dynamo=False,
            opset_version=17,
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    with torch.no_grad():
        assert _max_diff(expected, loaded(x)) <= TOL
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    for batch in (x, x[:1]):
        (onnx_out,) = session.run(None, {"image": batch.numpy()})
        assert np.abs(onnx_out - expected[: batch.shape[0]].numpy()).max() <= TOL


def test_deploy_form_torch_export_with_free_batch(tmp_path):
    """MLflow logs the deploy form with ``torch.export`` and a free batch dimension."""
    paper, deploy = _pair()
    reparameterize(deploy)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(deploy, (torch.randn(2, 3, 64, 64),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(exported, str(tmp_path / "net.pt2"))
    module = torch.export.load(str(tmp_path / "net.pt2")).module()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert _max_diff(paper(x), module(x)) <= TOL


def test_training_steps_are_identical_for_the_same_seed():
    def train() -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        net = LiteNeXt(base_channels=4)
        optimizer = torch.optim.NAdam(net.parameters(), lr=1e-2)
        x = torch.rand(2, 3, 32, 32)
        y = (torch.rand(2, 1, 32, 32) > 0.5).float()
        for _ in range(3):
            optimizer.zero_grad()
            LiteNeXtLoss(serp_weight=0.0)(net(x), y)["loss"].backward()
            optimizer.step()
        return net.state_dict()

    first, second = train(), train()
    assert all(torch.equal(first[k], second[k]) for k in first)


_FAULTS_SCRIPT = """
import resource, sys, torch
import litenext_monai.networks.litenext as litenext
torch.set_num_threads(1)
if sys.argv[1] == "off":
    litenext._malloc_thresholds_raised = True  # pretend it already ran: glibc keeps its defaults
net = litenext.LiteNeXt().eval()
net.reparameterize()
x = torch.rand(1, 3, 256, 256)
with torch.inference_mode():
    for _ in range(3):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        net(x)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc page-fault behaviour (Linux only)")
def test_raised_malloc_thresholds_stop_page_faults_of_inference():
    """The default-on allocator fix, counted in minor page faults per forward pass (not time)."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("needs glibc")
    if any(name.startswith("MALLOC_") for name in os.environ):
        pytest.skip("MALLOC_* environment tuning is set, which hides the default behaviour")
    faults = {}
    for mode in ("on", "off"):
        result = subprocess.run(
            [sys.executable, "-c", _FAULTS_SCRIPT, mode],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        faults[mode] = float(result.stdout.strip().splitlines()[-1])
    assert faults["off"] > 300, faults  # MiB-sized activations faulted in again on every pass
    assert faults["on"] < faults["off"] / 10, faults


@pytest.mark.parametrize("c_in,d", [(16, 128), (3, 8)])
def test_folded_value_projection_equals_conv_layernorm_gelu(c_in, d):
    from litenext_monai.networks.blocks import ProjectUp

    value = _randomise_(ProjectUp(c_in, d, scale=2), seed=c_in).eval()
    x = torch.randn(2, c_in, 12, 20, generator=torch.Generator().manual_seed(1)) * 3 + 1
    # Scaled like a trained head (outputs of order 1), so float32 rounding stays well under TOL.
    matrix = torch.randn(2, d, 5, generator=torch.Generator().manual_seed(2)) / d**0.5
    conv, norm = value.project[0], value.project[1]
    with torch.no_grad():
        # Oracle written from the definitions: 1×1 conv, LayerNorm over channels, exact GELU, per-image map.
        y = torch.einsum("bchw,dc->bhwd", x, conv.weight[:, :, 0, 0]) + conv.bias
        mean, var = y.mean(-1, keepdim=True), y.var(-1, unbiased=False, keepdim=True)
        h = torch.nn.functional.gelu((y - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias)
        expected = torch.einsum("bhwd,bdn->bnhw", h, matrix)
        assert value.fold_norm() and value.norm_folded
        for tile in (0, 64):
            actual = value.project_linear(x, matrix, tile)
            np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=TOL, atol=TOL)
    wide = ProjectUp(8, 8, scale=1)
    assert not wide.fold_norm() and not wide.norm_folded  # c + 1 ≥ D: nothing to gain, left as is
