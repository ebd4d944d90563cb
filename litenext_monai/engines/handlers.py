"""Ignite handlers the LiteNeXt bundle needs and MONAI lacks.

* :class:`LastCheckpointHandler` saves the full training state atomically after every epoch and
  resumes from it (MONAI's ``CheckpointSaver`` writes with ``atomic=False``, so a kill during the
  write could leave a truncated "last" checkpoint).
* :class:`BestModelSaver` keeps the inference checkpoint (network ``state_dict`` only) of the
  best validation epoch, atomically, and reports ``best_<metric>`` as a metric.
* :class:`LearningCurvePlotter` draws the loss and validation curves (matplotlib, Agg).
* :class:`OverlaySaver` writes prediction/label overlays of a few validation images.
* :func:`loss_components` maps a trainer's output to the scalars MLflow logs per iteration.

The stateful handlers have ``state_dict``/``load_state_dict`` so they can be part of the "last"
checkpoint and a resumed run continues its best score and its curves.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ignite.distributed as idist
import torch
from monai.utils import min_version, optional_import

from litenext_monai.io import atomic_write, write_image_png
from litenext_monai.io.mask_writer import overlay_rgb
from litenext_monai.model.card import inference_settings_path, write_inference_settings
from litenext_monai.model.loader import check_network_config

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
    Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = [
    "LastCheckpointHandler",
    "BestModelSaver",
    "LearningCurvePlotter",
    "OverlaySaver",
    "loss_components",
]

logger = logging.getLogger(__name__)


def _first_item(output: Any) -> Mapping[str, Any]:
    """The first per-sample dict of a (decollated) engine output, or the output itself."""
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)):
        return output[0]
    return output


def loss_components(
    keys: Sequence[str] = ("loss", "mwl", "bce", "wbce", "bbce", "focal", "dice", "serp"),
    prefix: str = "train_",
) -> Callable[[Any], dict[str, float]]:
    """Return an ``output_transform`` giving ``{prefix + key: float}`` for every key in the output.

    The trainer's output is decollated, with each scalar replicated into every sample, so the
    first sample holds them all. Keys the loss does not produce are skipped.
    """

    def transform(output: Any) -> dict[str, float]:
        item = _first_item(output)
        return {f"{prefix}{k}": float(item[k]) for k in keys if k in item}

    return transform


def _save_torch_atomic(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


class LastCheckpointHandler:
    """Save the whole training state after every epoch to ONE file, and resume from it.

    The file holds ``{name: obj.state_dict()}`` for every non-None object of ``save_dict`` plus
    the engine it is attached to (under ``engine_key``: epoch and iteration). It is replaced
    atomically, so a process killed at any moment leaves the previous epoch's complete file;
    a resumed run therefore loses at most the epoch that was running.

    With ``resume=True`` the file, when it exists, is loaded at ``STARTED`` by MONAI's
    ``CheckpointLoader`` (``torch.load(weights_only=True)``) and training continues after its
    epoch; the configured ``max_epochs`` is kept, so a resumed run ends at the same epoch count as
    an uninterrupted one. (The saving stays ours: MONAI's ``CheckpointSaver`` is not atomic.)

    Attach it to the trainer AFTER the ``ValidationHandler`` so each saved epoch includes its
    validation (best score, scheduler step).

    Args:
        save_path: the checkpoint file, e.g. ``models/last.pt``.
        save_dict: objects with ``state_dict``/``load_state_dict``; None values are skipped
            (e.g. the SeRP modules when SeRP is off).
        resume: load ``save_path`` at start when it exists (a missing file starts from scratch).
        map_location: ``torch.load`` map location.
        engine_key: key of the engine's own state in the file.
    """

    def __init__(
        self,
        save_path: str | os.PathLike,
        save_dict: Mapping[str, Any],
        resume: bool = False,
        map_location: str | torch.device | None = None,
        engine_key: str = "trainer",
    ) -> None:
        self.save_path = Path(save_path)
        self.save_dict = {k: v for k, v in save_dict.items() if v is not None}
        if engine_key in self.save_dict:
            raise ValueError(
                f"save_dict must not use the engine key {engine_key!r}; the attached engine is saved there."
            )
        self.resume = resume
        self.map_location = map_location
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        """Load at ``STARTED`` (when resuming) and save at every ``EPOCH_COMPLETED``."""
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        """Write the checkpoint of the epoch that just finished (rank 0 only under torchrun)."""
        if idist.get_rank() != 0:
            return
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        state[self.engine_key] = engine.state_dict()
        _save_torch_atomic(state, self.save_path)

    def load(self, engine: Engine) -> None:
        """Restore every object and the engine's epoch from ``save_path`` if it exists.

        The loading is MONAI's ``CheckpointLoader`` (``torch.load(weights_only=True)``, then
        Ignite's ``Checkpoint.load_objects`` into every object of ``save_dict`` and the engine,
        keeping the configured ``max_epochs``); this handler adds the missing-file case (train
        from scratch) and errors that name the file.

        Raises:
            ValueError: the file is not a checkpoint of these objects (a key is missing, a shape
                differs, it holds pickled objects other than tensors and containers, or its
                epoch exceeds ``max_epochs``); the message names the file.
        """
        from monai.handlers import CheckpointLoader

        if not self.save_path.is_file():
            logger.warning("resume requested but %s does not exist; training from scratch.", self.save_path)
            return
        loader = CheckpointLoader(
            load_path=str(self.save_path),
            load_dict={**self.save_dict, self.engine_key: engine},
            name=logger.name,
            map_location=self.map_location,  # type: ignore[arg-type]  # passed on to torch.load
        )
        try:
            loader(engine)
        except (KeyError, RuntimeError, TypeError, ValueError, pickle.UnpicklingError) as err:
            raise ValueError(f"{self.save_path}: cannot resume from this checkpoint: {err}") from err
        logger.info("resumed from %s at epoch %d.", self.save_path, engine.state.epoch)


class BestModelSaver:
    """Keep the inference checkpoint of the best validation epoch.

    Attached to the validator; at its ``EPOCH_COMPLETED`` the key metric is compared with the
    best so far and, when better, ``network.state_dict()`` (nothing else) is written atomically to
    ``save_path``. ``engine.state.metrics[f"best_{metric_name}"]`` is set every epoch so that
    metric loggers record the best score.

    Args:
        save_path: the inference checkpoint, e.g. ``models/model.pt``.
        network: the network whose ``state_dict`` is saved (a DDP wrapper is unwrapped).
        metric_name: key of the validator's ``state.metrics`` to maximise (or minimise).
        mode: ``"max"`` or ``"min"``; ``"last"`` keeps the latest validated epoch instead (LV-UNet's
            deep training is evaluated at its last epoch, whose activations can be fused exactly).
        settings: what inference needs to rebuild and use the network (``network_def``,
            ``in_channels``, ``image_size``, ``modality``, ``threshold``, ``segment``, see
            :mod:`litenext_monai.model.card`); when given, it is written as ``model.json``
            beside ``save_path`` with every save, after checking once that ``network_def``
            rebuilds ``network`` exactly (if it does not, the error is logged and no ``model.json``
            is written, so inference falls back to the bundle config instead of a wrong network).
    """

    def __init__(
        self,
        save_path: str | os.PathLike,
        network: torch.nn.Module,
        metric_name: str,
        mode: str = "max",
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in ("max", "min", "last"):
            raise ValueError(f"mode must be 'max', 'min' or 'last', got {mode!r}.")
        self.save_path = Path(save_path)
        self.network = network
        self.metric_name = metric_name
        self.mode = mode
        self.best_metric = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self.settings = dict(settings) if settings is not None else None
        self._settings_checked = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _write_settings(self, network: torch.nn.Module) -> None:
        if not self._settings_checked:
            try:
                check_network_config(
                    self.settings["network_def"],
                    network,
                    self.settings["image_size"],
                    self.settings["in_channels"],
                )
            except ValueError as err:
                # A wrong model.json is worse than none: inference then falls back to the bundle config.
                logger.error("%s is not written: %s", inference_settings_path(self.save_path).name, err)
                inference_settings_path(self.save_path).unlink(missing_ok=True)
                self.settings = None
                return
            self._settings_checked = True
        write_inference_settings(self.save_path, self.settings)

    def __call__(self, engine: Engine) -> None:
        if self.metric_name not in engine.state.metrics:
            raise KeyError(
                f"BestModelSaver: metric {self.metric_name!r} not in {sorted(engine.state.metrics)}."
            )
        value = float(engine.state.metrics[self.metric_name])
        if self.mode == "last":
            better = True
        else:
            better = value > self.best_metric if self.mode == "max" else value < self.best_metric
        if better and not math.isnan(value):
            self.best_metric, self.best_epoch = value, int(engine.state.epoch)
            network = getattr(self.network, "module", self.network)
            if idist.get_rank() == 0:
                if self.settings is not None:
                    self._write_settings(network)
                _save_torch_atomic(network.state_dict(), self.save_path)
        if self.best_epoch >= 0:
            engine.state.metrics[f"best_{self.metric_name}"] = self.best_metric

    def state_dict(self) -> dict[str, float]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])


class LearningCurvePlotter:
    """Plot the mean training loss and the validation metrics per epoch, as PNG and CSV.

    Attached to the trainer AFTER the ``ValidationHandler``: at ``ITERATION_COMPLETED`` it
    accumulates ``loss_key`` from the output; at ``EPOCH_COMPLETED`` it records the epoch's mean
    loss and the validator's ``metric_names`` (when the validator ran this epoch) and rewrites
    ``output_dir/learning_curve.png`` and ``learning_curve.csv`` atomically.

    Args:
        output_dir: folder of the two files.
        validator: the validation engine (its ``state.metrics`` are read), or None.
        metric_names: validator metrics to plot; None plots all of them.
        loss_key: loss key in the trainer's output.
        filename: PNG name; the CSV has the same stem.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        validator: Engine | None = None,
        metric_names: Sequence[str] | None = None,
        loss_key: str = "loss",
        filename: str = "learning_curve.png",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.validator = validator
        self.metric_names = None if metric_names is None else list(metric_names)
        self.loss_key = loss_key
        self.filename = filename
        self.history: list[dict[str, float]] = []
        self._loss_sum, self._loss_count = 0.0, 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _accumulate(self, engine: Engine) -> None:
        item = _first_item(engine.state.output)
        self._loss_sum += float(item[self.loss_key])
        self._loss_count += 1

    def _epoch_completed(self, engine: Engine) -> None:
        row = {"epoch": float(engine.state.epoch), "train_loss": self._loss_sum / max(self._loss_count, 1)}
        self._loss_sum, self._loss_count = 0.0, 0
        if self.validator is not None and self.validator.state.epoch == engine.state.epoch:
            metrics = self.validator.state.metrics
            names = self.metric_names if self.metric_names is not None else sorted(metrics)
            row.update({n: float(metrics[n]) for n in names if n in metrics})
        self.history = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]
        self.write()

    def write(self) -> None:
        """Rewrite the PNG and CSV from :attr:`history` (rank 0 only under torchrun)."""
        if idist.get_rank() != 0:
            return
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        columns = sorted({k for r in self.history for k in r} - {"epoch", "train_loss"})
        # Distances (HD95, in pixels) get their own axes: on the [0, 1] axes they flatten the rest.
        distances = [c for c in columns if "hd" in c]
        fig, axes = plt.subplots(1, 3 if distances else 2, figsize=(15 if distances else 10, 4))
        ax_loss, ax_metric = axes[0], axes[1]
        epochs = [r["epoch"] for r in self.history]
        ax_loss.plot(epochs, [r["train_loss"] for r in self.history], marker="o", label="train loss")
        ax_loss.set(xlabel="epoch", ylabel="mean loss", title="training loss")
        for name in columns:
            points = [(r["epoch"], r[name]) for r in self.history if name in r]
            ax = axes[2] if name in distances else ax_metric
            ax.plot(*zip(*points), marker="o", label=name)
        ax_metric.set(xlabel="epoch", ylabel="score", title="validation", ylim=(0.0, 1.0))
        if distances:
            axes[2].set(xlabel="epoch", ylabel="pixels", title="validation distance")
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        atomic_write(self.output_dir / self.filename, lambda tmp: tmp.write_bytes(buffer.getvalue()))

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["epoch", "train_loss", *columns], lineterminator="\n")
        writer.writeheader()
        for r in self.history:
            writer.writerow({**r, "epoch": int(r["epoch"])})
        csv_path = self.output_dir / (Path(self.filename).stem + ".csv")
        atomic_write(csv_path, lambda tmp: tmp.write_text(text.getvalue(), encoding="utf-8"))

    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = [dict(r) for r in state["history"]]


class OverlaySaver:
    """Write overlay PNGs of the first ``num_images`` images of every evaluator epoch.

    Reads the decollated output (``image`` ``C×H×W`` in [0, 1], binarised ``pred`` and
    optionally ``label``, both ``1×H×W``) and writes ``output_dir/<case>_overlay.png``, replacing
    the previous epoch's files.

    Args:
        output_dir: folder of the PNGs.
        num_images: how many images per epoch.
        image_key, pred_key, label_key: output keys; a missing label is simply not drawn.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_images: int = 4,
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str = "label",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_images = num_images
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self._written = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, _engine: Engine) -> None:
        self._written = 0

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != 0:  # under torchrun rank 0 draws its own shard's first images
            return
        output = engine.state.output
        items = output if isinstance(output, Sequence) else [output]
        for item in items:
            if self._written >= self.num_images:
                return
            image = torch.as_tensor(item[self.image_key]).detach().float().cpu()
            pred = torch.as_tensor(item[self.pred_key]).detach().cpu().numpy()[0]
            if tuple(image.shape[1:]) != pred.shape:
                # Evaluation inverts the resize on the prediction only; show the image at its size.
                image = torch.nn.functional.interpolate(image[None], size=pred.shape, mode="bilinear")[0]
            image = image.numpy()
            label = item.get(self.label_key)
            label = None if label is None else torch.as_tensor(label).detach().cpu().numpy()[0]
            meta = getattr(item[self.image_key], "meta", {})
            source = meta.get("filename_or_obj")
            stem = Path(str(source)).name.split(".")[0] if source else f"image_{self._written:03d}"
            write_image_png(overlay_rgb(image, pred, label), self.output_dir / f"{stem}_overlay.png")
            self._written += 1
