"""Issue 18 through the bundle: several classes and patch training, train → evaluate → infer.

Oracles: the Dice of the written label maps against the ground truth computed here with numpy
(for the per-class CSV), the Predictor (the one inference path, itself checked against MONAI in
tests/inference/test_patches_and_classes.py) for the written masks, highdicom + dciodvfy for the
SEG, the image sizes of the validation overlays for sliding-window validation on whole images.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from tests.bundle.conftest import BUNDLE, EVALUATE, INFERENCE, SETTINGS, TRAIN, bundle_cmd, expr_path, run_cmd
from tests.hospital_helpers import dciodvfy_errors, read_seg

MC_SIZE, MC_NET = 48, 32  # multi-class images and network size (off each other: resize + Invertd)
LARGE_SIZE, PATCH = 96, 32  # patch mode: images three patches wide


def _common(data: Path, root: Path) -> list[str]:
    return [
        "--bundle_root", str(BUNDLE), "--dataset_dir", str(data), "--output_dir", expr_path(root / "out"),
        "--ckpt_dir", str(root / "models"), "--num_workers", "0", "--progress_bar", "False",
    ]  # fmt: skip


def _dice(pred: np.ndarray, label: np.ndarray, c: int) -> float:
    p, g = pred == c, label == c
    if not p.any() and not g.any():
        return 1.0
    return 2.0 * float((p & g).sum()) / float(p.sum() + g.sum())


def _spread_classes(ckpt: Path, folder: Path, images: list[np.ndarray]) -> Path:
    """A copy of a briefly trained N = 2 checkpoint whose output biases make every class occur.

    One epoch leaves a network that calls most pixels background; shifting each class logit by
    its median over ``images`` makes the comparisons below able to fail.
    """
    from litenext_monai.inference import Predictor, load_network_from_checkpoint

    folder.mkdir()
    network, settings = load_network_from_checkpoint(ckpt, deploy=False)
    predictor = Predictor(network, settings)
    with torch.no_grad():
        x = torch.stack([predictor._prepared(predictor.from_array(a, {"spatial_shape": a.shape[:2]}, "x"))["image"]
                         for a in images]).as_subclass(torch.Tensor)  # fmt: skip
        logits = network(x)
        state = network.state_dict()
        state["head.bias"] = state["head.bias"] - logits.transpose(0, 1).flatten(1).median(dim=1).values
    torch.save(state, folder / "model.pt")
    shutil.copy(ckpt.with_suffix(".json"), folder / "model.json")
    return folder / "model.pt"


def test_several_classes_train_evaluate_and_write_png_nifti_and_seg(tmp_path: Path) -> None:
    from litenext_monai.data import generate_synthetic_dataset
    from litenext_monai.dicom_node import synthetic_mr_series
    from litenext_monai.inference import Predictor, load_network_from_checkpoint

    data = generate_synthetic_dataset(
        tmp_path / "data", "multiclass", 4, 2, 2, image_size=MC_SIZE, seed=1
    ).parent
    datalist = json.loads((data / "datalist.json").read_text())
    # 1. Train: N comes from the datalist (num_classes 2), grey input so that an MR series can be segmented.
    run_cmd(
        bundle_cmd(
            "run", "--config_file", TRAIN, *_common(data, tmp_path), "--image_size", f"[{MC_NET},{MC_NET}]",
            "--in_channels", "1", "--batch_size", "2", "--val_batch_size", "2", "--max_epochs", "1",
        ),
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    card = json.loads((tmp_path / "models" / "model.json").read_text())
    assert (card["num_classes"], card["out_channels"], card["input_mode"]) == (2, 3, "resize")
    assert [s["label"] for s in card["segments"]] == ["cytoplasm", "nucleus"]
    (train_dir,) = (tmp_path / "out").glob("train_*")
    with open(train_dir / "val_per_image_metrics.csv") as handle:
        assert {"dice_class1", "dice_class2"} <= set(next(csv.reader(handle)))

    grey = [
        np.asarray(Image.open(data / case["image"]).convert("L")) for case in datalist["test"]
    ]  # what LoadImage2D(channels=1) sees
    ckpt = _spread_classes(tmp_path / "models" / "model.pt", tmp_path / "spread", grey)
    network, settings = load_network_from_checkpoint(ckpt)
    predictor = Predictor(network, settings)

    # 2. Evaluate: per-class Dice in the CSV equals the Dice of the written label maps (numpy).
    run_cmd(
        bundle_cmd(
            "run", "--config_file", str([TRAIN, EVALUATE]), *_common(data, tmp_path), "--ckpt_path", str(ckpt),
            "--save_predictions", "True", "--output_format", "png", "--tracking", SETTINGS,
        ),
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    (eval_dir,) = (tmp_path / "out").glob("evaluate_*")
    with open(eval_dir / "per_image_metrics.csv") as handle:
        rows = {Path(r["case"]).stem: r for r in csv.DictReader(handle)}
    seen: set[int] = set()
    for case in datalist["test"]:
        stem = Path(case["image"]).stem
        pred = np.asarray(Image.open(eval_dir / "predictions" / f"{stem}_mask.png"))
        label = np.asarray(Image.open(data / case["label"]))
        assert pred.shape == label.shape == (MC_SIZE, MC_SIZE)
        seen |= set(np.unique(pred).tolist())
        for c in (1, 2):
            assert float(rows[stem][f"dice_class{c}"]) == pytest.approx(_dice(pred, label, c), abs=1e-4)
        assert float(rows[stem]["dice"]) == pytest.approx(
            (float(rows[stem]["dice_class1"]) + float(rows[stem]["dice_class2"])) / 2, abs=1e-4
        )
    assert seen == {0, 1, 2}, f"the predictions hold only {seen}: the checks above could not fail"
    # ... and MLflow (real SQLite store) has the per-class means of those Dice values.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("litenext_seg").experiment_id])
    for c in (1, 2):
        expected_mean = np.mean([float(r[f"dice_class{c}"]) for r in rows.values()])
        assert run.data.metrics[f"per_image_mean_dice_class{c}"] == pytest.approx(expected_mean, abs=1e-4)
    metrics = (eval_dir / "metrics.csv").read_text()
    assert "test_mean_dice" in metrics

    # 3. Inference: a PNG, a NIfTI and a two-slice MR series in one folder, output_format auto.
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(grey[0]).save(inputs / "case.png")
    nib.save(nib.Nifti1Image(grey[1].astype(np.uint8), np.eye(4)), inputs / "case2.nii.gz")
    series = synthetic_mr_series([g.astype(np.uint16) for g in grey])
    for k, ds in enumerate(series):
        ds.BitsStored, ds.HighBit = 8, 7
        (inputs / "series").mkdir(exist_ok=True)
        ds.save_as(inputs / "series" / f"{k}.dcm", enforce_file_format=True)
    out = tmp_path / "pred"
    run_cmd(
        bundle_cmd(
            "run", "--config_file", str([TRAIN, INFERENCE]), *_common(data, tmp_path), "--ckpt_path", str(ckpt),
            "--infer_input", str(inputs), "--prediction_dir", str(out), "--save_overlays", "False",
        ),
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    expected = predictor.predict_images(
        [predictor.from_array(g, {"spatial_shape": g.shape}, "x") for g in grey]
    )
    assert set(np.unique(np.stack(expected)).tolist()) == {0, 1, 2}
    png = np.asarray(Image.open(out / "case_mask.png"))
    assert np.array_equal(png, expected[0]), f"{int((png != expected[0]).sum())} pixels differ"
    nifti = np.asarray(nib.load(out / "case2_mask.nii.gz").dataobj)  # H×W as stored
    assert np.array_equal(nifti, expected[1]), f"{int((nifti != expected[1]).sum())} pixels differ"
    (seg_path,) = [p for p in out.rglob("*.dcm")]
    assert dciodvfy_errors(seg_path) == []
    seg = read_seg(seg_path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["cytoplasm", "nucleus"]
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in series],
        combine_segments=True,
        ignore_spatial_locations=True,
    )
    for k in range(2):
        assert np.array_equal(labels[k], expected[k]), f"slice {k} of the SEG differs"


def test_patch_training_writes_a_patch_card_and_infers_at_full_size(tmp_path: Path) -> None:
    from litenext_monai.data import generate_synthetic_dataset
    from litenext_monai.inference import Predictor, load_network_from_checkpoint

    data = generate_synthetic_dataset(
        tmp_path / "data", "large", 4, 2, 1, image_size=LARGE_SIZE, seed=1
    ).parent
    run_cmd(
        bundle_cmd(
            "run", "--config_file", TRAIN, *_common(data, tmp_path), "--input_mode", "patch",
            "--image_size", f"[{PATCH},{PATCH}]", "--in_channels", "1", "--patches_per_image", "2",
            "--batch_size", "2", "--val_batch_size", "2", "--max_epochs", "1",
        ),
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    card = json.loads((tmp_path / "models" / "model.json").read_text())
    assert card["input_mode"] == "patch" and card["image_size"] == [PATCH, PATCH]
    assert (card["num_classes"], card["sw_overlap"], card["sw_batch_size"]) == (1, 0.25, 4)
    # validation ran on whole images (sliding window), not on patches: its overlays are full size
    (train_dir,) = (tmp_path / "out").glob("train_*")
    overlays = sorted((train_dir / "overlays").glob("*.png"))
    assert overlays and all(Image.open(p).size == (LARGE_SIZE, LARGE_SIZE) for p in overlays)

    # Inference on an image larger than the patch (and not a multiple of it), with a threshold
    # at the median probability so that the mask is two-sided.
    image = np.asarray(Image.open(next((data / "images").glob("*"))).convert("L"))[:, :83]
    network, settings = load_network_from_checkpoint(tmp_path / "models" / "model.pt")
    predictor = Predictor(network, settings)
    x = predictor.from_array(image, {"spatial_shape": image.shape}, "x")
    with torch.no_grad():
        probs = torch.sigmoid(predictor.inferer(x[None].as_subclass(torch.Tensor), network))
    folder = tmp_path / "median"
    folder.mkdir()
    shutil.copy(tmp_path / "models" / "model.pt", folder / "model.pt")
    (folder / "model.json").write_text(json.dumps({**card, "threshold": float(probs.median())}))
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image).save(inputs / "wide.png")
    run_cmd(
        bundle_cmd(
            "run", "--config_file", str([TRAIN, INFERENCE]), *_common(data, tmp_path),
            "--ckpt_path", str(folder / "model.pt"), "--infer_input", str(inputs),
            "--prediction_dir", str(tmp_path / "pred"), "--save_overlays", "False",
        ),
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    mask = np.asarray(Image.open(tmp_path / "pred" / "wide_mask.png")) > 0
    assert mask.shape == (LARGE_SIZE, 83)
    network, settings = load_network_from_checkpoint(folder / "model.pt")
    (expected,) = Predictor(network, settings).predict_images([x])
    assert 0.05 < expected.mean() < 0.95
    assert np.array_equal(mask, expected.astype(bool)), f"{int((mask != expected).sum())} pixels differ"

    # Run-time overrides: --tta True and --sw_overlap 0.5 reach the bundle's inferer.
    run_cmd(
        bundle_cmd(
            "run", "--config_file", str([TRAIN, INFERENCE]), *_common(data, tmp_path),
            "--ckpt_path", str(folder / "model.pt"), "--infer_input", str(inputs),
            "--prediction_dir", str(tmp_path / "pred_tta"), "--save_overlays", "False",
            "--tta", "True", "--sw_overlap", "0.5",
        ),
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    mask_tta = np.asarray(Image.open(tmp_path / "pred_tta" / "wide_mask.png")) > 0
    (expected_tta,) = Predictor(network, {**settings, "tta": True, "sw_overlap": 0.5}).predict_images([x])
    assert not np.array_equal(expected_tta, expected), (
        "the overrides change nothing: the check could not fail"
    )
    assert np.array_equal(mask_tta, expected_tta.astype(bool))
