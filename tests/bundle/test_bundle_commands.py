"""End-to-end bundle commands: train (tracked), evaluate, infer, exports and verification."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from tests.bundle.conftest import (
    BATCH_SIZE,
    BUNDLE,
    CONFIGS,
    EVALUATE,
    IMAGE_SIZE,
    INFERENCE,
    NUM_TEST,
    NUM_TRAIN,
    TRAIN,
    bundle_cmd,
    run_cmd,
    small_overrides,
)


def _mlflow_run(output_dir, run_name):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{output_dir / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("litenext_seg")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == run_name]
    assert len(runs) == 1, [r.info.run_name for r in client.search_runs([experiment.experiment_id])]
    return client, runs[0]


def _artifact_names(client, run_id, path=""):
    names = []
    for item in client.list_artifacts(run_id, path):
        names += _artifact_names(client, run_id, item.path) if item.is_dir else [item.path.rsplit("/", 1)[-1]]
    return names


def test_train_writes_checkpoints(trained_bundle):
    from litenext_monai.networks import LiteNeXt

    best = torch.load(trained_bundle.ckpt_dir / "model.pt", weights_only=True)
    net = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1)
    assert set(best) == set(net.state_dict()), "model.pt must hold the inference network state_dict only"
    net.load_state_dict(best)

    last = torch.load(trained_bundle.ckpt_dir / "last.pt", weights_only=True)
    expected = {"network", "target_encoder", "projector", "optimizer", "lr_scheduler", "trainer"}
    assert expected <= set(last)
    iterations_per_epoch = -(-NUM_TRAIN // BATCH_SIZE)
    assert last["trainer"]["epoch_length"] == iterations_per_epoch
    assert last["trainer"]["iteration"] == trained_bundle.max_epochs * iterations_per_epoch
    # ReduceLROnPlateau(mode="max") was stepped on validation Dice once per epoch.
    assert last["lr_scheduler"]["mode"] == "max"
    assert last["lr_scheduler"]["last_epoch"] == trained_bundle.max_epochs
    run_dir = trained_bundle.output_dir / trained_bundle.run_name
    with open(run_dir / "learning_curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert "val_mean_dice" in rows[0]
    assert Image.open(run_dir / "learning_curve.png").format == "PNG"


def test_train_mlflow_records_everything(trained_bundle):
    client, run = _mlflow_run(trained_bundle.output_dir, trained_bundle.run_name)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["split_hash"] == trained_bundle.datalist["split_hash"]
    assert params["optimizer"] == "torch.optim.NAdam"
    assert float(params["learning_rate"]) == pytest.approx(1e-4)
    assert "'supervised': 'mwl'" in params["loss_weights"] and params["network_parameters"] == "711073"
    assert "'kernel_size': 9" in params["mwl"] and params["ema_momentum"] == "0.99"
    assert params["projector_hidden"] == "8" and params["image_size"] == f"[{IMAGE_SIZE}, {IMAGE_SIZE}]"
    assert "litenext-monai" in params["package_versions"]
    iterations = trained_bundle.max_epochs * -(-NUM_TRAIN // BATCH_SIZE)
    for name in ("train_loss", "train_mwl", "train_dice", "train_serp"):
        assert len(client.get_metric_history(run.info.run_id, name)) == iterations, name
    for name in ("val_mean_dice", "val_mean_iou", "val_precision", "val_recall", "best_val_mean_dice"):
        assert len(client.get_metric_history(run.info.run_id, name)) == trained_bundle.max_epochs, name
    best = max(m.value for m in client.get_metric_history(run.info.run_id, "val_mean_dice"))
    assert run.data.metrics["best_val_mean_dice"] == pytest.approx(best)
    artifacts = _artifact_names(client, run.info.run_id)
    assert "model.pt" in artifacts and "learning_curve.png" in artifacts
    assert "val_per_image_metrics.csv" in artifacts
    assert any(a.endswith("_overlay.png") for a in artifacts)
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts)


def _dice(pred: np.ndarray, label: np.ndarray) -> float:
    inter = np.logical_and(pred, label).sum()
    total = pred.sum() + label.sum()
    return 1.0 if total == 0 else 2.0 * inter / total


def test_evaluate_and_infer_agree(trained_bundle, tmp_path):
    overrides = small_overrides(trained_bundle.data_dir, trained_bundle.output_dir, trained_bundle.ckpt_dir)
    run_cmd(bundle_cmd("run", "--config_file", str([TRAIN, EVALUATE]), *overrides))
    run_cmd(
        bundle_cmd(
            "run",
            "--config_file",
            str([TRAIN, INFERENCE]),
            *overrides,
            "--prediction_dir",
            str(tmp_path / "pred"),
        )
    )

    eval_dirs = sorted(trained_bundle.output_dir.glob("evaluate_*"))
    assert eval_dirs, "evaluate wrote no run folder"
    with open(eval_dirs[-1] / "per_image_metrics.csv") as handle:
        rows = {r["case"]: r for r in csv.DictReader(handle)}
    test_cases = trained_bundle.datalist["test"]
    assert len(rows) == NUM_TEST
    for case in test_cases:
        name = case["image"].rsplit("/", 1)[-1]
        mask = np.asarray(Image.open(tmp_path / "pred" / name.replace(".png", "_mask.png")))
        label = np.asarray(Image.open(trained_bundle.data_dir / case["label"])) > 0
        assert mask.shape == label.shape and set(np.unique(mask)) <= {0, 255}
        assert float(rows[name]["dice"]) == pytest.approx(_dice(mask > 0, label), abs=1e-6)
        assert (tmp_path / "pred" / "overlays" / name.replace(".png", "_overlay.png")).is_file()


def test_inference_keeps_input_geometry(trained_bundle, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(folder / "wide.png")
    affine = np.array([[0.0, -0.7, 0.0, 12.0], [0.8, 0.0, 0.0, -3.0], [0.0, 0.0, 2.5, 40.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(rng.random((40, 30)).astype(np.float32), affine), folder / "slice.nii.gz")
    overrides = small_overrides(trained_bundle.data_dir, trained_bundle.output_dir, trained_bundle.ckpt_dir)
    out = tmp_path / "masks"
    run_cmd(
        bundle_cmd(
            "run", "--config_file", str([TRAIN, INFERENCE]), *overrides,
            "--infer_input", str(folder), "--prediction_dir", str(out), "--save_overlays", "False",
        )
    )  # fmt: skip
    png = np.asarray(Image.open(out / "wide_mask.png"))
    assert png.shape == (50, 70) and png.dtype == np.uint8
    nii = nib.load(out / "slice_mask.nii.gz")
    assert nii.shape == (40, 30)
    np.testing.assert_allclose(nii.affine, affine, atol=1e-6)
    assert set(np.unique(np.asarray(nii.dataobj))) <= {0, 1}
    assert not (out / "overlays").exists()


def test_verify_metadata_offline():
    proc = run_cmd(
        bundle_cmd(
            "verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"),
            "--filepath", str(CONFIGS / "schema" / "meta_schema_20240725.json"),
        )
    )  # fmt: skip
    assert "verified with no error" in proc.stdout + proc.stderr
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert metadata["required_packages_version"]["litenext-monai"] == "0.1.0"


def test_verify_metadata_rejects_missing_field(tmp_path):
    import jsonschema

    schema = json.loads((CONFIGS / "schema" / "meta_schema_20240725.json").read_text())
    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    del metadata["network_data_format"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(metadata, schema)


def test_verify_net_in_out():
    proc = run_cmd(
        bundle_cmd(
            "verify_net_in_out", "network_def", "--meta_file", str(CONFIGS / "metadata.json"),
            "--config_file", TRAIN, "--n", "4",
        )
    )  # fmt: skip
    assert "verified with no error" in proc.stdout + proc.stderr


def test_exports_round_trip(trained_bundle, tmp_path):
    import onnxruntime

    from litenext_monai.networks import LiteNeXt

    # network_export: the training form that turns into the deploy form once MONAI loads model.pt.
    common = [
        "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str([TRAIN, INFERENCE]), "--in_channels", "1",
    ]  # fmt: skip
    ckpt = str(trained_bundle.ckpt_dir / "model.pt")
    run_cmd(
        bundle_cmd(
            "ckpt_export",
            "network_export",
            "--filepath",
            str(tmp_path / "model.ts"),
            "--ckpt_file",
            ckpt,
            *common,
        )
    )
    run_cmd(
        bundle_cmd(
            "onnx_export", "network_export", "--filepath", str(tmp_path / "model.onnx"), "--ckpt_file", ckpt, *common,
            "--input_shape", f"[1,1,{IMAGE_SIZE},{IMAGE_SIZE}]", "--use_trace", "True",
            "--converter_kwargs", "{'dynamo': False}",
        )
    )  # fmt: skip
    net = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1)
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    net.eval()
    x = torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x).numpy()
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    names = {name for name, _ in scripted.named_parameters()}
    assert "context.score.weight" not in names and any(n.startswith("context.key_scores.") for n in names)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), expected, atol=1e-5)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(onnx_out, expected, atol=1e-4)


def test_bundle_layout():
    for rel in (
        "LICENSE",
        "docs/README.md",
        "models/.gitkeep",
        "configs/logging.conf",
        "configs/inference.json",
    ):
        assert (BUNDLE / rel).is_file(), rel
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()
