"""Ignite trainer for LiteNeXt with Self-embedding Representation Parallel (paper Algorithm 2)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.trainer import Trainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn

from litenext_monai.networks.serp import EMATargetEncoder, ProjectorT

__all__ = ["SeRPTrainer"]

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


class SeRPTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose iteration is LiteNeXt's Algorithm 2.

    One iteration: the strong view goes through the main network (encoder features and logits)
    and ``projector`` (ProjectorS); the weak view goes through the EMA ``target_encoder`` without
    autograd and ProjectorT; ``loss_function`` combines SeRP, the supervised term and Dice; then
    backward, optimiser step and the EMA update ``φ ← α·φ + (1 − α)·θ`` after the step.

    SeRP runs when both ``projector`` and ``target_encoder`` are given and the loss gives it a
    non-zero weight; otherwise the iteration is plain supervised training of the same network.

    ``engine.state.output`` holds ``image``, ``label``, ``pred`` (logits), ``loss`` and every
    component the loss returns (``mwl``, ``dice``, ``serp``, …) so handlers can log them.

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: loader of dictionaries with ``image_key``, ``label_key`` and, for
            SeRP, ``weak_image_key``; ``weight_map_key`` (an MWL weight map) is used if present.
        network: a :class:`~litenext_monai.networks.LiteNeXt` (``forward_features``/``forward_head``).
        optimizer: optimiser over the network's and the projector's parameters.
        loss_function: a :class:`~litenext_monai.losses.LiteNeXtLoss` (called with keyword
            arguments ``weight_map``, ``online_embedding``, ``target_embedding``; returns a dict
            with ``"loss"``) or any ``loss(pred, target)`` returning a tensor.
        projector: ProjectorS of the main branch, or None to train without SeRP.
        target_encoder: the EMA target encoder, or None to train without SeRP.
        image_key, label_key, weak_image_key, weight_map_key: batch keys.
        amp: mixed precision. Only on CUDA; on other devices it is switched off (logged, no warning).
        amp_dtype: ``"bfloat16"`` (no gradient scaling) or ``"float16"`` (with a GradScaler).
        kwargs: any other ``SupervisedTrainer`` argument (``train_handlers``, ``key_train_metric``,
            ``postprocessing``, ``epoch_length``, ``accumulation_steps`` …).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        projector: nn.Module | None = None,
        target_encoder: EMATargetEncoder | None = None,
        image_key: str = Keys.IMAGE,
        label_key: str = Keys.LABEL,
        weak_image_key: str = "image_weak",
        weight_map_key: str = "label_weight",
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        **kwargs: Any,
    ) -> None:
        if amp_dtype not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(_AMP_DTYPES)}, got {amp_dtype!r}.")
        if (projector is None) != (target_encoder is None):
            raise ValueError("SeRP needs both a projector and a target_encoder (or neither).")
        use_amp = bool(amp) and torch.device(device).type == "cuda"
        if amp and not use_amp:
            logger.info("Mixed precision is CUDA-only; training in float32 on %s.", device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            amp=use_amp,
            amp_kwargs={"dtype": _AMP_DTYPES[amp_dtype]},
            **kwargs,
        )
        self.amp_dtype = amp_dtype
        self.projector = projector
        self.target_encoder = target_encoder
        self.target_projector = ProjectorT()
        self.image_key, self.label_key = image_key, label_key
        self.weak_image_key, self.weight_map_key = weak_image_key, weight_map_key

    @property
    def serp_enabled(self) -> bool:
        """Whether this trainer computes the SeRP branch."""
        weight = getattr(self.loss_function, "serp_weight", 1.0)
        return self.projector is not None and self.target_encoder is not None and weight > 0

    def run(self) -> None:  # type: ignore[override]
        # Trainer.run builds the deprecated torch.cuda.amp.GradScaler for any AMP; bf16 needs none.
        use_scaler = self.amp and self.amp_dtype == "float16"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        super(Trainer, self).run()

    def _to_device(self, value: torch.Tensor) -> torch.Tensor:
        return value.to(self.state.device, non_blocking=self.non_blocking, **self.to_kwargs)

    def _compute_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        network = _unwrap(self.network)
        images = self._to_device(batch[self.image_key])
        labels = self._to_device(batch[self.label_key])
        self.state.output = {Keys.IMAGE: images, Keys.LABEL: labels}
        features = network.forward_features(images)
        pred = network.forward_head(features)
        self.state.output[Keys.PRED] = pred
        self.fire_event(IterationEvents.FORWARD_COMPLETED)

        if not isinstance(self.loss_function, nn.Module) or not hasattr(self.loss_function, "serp_weight"):
            return {"loss": self.loss_function(pred, labels).mean()}
        kwargs: dict[str, torch.Tensor] = {}
        if self.weight_map_key in batch:
            kwargs["weight_map"] = self._to_device(batch[self.weight_map_key])
        if self.serp_enabled:
            if self.weak_image_key not in batch:
                raise KeyError(
                    f"SeRP is on but the batch has no weak view {self.weak_image_key!r}; "
                    "add the DualViewd transform to the training pipeline or disable SeRP."
                )
            kwargs["online_embedding"] = self.projector(features[-1])
            with torch.no_grad():
                weak = self._to_device(batch[self.weak_image_key])
                kwargs["target_embedding"] = self.target_projector(self.target_encoder(weak)[-1])
        return self.loss_function(pred, labels, **kwargs)

    def _iteration(self, engine: SeRPTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        acc = engine.accumulation_steps
        local_iter = engine.state.iteration - 1
        if engine.state.epoch_length is not None:
            local_iter %= engine.state.epoch_length
        should_zero_grad = acc == 1 or local_iter % acc == 0
        should_step = acc == 1 or (local_iter + 1) % acc == 0 or (local_iter + 1) == engine.state.epoch_length

        engine.network.train()
        if engine.projector is not None:
            engine.projector.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        if engine.amp:
            with torch.autocast("cuda", **engine.amp_kwargs):
                losses = engine._compute_losses(batchdata)
        else:
            losses = engine._compute_losses(batchdata)
        loss = losses["loss"]
        engine.state.output[Keys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)

        scaled = loss / acc if acc > 1 else loss
        if engine.scaler is not None:
            engine.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if should_step:
            if engine.scaler is not None:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
            else:
                engine.optimizer.step()
            if engine.serp_enabled:
                engine.target_encoder.update(_unwrap(engine.network).encoder)

        for name, value in losses.items():
            if name != "loss":
                engine.state.output[name] = value.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
