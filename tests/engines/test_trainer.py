"""SegmentationTrainer: Algorithm 2 with SeRP, any network with any loss, EMA after the step."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from ignite.handlers import EMAHandler
from monai.engines import PrepareBatchExtraInput, default_prepare_batch
from monai.engines.utils import IterationEvents
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch.utils.data import DataLoader

from litenext_monai.engines import SegmentationTrainer
from litenext_monai.losses import LiteNeXtLoss
from litenext_monai.networks import LiteNeXt, SeRPNetwork


def _loader(n: int = 4, size: int = 32, channels: int = 3) -> DataLoader:  # batches of 2
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        label = (torch.rand(1, size, size, generator=g) > 0.6).float()
        items.append(
            {
                "image": label.repeat(channels, 1, 1) + 0.1 * torch.rand(channels, size, size, generator=g),
                "label": label,
                "label_weight": 0.1 + torch.rand(1, size, size, generator=g),
                "image_weak": torch.rand(channels, size, size, generator=g),
            }
        )
    return DataLoader(items, batch_size=2)


def _build(serp: bool, momentum: float = 0.9, device: str = "cpu", net=None, n: int = 4, **kwargs):
    torch.manual_seed(0)
    net = (LiteNeXt(base_channels=4) if net is None else net).to(device)
    ema = EMAHandler(net.encoder, momentum=1.0 - momentum) if serp else None
    train_net = SeRPNetwork(net, ema.ema_model, 2).to(device) if serp else net
    optimizer = torch.optim.NAdam([p for p in train_net.parameters() if p.requires_grad], lr=1e-3)
    trainer = SegmentationTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=_loader(n),
        network=train_net,
        optimizer=optimizer,
        loss_function=LiteNeXtLoss(serp_weight=1.0 if serp else 0.0),
        prepare_batch=PrepareBatchExtraInput({"weak": "image_weak"}) if serp else default_prepare_batch,
        train_handlers=[ema] if serp else None,
        **kwargs,
    )
    return trainer, net, ema


def _outputs(trainer) -> list[dict]:
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output[0]))
    return outputs


def test_serp_iteration_outputs_every_component_and_total():
    trainer, _, _ = _build(serp=True, amp=True)  # amp is CUDA-only: switched off silently on CPU
    outputs = _outputs(trainer)
    trainer.run()
    assert trainer.amp is False and trainer.scaler is None
    assert len(outputs) == 2
    for out in outputs:
        assert {"image", "label", "pred", "loss", "mwl", "dice", "serp"} <= set(out)
        torch.testing.assert_close(out["loss"], out["mwl"] + out["dice"] + out["serp"])
        assert 0.0 <= float(out["serp"]) <= 2.0


def test_weight_map_from_the_batch_reaches_the_mwl_term():
    trainer, _, _ = _build(serp=False)
    checked = []

    def check(engine):
        out, weights = engine.state.output, engine.state.batch["label_weight"]
        loss = LiteNeXtLoss(serp_weight=0.0)
        pred, label = out["pred"].detach(), out["label"]
        torch.testing.assert_close(out["loss"].detach(), loss(pred, label, weight_map=weights)["loss"])
        assert not torch.allclose(out["loss"].detach(), loss(pred, label)["loss"])
        checked.append(True)

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert len(checked) == 2


def test_ema_target_moves_after_each_optimizer_step():
    momentum = 0.9
    trainer, net, ema = _build(serp=True, momentum=momentum)
    target = ema.ema_model
    snapshots = {}

    def before(engine):
        snapshots["target"] = [p.detach().clone() for p in target.parameters()]

    def after(engine):
        # phi <- alpha*phi + (1-alpha)*theta with the theta of this iteration's optimiser step
        for old, new, theta in zip(snapshots["target"], target.parameters(), net.encoder.parameters()):
            expected = old + (1 - momentum) * (theta.detach() - old)
            torch.testing.assert_close(new, expected, rtol=1e-5, atol=1e-6)
        snapshots["checked"] = snapshots.get("checked", 0) + 1

    trainer.add_event_handler(Events.ITERATION_STARTED, before)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, after)  # after the EMAHandler's own hook
    trainer.run()
    assert snapshots["checked"] == 2
    moved = any(not torch.equal(a, b) for a, b in zip(target.parameters(), net.encoder.parameters()))
    assert moved, "target encoder should lag behind the main encoder"


def test_serp_off_trains_supervised_only():
    trainer, net, _ = _build(serp=False)
    before = [p.detach().clone() for p in net.parameters()]
    outputs = _outputs(trainer)
    trainer.run()
    assert "serp" not in outputs[0]
    torch.testing.assert_close(outputs[0]["loss"], outputs[0]["mwl"] + outputs[0]["dice"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_any_network_with_a_monai_loss():
    torch.manual_seed(0)
    unet = UNet(2, 1, 1, channels=(4, 8), strides=(2,))
    loss = DiceCELoss(sigmoid=True)
    trainer = SegmentationTrainer(
        "cpu", 1, _loader(channels=1), unet, torch.optim.SGD(unet.parameters(), 0.1), loss
    )
    before = [p.detach().clone() for p in unet.parameters()]
    checked = []

    def check(engine):
        # The batch carries an MWL weight map that DiceCELoss does not take: it must not be passed.
        out = engine.state.output
        torch.testing.assert_close(out["loss"].detach(), loss(out["pred"].detach(), out["label"]))
        checked.append(True)

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert len(checked) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, unet.parameters()))


def test_network_extras_need_a_loss_that_takes_them():
    trainer, _, _ = _build(serp=True)
    trainer.loss_function = DiceCELoss(sigmoid=True)
    trainer._loss_keywords = {"input", "target"}
    with pytest.raises(TypeError, match="does not take them"):
        trainer.run()


def test_missing_weak_view_is_a_clear_error():
    trainer, _, _ = _build(serp=True)
    trainer.data_loader = DataLoader(
        [{k: v for k, v in d.items() if k != "image_weak"} for d in _loader().dataset], batch_size=2
    )
    with pytest.raises(KeyError, match="DualViewd"):
        trainer.run()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision is CUDA-only; no CUDA device here")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_on_cuda(dtype):
    trainer, _, _ = _build(serp=True, device="cuda", amp=True, amp_dtype=dtype)
    losses = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"]))
    )
    trainer.run()
    assert trainer.amp is True
    assert (trainer.scaler is not None) == (dtype == "float16")
    assert all(torch.isfinite(torch.tensor(losses)))


def test_ema_moves_once_per_optimizer_step_under_gradient_accumulation():
    """accumulation_steps=2 over 4 iterations: 2 optimiser steps, so exactly 2 EMA updates."""
    lam = 0.3  # EMAHandler momentum (weight of the online encoder)
    trainer, net, ema = _build(serp=True, momentum=1.0 - lam, n=8, accumulation_steps=2)
    phi = [p.detach().clone() for p in ema.ema_model.parameters()]
    stepped = []  # online encoder weights after each REAL optimiser step (torch's own hook)
    trainer.optimizer.register_step_post_hook(
        lambda *_: stepped.append([p.detach().clone() for p in net.encoder.parameters()])
    )
    iterations = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    trainer.run()
    assert iterations == [1, 2, 3, 4] and len(stepped) == 2
    for theta in stepped:  # phi <- (1 - lam) * phi + lam * theta, once per optimiser step
        phi = [(1.0 - lam) * f + lam * t for f, t in zip(phi, theta)]
    for expected, actual in zip(phi, ema.ema_model.parameters()):
        torch.testing.assert_close(actual.detach(), expected, rtol=1e-5, atol=1e-7)


class _BatchNormEncoder(torch.nn.Module):
    """Conv → BatchNorm → Dropout: an encoder whose train mode changes its buffers and outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.drop(self.norm(self.conv(x)))]


class _BatchNormNet(torch.nn.Module):
    """The smallest network SeRP accepts: encoder features, a head and ``feature_channels``."""

    feature_channels = 4

    def __init__(self) -> None:
        super().__init__()
        self.encoder = _BatchNormEncoder()
        self.head = torch.nn.Conv2d(4, 1, 1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(features[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_ema_target_stays_in_eval_mode_while_training():
    # accumulation 2: the first iteration makes no optimiser step, so no EMA update may touch the
    # target; only its own forward (on the weak view) could change its BatchNorm statistics.
    trainer, net, ema = _build(serp=True, net=_BatchNormNet(), accumulation_steps=2)
    target = ema.ema_model
    trainer.network.train()
    assert trainer.network.training and net.training
    assert not target.training and not any(m.training for m in target.modules())
    stats = {k: v.clone() for k, v in target.state_dict().items()}
    online = net.encoder.norm.running_mean.clone()
    seen = []

    def check(engine):
        if engine.state.iteration == 1:
            seen.append(not any(m.training for m in target.modules()))
            for key, value in target.state_dict().items():
                torch.testing.assert_close(value, stats[key], rtol=0, atol=0, msg=key)
            assert not torch.equal(net.encoder.norm.running_mean, online)  # the online BN did train

    trainer.add_event_handler(Events.ITERATION_COMPLETED, check)
    trainer.run()
    assert seen == [True]
    # and the target's output is deterministic (no dropout), as an eval-mode module's is
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(target(x)[0], target(x)[0])


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="float16 GradScaler is CUDA-only; no CUDA device here"
)
def test_ema_skips_the_iteration_whose_float16_step_the_scaler_skipped():
    trainer, net, ema = _build(serp=True, device="cuda", amp=True, amp_dtype="float16", momentum=0.5)
    first = next(p for p in net.encoder.parameters())
    # iteration 1 gets an inf gradient: GradScaler skips that optimiser step (and lowers its scale)
    first.register_hook(lambda g: g * float("inf") if trainer.state.iteration == 1 else g)
    steps, updates = [], []
    trainer.optimizer.register_step_post_hook(lambda *_: steps.append(trainer.state.iteration))
    from litenext_monai.engines.trainer import OptimizerEvents

    trainer.add_event_handler(OptimizerEvents.STEP_COMPLETED, lambda e: updates.append(e.state.iteration))
    before = [p.detach().clone() for p in ema.ema_model.parameters()]
    snapshot = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=1),
        lambda e: snapshot.update(target=[p.detach().clone() for p in ema.ema_model.parameters()]),
    )
    trainer.run()
    assert steps == [2] and updates == [2]  # only iteration 2 really stepped
    for a, b in zip(before, snapshot["target"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # no EMA update after the skipped step
