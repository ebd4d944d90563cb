"""Several classes end to end on the built-in data: load, weight maps, train LiteNeXt briefly, infer, score."""

from __future__ import annotations

import torch
from monai.data import load_decathlon_datalist
from monai.transforms import Compose, Resized

from litenext_monai.data import generate_synthetic_dataset
from litenext_monai.engines.metrics import per_class_metrics
from litenext_monai.inferers import build_inferer, logits_to_mask
from litenext_monai.losses import LiteNeXtLoss
from litenext_monai.networks import LiteNeXt
from litenext_monai.transforms import LoadImage2Dd, LoadLabelMap2Dd, MarginalWeightMapd


def test_short_multiclass_training_lowers_the_loss_and_patch_inference_scores(tmp_path) -> None:
    torch.manual_seed(0)
    path = generate_synthetic_dataset(tmp_path, variant="multiclass", num_train=4, num_val=0, num_test=1)
    load = Compose(
        [
            LoadImage2Dd(keys="image", label_keys=[]),
            LoadLabelMap2Dd(keys="label", num_classes=2),
        ]
    )
    train = Compose([load, Resized(["image", "label"], (64, 64), mode=["bilinear", "nearest"]),
                     MarginalWeightMapd("label", num_classes=2)])  # fmt: skip
    samples = [train(e) for e in load_decathlon_datalist(str(path), data_list_key="training")]
    x = torch.stack([s["image"].as_tensor() for s in samples])
    y = torch.stack([s["label"].as_tensor() for s in samples])
    w = torch.stack([s["label_weight"].as_tensor() for s in samples])
    assert x.shape == (4, 3, 64, 64) and y.shape == (4, 1, 64, 64) and w.shape == (4, 2, 64, 64)

    net = LiteNeXt(in_channels=3, out_channels=3, base_channels=8, kernel_size=3)
    loss_fn = LiteNeXtLoss(num_classes=2, serp_weight=0.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        out = loss_fn(net(x), y, weight_map=w)
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert set(out) == {"loss", "mwl", "dice", "ce"}
    assert losses[-1] < 0.8 * losses[0]

    net.eval()
    test = load(load_decathlon_datalist(str(path), data_list_key="test")[0])
    image, label = test["image"].as_tensor()[None], test["label"].as_tensor()[None]  # 128×128, window 64
    inferer = build_inferer({"input_mode": "patch", "image_size": 64, "sw_batch_size": 2, "tta": True})
    with torch.no_grad():
        logits = inferer(image, net)
    assert logits.shape == (1, 3, 128, 128)
    mask = logits_to_mask(logits, num_classes=2)
    assert set(mask.unique().tolist()) <= {0.0, 1.0, 2.0}
    values = per_class_metrics(mask, label, num_classes=2)
    assert values["dice"].shape == (1, 2) and bool(torch.isfinite(values["hd95"]).all())
