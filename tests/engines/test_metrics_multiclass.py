"""Per-class metrics of label maps against MONAI's DiceMetric/MeanIoU(include_background=False) and hand counts."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.metrics import DiceMetric, MeanIoU

from litenext_monai.engines.metrics import PerImageMetricsSaver, csv_columns, per_class_metrics


def _label_maps(n: int = 3, size: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """B×1×H×W label maps (values 0..2) where every class is present in prediction and truth."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 1, size, size), dtype=np.int64)
    truth[:, 0, 2:12, 2:14] = 1
    truth[:, 0, 5:9, 5:10] = 2
    pred = truth.copy()
    for b in range(n):
        flips = rng.integers(0, size, size=(25, 2))
        pred[b, 0, flips[:, 0], flips[:, 1]] = rng.integers(0, 3, size=25)
        pred[b, 0, 12 + b : 15 + b, 3:6] = 2  # an extra false class-2 blob
    return torch.from_numpy(pred), torch.from_numpy(truth)


def _onehot(labels: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(labels[:, 0], n + 1).permute(0, 3, 1, 2).float()


def test_per_class_dice_and_iou_match_monai_without_background() -> None:
    pred, truth = _label_maps()
    values = per_class_metrics(pred.float(), truth.float(), num_classes=2)
    assert values["dice"].shape == (3, 2)
    dice = DiceMetric(include_background=False, reduction="none")(_onehot(pred, 2), _onehot(truth, 2))
    iou = MeanIoU(include_background=False, reduction="none")(_onehot(pred, 2), _onehot(truth, 2))
    torch.testing.assert_close(values["dice"], dice.float())
    torch.testing.assert_close(values["iou"], iou.float())
    # class 2 of image 0 by hand
    p, g = pred[0, 0] == 2, truth[0, 0] == 2
    tp, fp, fn = int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())
    assert values["dice"][0, 1].item() == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert values["precision"][0, 1].item() == pytest.approx(tp / (tp + fp))


def test_per_class_empty_convention_and_errors() -> None:
    truth = torch.zeros(1, 1, 6, 6)
    truth[0, 0, :2, :2] = 1
    pred = truth.clone()
    pred[0, 0, 4:, 4:] = 2  # class 2 predicted, absent from the truth
    values = per_class_metrics(pred, truth, num_classes=3)
    assert values["dice"][0].tolist() == [1.0, 0.0, 1.0]  # class 3 empty in both: 1
    assert values["empty_gt"][0].tolist() == [False, True, True]
    with pytest.raises(ValueError, match=r"values \[4\.0\]"):
        per_class_metrics(torch.full((1, 1, 2, 2), 4.0), torch.zeros(1, 1, 2, 2), 3)
    with pytest.raises(ValueError, match="B×1×spatial"):
        per_class_metrics(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), 3)


class _OneHotLogits(torch.nn.Module):
    """Label map image → logits whose argmax is that label map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _onehot(x.long(), 2) * 5.0


@pytest.mark.parametrize("post_processed", [False, True])
def test_saver_writes_per_class_columns_and_class_means(tmp_path, post_processed: bool) -> None:
    pred, truth = _label_maps()
    data = [
        {
            "image": MetaTensor(pred[i].float(), meta={"filename_or_obj": f"/data/case{i}.png"}),
            "label": truth[i].float(),
        }
        for i in range(3)
    ]
    network = torch.nn.Identity() if post_processed else _OneHotLogits()
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2, num_workers=0),
        network=network,
    )
    saver = PerImageMetricsSaver(output_dir=tmp_path, num_classes=2)
    saver.attach(evaluator)
    evaluator.run()
    with open(tmp_path / "per_image_metrics.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == csv_columns(2)
        rows = list(reader)
    assert {"dice_class1", "dice_class2", "hd95_class2", "empty_gt_class1"} <= set(rows[0])
    dice = DiceMetric(include_background=False, reduction="none")(_onehot(pred, 2), _onehot(truth, 2))
    for i, row in enumerate(rows):
        assert row["case"] == f"case{i}.png"
        assert float(row["dice_class1"]) == pytest.approx(dice[i, 0].item())
        assert float(row["dice_class2"]) == pytest.approx(dice[i, 1].item())
        assert float(row["dice"]) == pytest.approx(dice[i].mean().item())
        assert row["empty_gt"] == "0"
    metrics = evaluator.state.metrics
    assert metrics["per_image_mean_dice"] == pytest.approx(dice.mean().item())
    assert metrics["per_image_mean_dice_class2"] == pytest.approx(dice[:, 1].mean().item())


def test_saver_rejects_wrong_channels(tmp_path) -> None:
    saver = PerImageMetricsSaver(output_dir=tmp_path, num_classes=2)
    with pytest.raises(ValueError, match="3×H×W"):
        saver._multiclass_record(torch.zeros(2, 4, 4), torch.zeros(1, 4, 4), "x")
    with pytest.raises(ValueError, match="x: .*values"):
        saver._multiclass_record(torch.zeros(1, 4, 4), torch.full((1, 4, 4), 7.0), "x")
    assert csv_columns(1) == (
        "case",
        "dice",
        "iou",
        "precision",
        "recall",
        "f1",
        "hd95",
        "empty_gt",
        "empty_pred",
        "case_id",
    )
