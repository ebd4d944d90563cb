"""Every seed network takes ``out_channels``: N logit maps, kept by the deploy form where one exists."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from litenext_monai.networks import CMUNeXtXXS, LiteNeXt, LVUNet, MiniNet, reparameterize

OUT = 3


def _randomise_batchnorm(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine terms, so a fusion that ignored them would be caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))


BUILDERS = {
    "litenext": (lambda: LiteNeXt(in_channels=1, out_channels=OUT), 64),
    "cmunext_xxs": (lambda: CMUNeXtXXS(in_channels=1, out_channels=OUT), 64),
    "mini_net": (lambda: MiniNet(in_channels=1, out_channels=OUT), 64),
    "lv_unet": (lambda: LVUNet(in_channels=1, out_channels=OUT), 128),
    "monai_unet": (
        lambda: UNet(2, 1, OUT, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2),
        64,
    ),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_out_channels_gives_n_logit_maps_in_training_and_deploy_form(name):
    build, size = BUILDERS[name]
    torch.manual_seed(0)
    net = build()
    _randomise_batchnorm(net)
    net.eval()
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        train_out = net(x)
    assert train_out.shape == (2, OUT, size, size)
    assert getattr(net, "out_channels", OUT) == OUT
    # the maps differ from each other (three heads, not one broadcast)
    assert not torch.allclose(train_out[:, 0], train_out[:, 1])
    deploy = reparameterize(copy.deepcopy(net))
    with torch.no_grad():
        deploy_out = deploy(x)
    assert deploy_out.shape == (2, OUT, size, size)
    scale = float(train_out.abs().max())
    assert float((deploy_out - train_out).abs().max()) <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("name", ["litenext", "lv_unet"])
def test_deploy_form_really_changes_structure_and_keeps_the_head_width(name):
    build, _ = BUILDERS[name]
    net = reparameterize(build())
    head = net.final[1] if name == "lv_unet" else net.head
    assert head.out_channels == OUT
    if name == "lv_unet":
        assert net.is_deployed
        rebuilt = LVUNet(in_channels=1, out_channels=OUT, deploy=True)
        rebuilt.load_state_dict(net.state_dict())  # the deploy constructor keeps the width too
    else:
        assert net.deployed
