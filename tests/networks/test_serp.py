"""SeRP training-only modules: projector shapes, stop-gradient routing and the EMA update."""

from __future__ import annotations

import torch

from litenext_monai.networks import EMATargetEncoder, LiteNeXt, ProjectorS, ProjectorT


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
    target = EMATargetEncoder(net.encoder)
    assert sum(p.numel() for p in target.parameters()) == 243_184
    names = set(net.state_dict())
    assert not any("projector" in n or "target" in n for n in names)
    assert sum(p.numel() for p in net.parameters()) == 711_201


def test_target_encoder_gets_no_gradient_and_serp_reaches_main_encoder_only():
    net = LiteNeXt(base_channels=4)
    target = EMATargetEncoder(net.encoder, momentum=0.9)
    proj_s, proj_t = ProjectorS(net.feature_channels, 2), ProjectorT()
    strong, weak = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    e_m = proj_s(net.forward_features(strong)[-1])
    e_t = proj_t(target(weak)[-1])
    assert not e_t.requires_grad
    loss = (1 - torch.nn.functional.cosine_similarity(e_m, e_t)).mean()
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(not p.requires_grad for p in target.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())
    assert all(p.grad is None for p in net.bottleneck.parameters())
    assert all(p.grad is not None for p in proj_s.parameters())


def test_one_ema_step_moves_target_by_one_minus_momentum_times_difference():
    momentum = 0.99
    net = LiteNeXt(base_channels=4)
    target = EMATargetEncoder(net.encoder, momentum=momentum)
    for p_main, p_target in zip(net.encoder.parameters(), target.encoder.parameters()):
        torch.testing.assert_close(p_main, p_target)
        assert p_main.data_ptr() != p_target.data_ptr()
    with torch.no_grad():
        for p in net.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [p.detach().clone() for p in target.encoder.parameters()]
    main = [p.detach().clone() for p in net.encoder.parameters()]
    target.update(net.encoder)
    for old, new, theta in zip(before, target.encoder.parameters(), main):
        torch.testing.assert_close(new - old, (1 - momentum) * (theta - old), rtol=1e-5, atol=1e-6)


def test_momentum_bounds():
    net = LiteNeXt(base_channels=4)
    for bad in (-0.1, 1.5):
        try:
            EMATargetEncoder(net.encoder, momentum=bad)
        except ValueError:
            continue
        raise AssertionError(f"momentum {bad} was accepted")
