"""SeRPTrainer: Algorithm 2 iteration, logged components, EMA after the step, SeRP off."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from litenext_monai.engines import SeRPTrainer
from litenext_monai.losses import LiteNeXtLoss
from litenext_monai.networks import EMATargetEncoder, LiteNeXt, ProjectorS


def _loader(n: int = 4, size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        label = (torch.rand(1, size, size, generator=g) > 0.6).float()
        items.append(
            {
                "image": label.repeat(3, 1, 1) + 0.1 * torch.rand(3, size, size, generator=g),
                "label": label,
                "image_weak": torch.rand(3, size, size, generator=g),
            }
        )
    return DataLoader(items, batch_size=2)


def _build(serp: bool, momentum: float = 0.9):
    torch.manual_seed(0)
    net = LiteNeXt(base_channels=4)
    projector = ProjectorS(net.feature_channels, 2) if serp else None
    target = EMATargetEncoder(net.encoder, momentum=momentum) if serp else None
    params = list(net.parameters()) + (list(projector.parameters()) if serp else [])
    optimizer = torch.optim.NAdam(params, lr=1e-3)
    trainer = SeRPTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=_loader(),
        network=net,
        optimizer=optimizer,
        loss_function=LiteNeXtLoss(serp_weight=1.0 if serp else 0.0),
        projector=projector,
        target_encoder=target,
        amp=True,  # CUDA-only: must be switched off silently on CPU
    )
    return trainer, net, target


def test_iteration_outputs_every_component_and_total():
    trainer, _, _ = _build(serp=True)
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output[0]))
    trainer.run()
    assert trainer.amp is False and trainer.scaler is None
    assert len(outputs) == 2
    for out in outputs:
        assert {"image", "label", "pred", "loss", "mwl", "dice", "serp"} <= set(out)
        torch.testing.assert_close(out["loss"], out["mwl"] + out["dice"] + out["serp"])
        assert 0.0 <= float(out["serp"]) <= 2.0


def test_ema_target_moves_after_each_optimizer_step():
    momentum = 0.9
    trainer, net, target = _build(serp=True, momentum=momentum)
    snapshots = {}

    def before(engine):
        snapshots["target"] = [p.detach().clone() for p in target.encoder.parameters()]

    def after(engine):
        # After the step the trainer must have applied phi <- m*phi + (1-m)*theta with the new theta.
        for old, new, theta in zip(
            snapshots["target"], target.encoder.parameters(), net.encoder.parameters()
        ):
            expected = old + (1 - momentum) * (theta.detach() - old)
            torch.testing.assert_close(new, expected, rtol=1e-5, atol=1e-6)
        snapshots["checked"] = snapshots.get("checked", 0) + 1

    trainer.add_event_handler(Events.ITERATION_STARTED, before)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, after)
    trainer.run()
    assert snapshots["checked"] == 2
    moved = any(not torch.equal(a, b) for a, b in zip(target.encoder.parameters(), net.encoder.parameters()))
    assert moved, "target encoder should lag behind the main encoder"


def test_serp_off_trains_supervised_only():
    trainer, net, _ = _build(serp=False)
    before = [p.detach().clone() for p in net.parameters()]
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output[0]))
    trainer.run()
    assert "serp" not in outputs[0]
    torch.testing.assert_close(outputs[0]["loss"], outputs[0]["mwl"] + outputs[0]["dice"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_missing_weak_view_is_a_clear_error():
    trainer, _, _ = _build(serp=True)
    trainer.data_loader = DataLoader(
        [{k: v for k, v in d.items() if k != "image_weak"} for d in _loader().dataset], batch_size=2
    )
    try:
        trainer.run()
    except KeyError as err:
        assert "image_weak" in str(err) and "DualViewd" in str(err)
    else:
        raise AssertionError("expected a KeyError naming the missing weak view")


def test_projector_without_target_is_rejected():
    net = LiteNeXt(base_channels=4)
    try:
        SeRPTrainer(
            "cpu",
            1,
            _loader(),
            net,
            torch.optim.SGD(net.parameters(), 0.1),
            LiteNeXtLoss(),
            projector=ProjectorS(32, 2),
        )
    except ValueError as err:
        assert "both" in str(err)
    else:
        raise AssertionError("expected ValueError")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision is CUDA-only; no CUDA device here")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_on_cuda(dtype):
    torch.manual_seed(0)
    net = LiteNeXt(base_channels=4).cuda()
    projector = ProjectorS(net.feature_channels, 2).cuda()
    target = EMATargetEncoder(net.encoder)
    optimizer = torch.optim.NAdam(list(net.parameters()) + list(projector.parameters()), lr=1e-3)
    trainer = SeRPTrainer(
        "cuda",
        1,
        _loader(),
        net,
        optimizer,
        LiteNeXtLoss(),
        projector=projector,
        target_encoder=target,
        amp=True,
        amp_dtype=dtype,
    )
    losses = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"]))
    )
    trainer.run()
    assert trainer.amp is True
    assert (trainer.scaler is not None) == (dtype == "float16")
    assert all(torch.isfinite(torch.tensor(losses)))
