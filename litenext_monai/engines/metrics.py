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

Several classes (``num_classes`` = N ≥ 2, label maps ``0 .. N``): :func:`per_class_metrics`
one-hot encodes prediction and ground truth, drops the background and scores every foreground
class with the same convention; the CSV then holds ``<metric>_class<c>`` for c = 1 .. N and the
plain ``<metric>`` columns hold the mean over the N classes (:func:`csv_columns`).
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

__all__ = [
    "METRIC_NAMES",
    "CSV_COLUMNS",
    "csv_columns",
    "per_class_metrics",
    "per_image_metrics",
    "PerImageMetricsSaver",
]

METRIC_NAMES = ("dice", "iou", "precision", "recall", "f1", "hd95")
CSV_COLUMNS = ("case", *METRIC_NAMES, "empty_gt", "empty_pred", "case_id")
#: Datalist item keys naming a case, in order of preference (``case_id`` is what ``litenext-prepare`` writes).
CASE_ID_KEYS = ("case_id", "id")
_EMPTY_FLAGS = ("empty_gt", "empty_pred")


def csv_columns(num_classes: int = 1) -> tuple[str, ...]:
    """The per-image CSV columns: :data:`CSV_COLUMNS` for one class; for N ≥ 2 classes the same
    columns (class means; ``empty_*`` = 1 when every class is empty) followed by
    ``dice_class1, iou_class1, …, empty_pred_class1, dice_class2, …`` for c = 1 .. N."""
    if num_classes == 1:
        return CSV_COLUMNS
    per_class = [
        f"{name}_class{c}" for c in range(1, num_classes + 1) for name in (*METRIC_NAMES, *_EMPTY_FLAGS)
    ]
    return (*CSV_COLUMNS, *per_class)


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


def _label_index(labels: torch.Tensor, num_classes: int, name: str) -> torch.Tensor:
    values = convert_to_tensor(labels, track_meta=False)
    bad = (values != values.round()) | (values < 0) | (values > num_classes)
    if bool(bad.any()):
        shown = torch.unique(values[bad])[:8].tolist()
        raise ValueError(f"{name} holds values {shown} that are not class indices 0..{num_classes}.")
    return values.long()


def per_class_metrics(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """:func:`per_image_metrics` of every foreground class of label maps.

    Args:
        pred: predicted label map ``B×1×H×W`` (or ``B×1×D×H×W``), values ``0 .. num_classes``
            (e.g. the argmax of the N + 1 logit channels).
        label: ground-truth label map of the same shape and values.
        num_classes: N ≥ 1 foreground classes; class 0 (background) is not scored.

    Returns:
        The keys of :func:`per_image_metrics`, each ``B×N`` (column ``c - 1`` is class c), from
        the one-hot encodings without the background channel (MONAI's ``include_background=False``).

    Raises:
        ValueError: shapes that are not ``B×1×spatial`` or differ, or values outside ``0 .. N``.
    """
    if pred.shape != label.shape or pred.ndim < 3 or pred.shape[1] != 1:
        raise ValueError(
            f"pred and label must both be label maps B×1×spatial with the same shape, got {tuple(pred.shape)} "
            f"and {tuple(label.shape)}."
        )
    classes = torch.arange(1, num_classes + 1).view(1, -1, *([1] * (pred.ndim - 2)))
    pred_index = _label_index(pred, num_classes, "pred")
    label_index = _label_index(label, num_classes, "label").to(pred_index.device)
    classes = classes.to(pred_index.device)
    return per_image_metrics((pred_index == classes).float(), (label_index == classes).float())


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

    Several classes (``num_classes`` = N ≥ 2): ``label`` is a ``1×H×W`` label map (values
    ``0 .. N``) and ``pred`` either the ``(N+1)×H×W`` logits/probabilities (argmax is taken;
    ``sigmoid`` and ``threshold`` are not used) or an already post-processed ``1×H×W`` label map.
    Every foreground class is scored with :func:`per_class_metrics`; the columns are
    :func:`csv_columns` (``dice_class1 …`` plus the class means under the plain names) and
    ``engine.state.metrics`` also gets ``per_image_mean_<metric>_class<c>``.

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
        num_classes: N foreground classes; 1 (default) is the binary behaviour described above.
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
        num_classes: int = 1,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
        self.num_classes = num_classes
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
            name = _case_name(item, (self.pred_key, self.label_key, self.image_key), self.name_key)
            case_id = _case_id((source, item), (self.pred_key, self.label_key, self.image_key), self.name_key)
            if self.num_classes > 1:
                record = self._multiclass_record(pred, label, name)
                record["case_id"] = case_id if case_id is not None else record["case"]
                self.records.append(record)
                continue
            if pred.ndim < 2 or pred.shape[0] != 1 or label.shape != pred.shape:
                raise ValueError(
                    f"PerImageMetricsSaver expects '{self.pred_key}' and '{self.label_key}' shaped 1×H×W, got "
                    f"{tuple(pred.shape)} and {tuple(label.shape)}."
                )
            if self.sigmoid:
                pred = torch.sigmoid(pred)
            binary = (pred >= self.threshold).float()
            values = per_image_metrics(binary[None], (label > 0).float()[None].to(binary.device))
            record: dict[str, Any] = {"case": name if name is not None else str(len(self.records))}
            record.update({k: float(values[k][0, 0]) for k in METRIC_NAMES})
            record.update({k: int(values[k][0, 0]) for k in ("empty_gt", "empty_pred")})
            record["case_id"] = case_id if case_id is not None else record["case"]
            self.records.append(record)

    def _multiclass_record(self, pred: torch.Tensor, label: torch.Tensor, name: str | None) -> dict[str, Any]:
        n = self.num_classes
        if pred.ndim < 3 or pred.shape[0] not in (1, n + 1) or label.shape != (1, *pred.shape[1:]):
            raise ValueError(
                f"PerImageMetricsSaver(num_classes={n}) expects '{self.pred_key}' shaped {n + 1}×H×W (logits) or "
                f"1×H×W (label map) and '{self.label_key}' 1×H×W, got {tuple(pred.shape)} and {tuple(label.shape)}."
            )
        if pred.shape[0] == n + 1:
            pred = torch.argmax(pred, dim=0, keepdim=True).float()
        case = name if name is not None else str(len(self.records))
        try:
            values = per_class_metrics(pred[None], label[None].to(pred.device), n)
        except ValueError as err:
            raise ValueError(f"{case}: {err}") from err
        record: dict[str, Any] = {"case": case}
        record.update({k: float(values[k][0].mean()) for k in METRIC_NAMES})
        record.update({k: int(bool(values[k][0].all())) for k in _EMPTY_FLAGS})
        for c in range(1, n + 1):
            record.update({f"{k}_class{c}": float(values[k][0, c - 1]) for k in METRIC_NAMES})
            record.update({f"{k}_class{c}": int(values[k][0, c - 1]) for k in _EMPTY_FLAGS})
        return record

    def _finalize(self, engine: Engine) -> None:
        # Under torchrun each rank scored its shard: every rank gets all rows, rank 0 writes them.
        self.records = [record for shard in idist.all_gather(self.records) for record in shard]
        if not self.records:
            return
        count = len(self.records)
        names = list(METRIC_NAMES)
        if self.num_classes > 1:
            names += [f"{m}_class{c}" for c in range(1, self.num_classes + 1) for m in METRIC_NAMES]
        for name in names:
            engine.state.metrics[f"per_image_mean_{name}"] = sum(r[name] for r in self.records) / count
        if idist.get_rank() != 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=csv_columns(self.num_classes), lineterminator="\n")
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
