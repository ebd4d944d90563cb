"""One Ignite trainer for any segmentation network, with or without SeRP (paper Algorithm 2)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import EventEnum
from ignite.handlers import EMAHandler
from monai.engines import SupervisedTrainer
from monai.engines.trainer import Trainer
from monai.engines.utils import IterationEvents
from monai.utils import ensure_tuple
from monai.utils.enums import CommonKeys as Keys
from torch import nn

__all__ = ["SegmentationTrainer", "OptimizerEvents", "DEFAULT_LOSS_INPUTS"]

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
#: Batch entries handed to the loss as keyword arguments, when the loss accepts them: the MWL
#: weight map that ``MarginalWeightMapd`` writes next to the label.
DEFAULT_LOSS_INPUTS = {"weight_map": "label_weight"}


class OptimizerEvents(EventEnum):
    """Events :class:`SegmentationTrainer` fires around its optimiser.

    ``STEP_COMPLETED`` fires right after an iteration's optimiser step, and only then: with
    ``accumulation_steps=k`` it fires on every k-th iteration (and at the end of an epoch), and
    with float16 AMP it does not fire when the ``GradScaler`` skipped the step (inf/NaN gradients).
    """

    STEP_COMPLETED = "optimizer_step_completed"


def _keyword_names(loss_function: Callable) -> set[str] | None:
    """Keyword arguments ``loss_function`` accepts; ``None`` when it takes ``**kwargs``."""
    target = loss_function.forward if isinstance(loss_function, nn.Module) else loss_function
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class SegmentationTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` for any network that maps ``B×C×H×W`` images to ``B×N×H×W`` logits.

    The iteration is MONAI's: ``prepare_batch`` gives ``(image, label, args, kwargs)``, the inferer
    runs ``network(image, *args, **kwargs)`` — through its ``DistributedDataParallel`` wrapper
    when there is one, so gradients are all-reduced — then loss, backward and optimiser step
    (with gradient accumulation and CUDA mixed precision as in ``SupervisedTrainer``). It differs
    in two ways that LiteNeXt's Algorithm 2 needs and any other network tolerates:

    * **Networks may return a dict** ``{"pred": logits, **extras}``; ``pred`` becomes the engine's
      prediction and the extras go to the loss as keyword arguments. With
      :class:`~litenext_monai.networks.SeRPNetwork` and
      ``prepare_batch=PrepareBatchExtraInput({"weak": "image_weak"})`` the extras are SeRP's
      online and target embeddings; the EMA target update is Ignite's ``EMAHandler``, attached
      as a train handler.
    * **An ``EMAHandler`` among ``train_handlers`` updates after optimiser steps only**: it is
      attached to :attr:`OptimizerEvents.STEP_COMPLETED` instead of ``ITERATION_COMPLETED``, so
      with gradient accumulation the EMA moves once per optimiser step, not once per iteration
      (an EMA attached by hand should pass ``event=OptimizerEvents.STEP_COMPLETED`` itself).
    * **Losses may take batch extras and return a dict.** ``loss_inputs`` maps loss keyword
      arguments to batch keys (default: the MWL ``weight_map`` from ``label_weight``); each is
      passed only if the batch has it and the loss accepts it, so the same pipeline feeds
      :class:`~litenext_monai.losses.LiteNeXtLoss` and MONAI's ``DiceCELoss``. A dict result must
      hold ``"loss"``; every other entry is put into ``engine.state.output`` for the handlers.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function: as in
            ``SupervisedTrainer``.
        loss_inputs: loss keyword argument → batch key.
        amp: mixed precision; CUDA only (on other devices it is switched off with an info log).
        amp_dtype: ``"bfloat16"`` (no gradient scaling) or ``"float16"`` (with a GradScaler).
        kwargs: any other ``SupervisedTrainer`` argument (``prepare_batch``, ``inferer``,
            ``train_handlers``, ``key_train_metric``, ``postprocessing``, ``accumulation_steps`` …).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        loss_inputs: Mapping[str, str] | None = None,
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        **kwargs: Any,
    ) -> None:
        if amp_dtype not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(_AMP_DTYPES)}, got {amp_dtype!r}.")
        use_amp = bool(amp) and torch.device(device).type == "cuda"
        if amp and not use_amp:
            logger.info("Mixed precision is CUDA-only; training in float32 on %s.", device)
        event_names = list(kwargs.pop("event_names", None) or [])
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            amp=use_amp,
            amp_kwargs={"dtype": _AMP_DTYPES[amp_dtype]},
            event_names=[*event_names, OptimizerEvents],
            **kwargs,
        )
        self.amp_dtype = amp_dtype
        self.loss_inputs = dict(DEFAULT_LOSS_INPUTS if loss_inputs is None else loss_inputs)
        self._loss_keywords = _keyword_names(loss_function)

    def run(self) -> None:  # type: ignore[override]
        # Trainer.run builds the deprecated torch.cuda.amp.GradScaler for any AMP; bf16 needs none.
        use_scaler = self.amp and self.amp_dtype == "float16"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        super(Trainer, self).run()

    def _register_handlers(self, handlers: Any) -> None:
        """Attach ``handlers``; an Ignite ``EMAHandler`` to optimiser steps, not iterations."""
        for handler in ensure_tuple(handlers):
            if isinstance(handler, EMAHandler):
                handler.attach(self, event=OptimizerEvents.STEP_COMPLETED)
            else:
                handler.attach(self)

    def _accepts(self, name: str) -> bool:
        return self._loss_keywords is None or name in self._loss_keywords

    def _forward_and_loss(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        try:
            batch = self.prepare_batch(batchdata, self.state.device, self.non_blocking, **self.to_kwargs)
        except KeyError as err:
            raise KeyError(
                f"the training batch has no {err} entry, which prepare_batch needs (it has {sorted(batchdata)}); "
                "SeRP's weak view 'image_weak' comes from the DualViewd transform of the training pipeline."
            ) from err
        if len(batch) == 2:
            inputs, targets = batch
            args: tuple = ()
            kwargs: dict = {}
        else:
            inputs, targets, args, kwargs = batch
        self.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        output = self.inferer(inputs, self.network, *args, **kwargs)
        extras: dict[str, Any] = {}
        if isinstance(output, Mapping):
            extras = {k: v for k, v in output.items() if k != Keys.PRED}
            output = output[Keys.PRED]
        self.state.output[Keys.PRED] = output
        self.fire_event(IterationEvents.FORWARD_COMPLETED)

        rejected = [name for name in extras if not self._accepts(name)]
        if rejected:
            raise TypeError(
                f"the network returned {rejected} for the loss, but {type(self.loss_function).__name__} "
                "does not take them; use a loss that does (LiteNeXtLoss for SeRP) or switch SeRP off."
            )
        for name, key in self.loss_inputs.items():
            if key in batchdata and self._accepts(name):
                extras[name] = batchdata[key].to(self.state.device, non_blocking=self.non_blocking)
        result = self.loss_function(output, targets, **extras)
        if isinstance(result, Mapping):
            return dict(result)
        return {"loss": result.mean()}

    def _iteration(self, engine: SegmentationTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        acc = engine.accumulation_steps
        local_iter = engine.state.iteration - 1
        if engine.state.epoch_length is not None:
            local_iter %= engine.state.epoch_length
        should_zero_grad = acc == 1 or local_iter % acc == 0
        should_step = acc == 1 or (local_iter + 1) % acc == 0 or (local_iter + 1) == engine.state.epoch_length

        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if engine.amp:
            with torch.autocast("cuda", **engine.amp_kwargs):
                losses = engine._forward_and_loss(batchdata)
        else:
            losses = engine._forward_and_loss(batchdata)
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
            stepped = True
            if engine.scaler is not None:
                scale = engine.scaler.get_scale()
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
                stepped = engine.scaler.get_scale() >= scale  # the scale drops iff the step was skipped
            else:
                engine.optimizer.step()
            if stepped:
                engine.fire_event(OptimizerEvents.STEP_COMPLETED)

        for name, value in losses.items():
            if name != "loss":
                engine.state.output[name] = value.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
