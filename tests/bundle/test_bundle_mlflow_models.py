"""Bundle-level MLflow models: ``--register_model`` on a tracked training, inference by model URI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.bundle.conftest import INFERENCE, REPO, SETTINGS, TRAIN, bundle_cmd, run_cmd, small_overrides

REGISTERED = "litenext_bundle_test"
# inference.json resolves the checkpoint without a tracking URI; point it at the run's store


@pytest.mark.slow
def test_register_and_infer_by_uri(synthetic_data, tmp_path):
    from mlflow import MlflowClient

    out, models = tmp_path / "out", tmp_path / "models"
    overrides = small_overrides(synthetic_data, out, models, max_epochs=1)
    env = {"LITENEXT_CACHE_DIR": str(tmp_path / "cache")}
    run_cmd(
        bundle_cmd(
            "run", "--config_file", TRAIN, *overrides, "--tracking", SETTINGS,
            "--run_name", "train_reg", "--register_model", REGISTERED,
        ),
        env=env,
    )  # fmt: skip
    client = MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("litenext_seg").experiment_id
    (train_run,) = client.search_runs([experiment], "attributes.run_name = 'train_reg'")
    train_run = client.get_run(train_run.info.run_id)

    datalist = json.loads((synthetic_data / "datalist.json").read_text())
    (version,) = client.search_model_versions(f"name = '{REGISTERED}'")
    assert version.run_id == train_run.info.run_id
    assert version.tags["split_hash"] == datalist["split_hash"]
    assert float(version.tags["val_mean_dice"]) == pytest.approx(
        train_run.data.metrics["best_val_mean_dice"], abs=1e-6
    )
    contexts = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d.dataset.digest
        for d in train_run.inputs.dataset_inputs
    }
    assert contexts == {c: datalist["split_hash"][:36] for c in ("training", "validation", "test")}
    assert "litenext_monai.version" in train_run.data.tags
    (output,) = train_run.outputs.model_outputs
    local_settings = json.loads((models / "model.json").read_text())
    assert local_settings["training_run_id"] == train_run.info.run_id
    assert local_settings["mlflow_model_id"] == output.model_id

    client.set_registered_model_alias(REGISTERED, "champion", version.version)
    predictions = {}
    for label, ckpt in (("file", str(models / "model.pt")), ("uri", f"models:/{REGISTERED}@champion")):
        predictions[label] = tmp_path / f"pred_{label}"
        run_cmd(
            bundle_cmd(
                "run", "--config_file", str([TRAIN, INFERENCE]), *overrides,
                "--ckpt_path", ckpt,
                "--prediction_dir", str(predictions[label]), "--save_overlays", "False",
                "--tracking", SETTINGS, "--run_name", f"infer_{label}",
            ),
            env=env,
        )  # fmt: skip
    masks = sorted(p.name for p in Path(predictions["file"]).glob("*_mask.png"))
    assert len(masks) == len(datalist["test"])
    for name in masks:
        by_file = np.asarray(Image.open(predictions["file"] / name))
        by_uri = np.asarray(Image.open(predictions["uri"] / name))
        np.testing.assert_array_equal(by_uri, by_file, err_msg=name)
    for label in ("file", "uri"):
        (run,) = client.search_runs([experiment], f"attributes.run_name = 'infer_{label}'")
        assert run.data.tags["litenext_monai.training_run_id"] == train_run.info.run_id, label
        assert run.data.tags["litenext_monai.model_id"] == output.model_id, label

    # The export command takes the same URI and exports the same weights (deploy form).
    from monai.data import load_net_with_metadata

    from litenext_monai.inference import load_network_from_checkpoint

    run_cmd(
        [
            sys.executable, str(REPO / "scripts" / "export.py"), f"models:/{REGISTERED}/{version.version}",
            str(tmp_path / "model.ts"), "--tracking-uri", f"sqlite:///{out / 'mlruns.db'}",
        ],
        env=env,
    )  # fmt: skip
    scripted, _, extra = load_net_with_metadata(str(tmp_path / "model.ts"), more_extra_files=("model.json",))
    assert json.loads(extra["model.json"])["training_run_id"] == train_run.info.run_id
    by_file, _ = load_network_from_checkpoint(models / "model.pt", deploy=False)
    x = torch.rand(2, 1, *local_settings["image_size"], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), by_file(x).numpy(), atol=1e-5)
