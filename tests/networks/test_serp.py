"""SeRP training-only modules: projector shapes, the SeRPNetwork wrapper, stop-gradient routing."""

from __future__ import annotations

import pytest
import torch
from ignite.handlers import EMAHandler
from monai.networks.nets import UNet

from litenext_monai.networks import LiteNeXt, ProjectorS, ProjectorT, SeRPNetwork


def _serp(base_channels: int = 4, momentum: float = 0.1) -> tuple[SeRPNetwork, LiteNeXt, EMAHandler]:
    net = LiteNeXt(base_channels=base_channels)
    ema = EMAHandler(net.encoder, momentum=momentum)
    return SeRPNetwork(net, ema.ema_model, hidden_channels=2), net, ema


def test_projector_shapes_and_parameters():
    proj_s = ProjectorS(128, 8)
    assert sum(p.numel() for p in proj_s.parameters()) == 2 * 128 * 8
    assert sum(p.numel() for p in ProjectorS(128, 8, bias=True).parameters()) == 2_184
    assert sum(p.numel() for p in ProjectorS(128, 1024, bias=True).parameters()) == 263_296
    assert list(ProjectorT().parameters()) == []
    f = torch.randn(3, 128, 4, 4)
    assert proj_s(f).shape == (3, 128)
    torch.testing.assert_close(ProjectorT()(f), f.mean((2, 3)) + f.amax((2, 3)))


def test_training_only_modules_are_not_in_the_inference_network():
    net = LiteNeXt()
    wrapper = SeRPNetwork(net, EMAHandler(net.encoder, momentum=0.01).ema_model)
    # encoder copy 243,184 + projector 2·128·8 on top of the 711,201 of the network
    assert sum(p.numel() for p in wrapper.parameters()) == 711_201 + 243_184 + 2 * 128 * 8
    assert sum(p.numel() for p in wrapper.parameters() if p.requires_grad) == 711_201 + 2 * 128 * 8
    names = set(net.state_dict())
    assert not any("projector" in n or "target" in n for n in names)
    assert sum(p.numel() for p in net.parameters()) == 711_201


def test_forward_without_weak_view_is_the_network():
    wrapper, net, _ = _serp()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(wrapper(x), net(x))


def test_embeddings_and_stop_gradient():
    wrapper, net, ema = _serp()
    strong, weak = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    out = wrapper(strong, weak=weak)
    assert set(out) == {"pred", "online_embedding", "target_embedding"}
    torch.testing.assert_close(out["pred"], net(strong))
    features = net.forward_features(strong)[-1]
    torch.testing.assert_close(out["online_embedding"], wrapper.projector(features))
    # ProjectorT of the target's deepest map, by hand: GAP + GMP
    deepest = ema.ema_model(weak)[-1]
    torch.testing.assert_close(out["target_embedding"], deepest.mean((2, 3)) + deepest.amax((2, 3)))
    assert not out["target_embedding"].requires_grad
    loss = (
        1 - torch.nn.functional.cosine_similarity(out["online_embedding"], out["target_embedding"])
    ).mean()
    loss.backward()
    assert all(p.grad is None for p in wrapper.target_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())
    assert all(p.grad is None for p in net.bottleneck.parameters())
    assert all(p.grad is not None for p in wrapper.projector.parameters())


def test_network_without_encoder_features_is_rejected():
    unet = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    with pytest.raises(TypeError, match="--serp False"):
        SeRPNetwork(unet, torch.nn.Identity())
