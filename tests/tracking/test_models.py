"""MLflow models: logging, registry, dataset inputs, lineage and loading by model URI.

One tracked "training" (an Ignite engine with MONAI's real ``MLFlowHandler`` on a temporary SQLite
store) logs a tiny LiteNeXt checkpoint once per module; the tests check what landed in the store
against values fixed here (the checkpoint's own bytes and outputs, the datalist's split hash, the
Dice fed to the engine), and one test reads it back over HTTP from a real ``mlflow ui``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import litenext_monai
from litenext_monai.model import write_inference_settings
from litenext_monai.networks import LiteNeXt
from litenext_monai.tracking import MLflowLineage, MLflowModelLogger, resolve_checkpoint
from tests.conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 32
SPLIT_HASH = "5e" * 32  # stored in the datalist, so it is the split hash the run must record
BEST_DICE = 0.8125
REGISTERED = "tiny_seg"
NETWORK_KWARGS = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "base_channels": 8,
    "kernel_size": 3,
}

mlflow = pytest.importorskip("mlflow")
from ignite.engine import Engine, Events  # noqa: E402
from monai.handlers import MLFlowHandler  # noqa: E402

#: MLflow 3 servers start a pool of job-runner processes by default; the tests need none of them.
MLFLOW_SERVER_ENV = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass
class Logged:
    tracking_uri: str
    db: Path
    checkpoint: Path
    run_id: str
    logger: MLflowModelLogger


def _network() -> LiteNeXt:
    torch.manual_seed(7)
    net = LiteNeXt(**NETWORK_KWARGS)
    with torch.no_grad():  # non-trivial norm statistics, so the deploy form is really exercised
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _reference_network(checkpoint: Path) -> LiteNeXt:
    """The oracle: LiteNeXt built by hand with the weights of ``checkpoint``."""
    net = LiteNeXt(**NETWORK_KWARGS)
    net.load_state_dict(torch.load(checkpoint, weights_only=True))
    return net.eval()


def _sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _tracked_engine(uri: str, run_name: str, handlers: list, metrics: dict | None = None) -> Engine:
    """An Ignite engine with ``handlers`` attached before MONAI's MLflow handler (as --tracking does)."""
    engine = Engine(lambda engine, batch: None)
    if metrics:
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(metrics))
    for handler in handlers:
        handler.attach(engine)
    MLFlowHandler(
        tracking_uri=uri, experiment_name="litenext_test", run_name=run_name, iteration_log=False,
        close_on_complete=True,
    ).attach(engine)  # fmt: skip
    return engine


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Logged:
    root = tmp_path_factory.mktemp("mlflow_models")
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("LITENEXT_CACHE_DIR", str(root / "cache"))
    db = root / "mlruns.db"
    uri = f"sqlite:///{db}"
    models = root / "models"
    models.mkdir()
    checkpoint = models / "model.pt"
    torch.save(_network().state_dict(), checkpoint)
    write_inference_settings(
        checkpoint,
        {
            "network_def": {"_target_": "litenext_monai.networks.LiteNeXt", **NETWORK_KWARGS},
            "in_channels": 1,
            "out_channels": 1,
            "image_size": [IMAGE_SIZE, IMAGE_SIZE],
            "modality": "ct",
            "threshold": 0.5,
            "segment": {"label": "Nucleus", "category": ["SCT", "91723000", "Anatomical structure"],
                        "type": ["SCT", "84640000", "Nucleus"]},
        },
    )  # fmt: skip
    datalist = root / "data" / "datalist.json"
    datalist.parent.mkdir()
    cases = [{"image": f"images/{i}.png", "label": f"labels/{i}.png"} for i in range(7)]
    datalist.write_text(
        json.dumps(
            {"training": cases[:4], "validation": cases[4:6], "test": cases[6:], "split_hash": SPLIT_HASH}
        )
    )
    model_logger = MLflowModelLogger(checkpoint, register_model=REGISTERED, split_hash=SPLIT_HASH)
    engine = _tracked_engine(
        uri,
        "train_run",
        [MLflowLineage(datalist=datalist), model_logger],
        metrics={"best_val_mean_dice": BEST_DICE},
    )
    engine.run([0, 1], max_epochs=2)
    # logging swaps MLflow's global tracking URI (and its env variable) only for a while
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() != uri
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("litenext_test").experiment_id])
    yield Logged(uri, db, checkpoint, run.info.run_id, model_logger)
    mp.undo()


def test_model_logged_to_the_training_run(logged, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.tracking_uri)
    client = mlflow.MlflowClient(logged.tracking_uri)
    run = client.get_run(logged.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "train_run"
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.name == "model" and model.source_run_id == logged.run_id
    assert model.tags["val_mean_dice"] == f"{BEST_DICE:.6f}" and model.tags["split_hash"] == SPLIT_HASH
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    (spec,) = info.signature.inputs.inputs
    assert spec.type == np.dtype(np.float32) and tuple(spec.shape) == (-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    (spec,) = info.signature.outputs.inputs
    assert spec.type == np.dtype(np.float32) and tuple(spec.shape) == (-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    settings = info.metadata
    assert settings["modality"] == "ct" and settings["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert settings["segment"]["label"] == "Nucleus" and settings["training_run_id"] == logged.run_id
    # the local model.json now names its training run, for lineage of local-file evaluations
    local = json.loads(logged.checkpoint.with_suffix(".json").read_text())
    assert local["training_run_id"] == logged.run_id and local["mlflow_model_id"] == model.model_id


def test_registered_version_carries_its_tags(logged):
    client = mlflow.MlflowClient(logged.tracking_uri)
    version = client.get_model_version(REGISTERED, "1")
    assert version.run_id == logged.run_id
    assert version.tags == {"val_mean_dice": f"{BEST_DICE:.6f}", "split_hash": SPLIT_HASH}
    assert logged.logger.logged.registered_version == "1"


def test_dataset_inputs_listed(logged):
    run = mlflow.MlflowClient(logged.tracking_uri).get_run(logged.run_id)
    found = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d.dataset for d in run.inputs.dataset_inputs
    }
    assert set(found) == {"training", "validation", "test"}
    for context, count in (("training", 4), ("validation", 2), ("test", 1)):
        dataset = found[context]
        assert dataset.name == f"data/{context}"
        assert dataset.digest == SPLIT_HASH[:36]
        assert json.loads(dataset.source)["uri"].endswith("data/datalist.json")
        assert json.loads(dataset.profile) == {"num_cases": count}


def test_run_carries_version_and_commit(logged):
    from importlib import metadata

    tags = mlflow.MlflowClient(logged.tracking_uri).get_run(logged.run_id).data.tags
    assert tags["litenext_monai.version"] == metadata.version("litenext-monai")
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    imported_from_checkout = Path(litenext_monai.__file__).resolve().parents[1] == REPO.resolve()
    if git.returncode == 0 and imported_from_checkout:
        assert tags["mlflow.source.git.commit"] == git.stdout.strip()
    else:
        assert "mlflow.source.git.commit" not in tags


def test_load_by_every_uri_form_equals_file(logged, monkeypatch):
    client = mlflow.MlflowClient(logged.tracking_uri)
    client.set_registered_model_alias(REGISTERED, "champion", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.tracking_uri)
    x = torch.rand(3, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _reference_network(logged.checkpoint)(x)
    paths = set()
    for uri in (f"models:/{REGISTERED}/1", f"models:/{REGISTERED}@champion", f"runs:/{logged.run_id}/model"):
        local = Path(resolve_checkpoint(uri))
        assert local.name == "model.pt" and local.with_suffix(".json").is_file(), uri
        assert _sha256(local) == _sha256(logged.checkpoint), uri
        with torch.no_grad():
            assert torch.equal(_reference_network(local)(x), expected), uri
        paths.add(local)
    assert len(paths) == 2, "the alias and the version it points to share one download"
    assert resolve_checkpoint(str(logged.checkpoint)) == str(logged.checkpoint)


def test_pyfunc_model_serves_the_same_logits(logged, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/1")
    x = np.random.default_rng(2).random((3, 1, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = _reference_network(logged.checkpoint)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), expected, atol=1e-4)


def test_resolve_errors_name_the_problem(logged, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.tracking_uri)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        resolve_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="models:/no_such_model/1"):
        resolve_checkpoint("models:/no_such_model/1")
    with pytest.raises(ValueError, match=f"models:/{REGISTERED}/7"):
        resolve_checkpoint(f"models:/{REGISTERED}/7")
    with pytest.raises(ValueError, match="@nobody"):
        resolve_checkpoint(f"models:/{REGISTERED}@nobody")
    with pytest.raises(ValueError, match="no logged model named 'weights'"):
        resolve_checkpoint(f"runs:/{logged.run_id}/weights")
    with pytest.raises(ValueError, match="expected models:/NAME/VERSION"):
        resolve_checkpoint(f"models:/{REGISTERED}")


@pytest.mark.parametrize("form", ["uri", "local"])
def test_evaluation_run_is_linked_to_its_training_run(logged, monkeypatch, form):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.tracking_uri)
    client = mlflow.MlflowClient(logged.tracking_uri)
    client.set_registered_model_alias(REGISTERED, "champion", "1")
    checkpoint = f"models:/{REGISTERED}@champion" if form == "uri" else str(logged.checkpoint)
    engine = _tracked_engine(logged.tracking_uri, f"evaluate_{form}", [MLflowLineage(checkpoint=checkpoint)])
    engine.run([0], max_epochs=1)
    experiment = client.get_experiment_by_name("litenext_test").experiment_id
    (found,) = client.search_runs([experiment], f"attributes.run_name = 'evaluate_{form}'")
    run = client.get_run(found.info.run_id)
    model_id = client.get_run(logged.run_id).outputs.model_outputs[0].model_id
    assert run.data.tags["litenext_monai.training_run_id"] == logged.run_id
    assert run.data.tags["litenext_monai.model_id"] == model_id
    assert run.data.tags["litenext_monai.checkpoint"] == checkpoint
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]


def test_untraceable_checkpoint_still_evaluates(logged, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.tracking_uri)
    engine = _tracked_engine(
        logged.tracking_uri, "evaluate_unknown", [MLflowLineage(checkpoint="models:/gone@x")]
    )
    engine.run([0], max_epochs=1)
    client = mlflow.MlflowClient(logged.tracking_uri)
    experiment = client.get_experiment_by_name("litenext_test").experiment_id
    (run,) = client.search_runs([experiment], "attributes.run_name = 'evaluate_unknown'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["litenext_monai.checkpoint"] == "models:/gone@x"
    assert "litenext_monai.training_run_id" not in run.data.tags


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.integration
def test_mlflow_ui_serves_model_and_datasets(logged):
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", logged.tracking_uri, "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=MLFLOW_SERVER_ENV,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # a limit for a loaded machine, not a speed test
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if ui.poll() is not None or time.monotonic() > deadline:
                skip_or_fail(f"mlflow ui did not become healthy (exit code {ui.poll()})")
            time.sleep(0.5)
        run = _get_json(f"{base}/ajax-api/2.0/mlflow/runs/get?run_id={logged.run_id}")["run"]
        contexts = {
            {t["key"]: t["value"] for t in d["tags"]}["mlflow.data.context"]: d["dataset"]
            for d in run["inputs"]["dataset_inputs"]
        }
        assert set(contexts) == {"training", "validation", "test"}
        assert {d["digest"] for d in contexts.values()} == {SPLIT_HASH[:36]}
        (output,) = run["outputs"]["model_outputs"]
        model = _get_json(f"{base}/ajax-api/2.0/mlflow/logged-models/{output['model_id']}")["model"]
        assert model["info"]["name"] == "model" and model["info"]["source_run_id"] == logged.run_id
        query = urllib.parse.urlencode({"artifact_file_path": "extra_files/model.pt"})
        url = f"{base}/ajax-api/2.0/mlflow/logged-models/{output['model_id']}/artifacts/files?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert hashlib.sha256(response.read()).hexdigest() == _sha256(logged.checkpoint)
        search = urllib.parse.urlencode({"filter": f"name='{REGISTERED}'"})
        versions = _get_json(f"{base}/ajax-api/2.0/mlflow/model-versions/search?{search}")["model_versions"]
        assert [v["run_id"] for v in versions] == [logged.run_id]
    finally:
        ui.terminate()
        try:
            ui.wait(20)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait(10)
