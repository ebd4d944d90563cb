"""Per-image metrics against hand-computed numbers, and the CSV handler on a real evaluator."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from scipy import ndimage
from scipy.spatial.distance import cdist

from litenext_monai.engines.metrics import CSV_COLUMNS, PerImageMetricsSaver, per_image_metrics


def _counts(pred: np.ndarray, label: np.ndarray) -> tuple[int, int, int]:
    p, g = pred.astype(bool), label.astype(bool)
    return int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum())


def _hd95_oracle(pred: np.ndarray, label: np.ndarray) -> float:
    """Symmetric 95th-percentile distance between the masks' edge pixels (edge = mask minus its erosion)."""
    edges = [np.argwhere(m & ~ndimage.binary_erosion(m)) for m in (pred.astype(bool), label.astype(bool))]
    d = cdist(edges[0], edges[1])
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_overlap_metrics_match_hand_counts() -> None:
    pred = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    label = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    tp, fp, fn = _counts(pred, label)
    assert (tp, fp, fn) == (3, 3, 2)  # the drawing above, counted by hand
    values = per_image_metrics(torch.tensor(pred)[None, None], torch.tensor(label)[None, None])
    assert values["dice"].shape == (1, 1)
    assert values["dice"].item() == pytest.approx(2 * tp / (2 * tp + fp + fn))  # 6/11
    assert values["iou"].item() == pytest.approx(tp / (tp + fp + fn))  # 3/8
    assert values["precision"].item() == pytest.approx(tp / (tp + fp))
    assert values["recall"].item() == pytest.approx(tp / (tp + fn))
    assert values["f1"].item() == pytest.approx(6 / 11)
    assert not values["empty_gt"].item() and not values["empty_pred"].item()


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_hd95_of_shifted_square_is_the_shift(shift: int) -> None:
    label = torch.zeros(1, 1, 16, 16)
    label[..., 4:10, 3:9] = 1
    pred = torch.roll(label, shifts=shift, dims=-1)
    assert per_image_metrics(pred, label)["hd95"].item() == pytest.approx(float(shift))


def test_hd95_matches_edge_distance_oracle_on_blobs() -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:40, 0:40]
    preds, labels = [], []
    for _ in range(3):
        label = np.zeros((40, 40), dtype=bool)
        pred = np.zeros((40, 40), dtype=bool)
        for _ in range(3):
            cy, cx, r = rng.uniform(10, 30), rng.uniform(10, 30), rng.uniform(3, 7)
            label |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            pred |= (yy - cy - rng.uniform(-2, 2)) ** 2 + (xx - cx) ** 2 <= (r * rng.uniform(0.7, 1.3)) ** 2
        preds.append(pred)
        labels.append(label)
    values = per_image_metrics(
        torch.tensor(np.stack(preds))[:, None], torch.tensor(np.stack(labels))[:, None]
    )
    expected = [_hd95_oracle(p, g) for p, g in zip(preds, labels)]
    np.testing.assert_allclose(values["hd95"][:, 0].numpy(), expected, rtol=1e-5)
    assert len(set(np.round(expected, 3))) > 1  # the oracle separates the cases


def test_empty_mask_convention() -> None:
    empty = torch.zeros(1, 1, 6, 8)
    blob = empty.clone()
    blob[..., 2:4, 2:5] = 1
    pred = torch.cat([empty, empty, blob])
    label = torch.cat([empty, blob, empty])
    values = per_image_metrics(pred, label)
    diagonal = math.hypot(6, 8)  # 10 pixels
    for name in ("dice", "iou", "precision", "recall", "f1"):
        assert values[name][:, 0].tolist() == [1.0, 0.0, 0.0], name
    assert values["hd95"][:, 0].tolist() == pytest.approx([0.0, diagonal, diagonal])
    assert values["empty_gt"][:, 0].tolist() == [True, False, True]
    assert values["empty_pred"][:, 0].tolist() == [True, True, False]
    assert all(torch.isfinite(v).all() for k, v in values.items() if not k.startswith("empty"))


def test_multichannel_values_are_per_image_and_channel() -> None:
    label = torch.zeros(2, 3, 8, 8)
    label[:, :, 2:6, 2:6] = 1
    pred = label.clone()
    pred[1, 2] = 0
    values = per_image_metrics(pred, label)
    assert values["dice"].shape == (2, 3)
    assert values["dice"].tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same shape"):
        per_image_metrics(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="binary"):
        per_image_metrics(torch.full((1, 1, 4, 4), 0.7), torch.zeros(1, 1, 4, 4))


class _MaskAsLogits(torch.nn.Module):
    """Turns a 0/1 image into logits whose sigmoid is above 0.5 exactly on the ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * (x - 0.5)


def test_saver_on_supervised_evaluator_writes_per_image_csv(tmp_path) -> None:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(5):
        label = np.zeros((1, 12, 12), dtype=np.float32)
        pred = np.zeros((1, 12, 12), dtype=np.float32)
        if i != 3:  # case 3: empty ground truth
            label[0, 3:8, 2:9] = 1
        if i != 4:  # case 4: empty prediction
            pred[0] = label[0]
            pred[0, rng.integers(0, 12, 6), rng.integers(0, 12, 6)] = 1
        if i == 3:
            pred[0, 5:7, 5:7] = 1
        cases.append((f"/data/study/case{i}.png", pred, label))
    data = [
        {"image": MetaTensor(torch.tensor(p), meta={"filename_or_obj": name}), "label": torch.tensor(g)}
        for name, p, g in cases
    ]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2, num_workers=0),
        network=_MaskAsLogits(),
    )
    saver = PerImageMetricsSaver(output_dir=tmp_path / "metrics", sigmoid=True)
    saver.attach(evaluator)
    evaluator.run()
    evaluator.run()  # a second epoch must replace, not append

    with open(tmp_path / "metrics" / "per_image_metrics.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [r["case"] for r in rows] == [f"case{i}.png" for i in range(5)]
    dices = []
    for row, (_, pred, label) in zip(rows, cases):
        tp, fp, fn = _counts(pred, label)
        empty_gt, empty_pred = label.sum() == 0, pred.sum() == 0
        dice = 1.0 if empty_gt and empty_pred else 2 * tp / (2 * tp + fp + fn)
        dices.append(dice)
        assert float(row["dice"]) == pytest.approx(dice)
        assert float(row["recall"]) == pytest.approx(0.0 if empty_gt else tp / (tp + fn))
        assert float(row["precision"]) == pytest.approx(0.0 if empty_pred else tp / (tp + fp))
        assert (int(row["empty_gt"]), int(row["empty_pred"])) == (int(empty_gt), int(empty_pred))
        if empty_gt or empty_pred:
            assert float(row["hd95"]) == pytest.approx(math.hypot(12, 12))
        else:
            assert float(row["hd95"]) == pytest.approx(_hd95_oracle(pred[0], label[0]), rel=1e-5)
    assert rows[3]["dice"] == "0" and rows[4]["dice"] == "0"
    assert evaluator.state.metrics["per_image_mean_dice"] == pytest.approx(np.mean(dices))
    assert len(saver.records) == 5
