"""Per-image evaluation metrics and an Ignite handler that saves them to CSV.

The paper reports Dice (the key metric), IoU, precision, recall, F1 and HD95 computed on
predictions binarised by ``sigmoid`` then threshold 0.5, and compares methods with paired
t-tests over images. :func:`per_image_metrics` therefore returns one value per image (and
channel), computed with MONAI's metric functions, and :class:`PerImageMetricsSaver` writes them
to a CSV beside the run.

Empty masks are counted, never skipped, so every image contributes to every mean. MONAI leaves
these cases as NaN (or inf for Hausdorff distances); the convention below replaces them:

=====================  =====  =====  =========  ======  =====  ===============
case                   dice   iou    precision  recall  f1     hd95
=====================  =====  =====  =========  ======  =====  ===============
both empty             1      1      1          1       1      0
prediction empty only  0      0      0 (0/0)    0       0      image diagonal
ground truth empty     0      0      0          0 (0/0) 0      image diagonal
=====================  =====  =====  =========  ======  =====  ===============

The image diagonal (``sqrt(sum(size_d ** 2))`` pixels) is the largest distance two pixels of the
image can have, a finite worst case that keeps means and t-tests finite.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ignite.distributed as idist
import torch
from monai.data import MetaTensor, decollate_batch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)
from monai.utils import convert_to_tensor, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
    Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["METRIC_NAMES", "CSV_COLUMNS", "per_image_metrics", "PerImageMetricsSaver"]

METRIC_NAMES = ("dice", "iou", "precision", "recall", "f1", "hd95")
CSV_COLUMNS = ("case", *METRIC_NAMES, "empty_gt", "empty_pred", "case_id")
#: Datalist item keys naming a case, in order of preference (``case_id`` is what ``litenext-prepare`` writes).
CASE_ID_KEYS = ("case_id", "id")


def _check_binary(name: str, tensor: torch.Tensor) -> None:
    if bool(((tensor != 0) & (tensor != 1)).any()):
        raise ValueError(f"{name} must be binary (0/1); apply sigmoid and the 0.5 threshold first.")


def per_image_metrics(pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dice, IoU, precision, recall, F1 and HD95 of every image and channel.

    Args:
        pred: binary prediction, B×N×H×W (or B×N×D×H×W), values in {0, 1}.
        label: binary ground truth of the same shape.

    Returns:
        Float tensors shaped B×N under ``"dice"``, ``"iou"``, ``"precision"``, ``"recall"``,
        ``"f1"`` and ``"hd95"`` (HD95 in pixels: the 95th percentile of the symmetric
        boundary-to-boundary distances, MONAI ``compute_hausdorff_distance(percentile=95)``),
        plus bool B×N tensors ``"empty_gt"`` and ``"empty_pred"``. Every channel is scored
        (``include_background=True``): for a single-channel sigmoid output channel 0 is the object.

    Empty masks follow the module's convention: both empty gives dice = iou = precision =
    recall = f1 = 1 and hd95 = 0; exactly one empty gives dice = iou = f1 = 0, the undefined
    ratio among precision (empty prediction, 0/0) or recall (empty ground truth, 0/0) is 0, the
    other is 0 from the confusion matrix, and hd95 is the image diagonal in pixels.

    Raises:
        ValueError: if the shapes differ, are not B×N×spatial, or the values are not binary.
    """
    if pred.shape != label.shape or pred.ndim < 3:
        raise ValueError(
            f"pred and label must both be B×N×spatial with the same shape, got {tuple(pred.shape)} "
            f"and {tuple(label.shape)}."
        )
    pred = convert_to_tensor(pred, dtype=torch.float32, track_meta=False)
    label = convert_to_tensor(label, dtype=torch.float32, device=pred.device, track_meta=False)
    _check_binary("pred", pred)
    _check_binary("label", label)

    spatial_dims = tuple(range(2, pred.ndim))
    empty_pred = pred.sum(dim=spatial_dims) == 0
    empty_gt = label.sum(dim=spatial_dims) == 0
    both_empty = empty_pred & empty_gt
    one_empty = empty_pred ^ empty_gt

    confusion = get_confusion_matrix(pred, label, include_background=True)
    overlaps = {
        "dice": compute_dice(pred, label, include_background=True, ignore_empty=True),
        "iou": compute_iou(pred, label, include_background=True, ignore_empty=True),
        **{name: compute_confusion_matrix_metric(name, confusion) for name in ("precision", "recall", "f1")},
    }
    # MONAI returns NaN wherever a ratio is 0/0; with exactly one empty mask every true ratio is 0
    # (no true positives), and two empty masks agree perfectly.
    for name, value in overlaps.items():
        value = torch.where(one_empty, torch.zeros_like(value), value.float())
        overlaps[name] = torch.where(both_empty, torch.ones_like(value), value)

    diagonal = math.sqrt(sum(float(size) ** 2 for size in pred.shape[2:]))
    hd95 = torch.where(one_empty, diagonal, 0.0).float()
    both_present = ~(empty_pred | empty_gt)
    if bool(both_present.any()):
        with warnings.catch_warnings():
            # MONAI 1.6 passes a deprecated argument to itself inside get_mask_edges.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            hd95[both_present] = compute_hausdorff_distance(
                pred[both_present].unsqueeze(1),
                label[both_present].unsqueeze(1),
                include_background=True,
                percentile=95,
            )[:, 0].to(hd95)

    return {
        **overlaps,
        "hd95": hd95,
        "empty_gt": empty_gt,
        "empty_pred": empty_pred,
    }


def _case_name(item: dict[str, Any], keys: Sequence[str], name_key: str) -> str | None:
    """Basename of ``name_key`` from the first tensor meta data (or ``<key>_meta_dict``) holding it."""
    for key in keys:
        value = item.get(key)
        meta = value.meta if isinstance(value, MetaTensor) else item.get(f"{key}_meta_dict")
        if isinstance(meta, dict) and meta.get(name_key) is not None:
            return os.path.basename(str(meta[name_key]))
    return None


def _case_id(items: Sequence[Any], keys: Sequence[str], name_key: str) -> str | None:
    """The datalist case id of a sample (first of :data:`CASE_ID_KEYS` in ``items``), else its full image path."""
    for item in items:
        if isinstance(item, dict):
            for key in CASE_ID_KEYS:
                if item.get(key) is not None and str(item[key]) != "":
                    return str(item[key])
    for item in items:
        if isinstance(item, dict):
            for key in keys:
                value = item.get(key)
                meta = value.meta if isinstance(value, MetaTensor) else item.get(f"{key}_meta_dict")
                if isinstance(meta, dict) and meta.get(name_key) is not None:
                    return str(meta[name_key])
    return None


class PerImageMetricsSaver:
    """Ignite handler: per-image metrics of an evaluator, saved to CSV at the end of each epoch.

    At every ``ITERATION_COMPLETED`` the handler reads ``output_transform(engine.state.output)``,
    a list of per-sample dictionaries as a MONAI ``SupervisedEvaluator`` produces with its default
    ``decollate=True`` (a batched dictionary is decollated first), binarises ``pred`` (optional
    sigmoid, then ``>= threshold`` as ``monai.transforms.AsDiscrete``) and scores it against
    ``label`` with :func:`per_image_metrics`. At ``EPOCH_COMPLETED`` it writes
    ``output_dir/filename`` atomically with the columns ``case, dice, iou, precision, recall, f1,
    hd95, empty_gt, empty_pred`` (empty flags as 0/1), one row per image, and puts the mean of each
    metric over all images into ``engine.state.metrics["per_image_mean_<metric>"]``. The rows of
    the last epoch stay available as :attr:`records`.

    ``case`` is the basename of ``name_key`` in the meta data of ``pred``, ``label`` or
    ``image`` (MetaTensor ``.meta`` or ``<key>_meta_dict``), or the image's running index when
    none is found. ``case_id`` identifies the case without basename collisions: the datalist item's
    ``case_id`` (or ``id``) key, read from the decollated ``engine.state.batch`` sample, else the
    full image path from the meta data.

    Args:
        output_dir: folder of the CSV file (created if needed).
        filename: CSV file name.
        output_transform: maps ``engine.state.output`` to the list of per-sample dictionaries.
        sigmoid: apply a sigmoid to ``pred`` first (True for logits, False for probabilities).
        threshold: probability threshold; the paper uses 0.5.
        name_key: meta data key naming the image.
        pred_key: key of the prediction, C×H×W with C = 1.
        label_key: key of the binary ground truth, 1×H×W.
        image_key: key of the input image, also searched for the name.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        filename: str = "per_image_metrics.csv",
        output_transform: Callable[[Any], Any] = lambda x: x,
        sigmoid: bool = True,
        threshold: float = 0.5,
        name_key: str = "filename_or_obj",
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.output_transform = output_transform
        self.sigmoid = sigmoid
        self.threshold = threshold
        self.name_key = name_key
        self.pred_key = pred_key
        self.label_key = label_key
        self.image_key = image_key
        self.records: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        """Register the reset, per-iteration and per-epoch events on ``engine``."""
        if not engine.has_event_handler(self._reset, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        if not engine.has_event_handler(self._finalize, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._finalize)

    def _reset(self, _engine: Engine) -> None:
        self.records = []

    def __call__(self, engine: Engine) -> None:
        """Score every sample of the current iteration's output."""
        output = self.output_transform(engine.state.output)
        if isinstance(output, dict):
            output = decollate_batch(output)
        batch = getattr(engine.state, "batch", None)
        sources = batch if isinstance(batch, list) and len(batch) == len(output) else [None] * len(output)
        for item, source in zip(output, sources):
            pred = torch.as_tensor(item[self.pred_key]).detach().float()
            label = torch.as_tensor(item[self.label_key]).detach().float()
            if pred.ndim < 2 or pred.shape[0] != 1 or label.shape != pred.shape:
                raise ValueError(
                    f"PerImageMetricsSaver expects '{self.pred_key}' and '{self.label_key}' shaped 1×H×W, got "
                    f"{tuple(pred.shape)} and {tuple(label.shape)}."
                )
            if self.sigmoid:
                pred = torch.sigmoid(pred)
            binary = (pred >= self.threshold).float()
            values = per_image_metrics(binary[None], (label > 0).float()[None].to(binary.device))
            name = _case_name(item, (self.pred_key, self.label_key, self.image_key), self.name_key)
            record: dict[str, Any] = {"case": name if name is not None else str(len(self.records))}
            record.update({k: float(values[k][0, 0]) for k in METRIC_NAMES})
            record.update({k: int(values[k][0, 0]) for k in ("empty_gt", "empty_pred")})
            case_id = _case_id((source, item), (self.pred_key, self.label_key, self.image_key), self.name_key)
            record["case_id"] = case_id if case_id is not None else record["case"]
            self.records.append(record)

    def _finalize(self, engine: Engine) -> None:
        # Under torchrun each rank scored its shard: every rank gets all rows, rank 0 writes them.
        self.records = [record for shard in idist.all_gather(self.records) for record in shard]
        if not self.records:
            return
        count = len(self.records)
        for name in METRIC_NAMES:
            engine.state.metrics[f"per_image_mean_{name}"] = sum(r[name] for r in self.records) / count
        if idist.get_rank() != 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in self.records:
            writer.writerow({k: format(v, ".10g") if isinstance(v, float) else v for k, v in record.items()})
        target = self.output_dir / self.filename
        fd, tmp = tempfile.mkstemp(dir=self.output_dir, prefix=f".{target.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(buffer.getvalue())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
