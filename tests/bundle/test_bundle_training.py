"""Bundle training behaviour: resume after SIGKILL, tracking keeps handlers, SeRP-off/loss swap,
a real MLflow server, and packing a self-contained bundle."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from tests.bundle.conftest import (
    BUNDLE,
    NUM_TRAIN,
    REPO,
    SETTINGS,
    TRAIN,
    bundle_cmd,
    run_cmd,
    small_overrides,
)
from tests.conftest import skip_or_fail

#: MLflow 3 servers start a pool of job-runner processes by default; the tests need none of them.
MLFLOW_SERVER_ENV = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited ({proc.returncode}) before {what}:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _epoch_of(path) -> int | None:
    try:
        state = torch.load(path, weights_only=True)["trainer"]
        return int(state["iteration"]) // int(state["epoch_length"])
    except (OSError, EOFError, RuntimeError, KeyError):
        return None


def test_resume_after_sigkill(synthetic_data, tmp_path):
    """Kill -9 during epoch 2 of 3, resume: the run ends at epoch 3 with every epoch once."""
    max_epochs = 3
    # Batch size 1 makes an epoch 8 iterations long, so the kill lands inside epoch 2.
    overrides = small_overrides(synthetic_data, tmp_path / "out", tmp_path / "models", max_epochs)
    overrides += ["--batch_size", "1"]
    last = tmp_path / "models" / "last.pt"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        bundle_cmd("run", "--config_file", TRAIN, *overrides),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: _epoch_of(last) == 1, 180, "the epoch-1 checkpoint", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _epoch_of(last)
    assert killed_at is not None and killed_at < max_epochs, "the kill came too late to test resuming"
    run_name = (tmp_path / "models" / "last_run_name.txt").read_text().strip()

    run_cmd(bundle_cmd("run", "--config_file", TRAIN, *overrides, "--resume", "True"))
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["trainer"]["epoch_length"] == NUM_TRAIN
    assert checkpoint["trainer"]["iteration"] == max_epochs * NUM_TRAIN
    assert (tmp_path / "models" / "last_run_name.txt").read_text().strip() == run_name
    with open(tmp_path / "out" / run_name / "learning_curve.csv") as handle:
        epochs = [int(r["epoch"]) for r in csv.DictReader(handle)]
    assert epochs == [1, 2, 3]


def _handler_types(engine) -> dict:
    from ignite.engine import Events

    found = {}
    for event in (Events.STARTED, Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED, Events.COMPLETED):
        for handler, _args, _kwargs in engine._event_handlers.get(event, []):
            owner = getattr(handler, "__self__", handler)
            found.setdefault(type(owner).__name__, set()).add(event.name)
    return found


@pytest.mark.parametrize("tracking", ["mlflow", SETTINGS])
def test_tracking_keeps_every_handler(synthetic_data, tmp_path, monkeypatch, tracking):
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(REPO)  # the pipelines are included by a path relative to the repository root
    workflow = ConfigWorkflow(
        config_file=TRAIN,
        workflow_type="train",
        tracking=tracking,
        bundle_root=str(BUNDLE),
        dataset_dir=str(synthetic_data),
        output_dir=f"$'{tmp_path / 'out'}'",
        ckpt_dir=str(tmp_path / "models"),
        image_size=[64, 64],
        in_channels=1,
        num_workers=0,
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    trainer = workflow.parser.get_parsed_content("train#trainer")
    validator = workflow.parser.get_parsed_content("validate#evaluator")
    on_trainer, on_validator = _handler_types(trainer), _handler_types(validator)
    for name in (
        "ValidationHandler",
        "LastCheckpointHandler",
        "LearningCurvePlotter",
        "StatsHandler",
        "MLFlowHandler",
    ):
        assert name in on_trainer, (name, on_trainer)
    for name in (
        "LrScheduleHandler",
        "BestModelSaver",
        "PerImageMetricsSaver",
        "OverlaySaver",
        "MLFlowHandler",
    ):
        assert name in on_validator, (name, on_validator)


def test_serp_off_and_bce_loss(synthetic_data, tmp_path):
    from mlflow import MlflowClient

    out, models = tmp_path / "out", tmp_path / "models"
    overrides = small_overrides(synthetic_data, out, models, max_epochs=1)
    run_cmd(
        bundle_cmd(
            "run", "--config_file", TRAIN, *overrides, "--serp", "False", "--loss#supervised", "bce",
            "--tracking", SETTINGS,
        )
    )  # fmt: skip
    last = torch.load(models / "last.pt", weights_only=True)
    assert "target_encoder" not in last and "projector" not in last
    client = MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("litenext_seg").experiment_id])
    assert "'supervised': 'bce'" in run.data.params["loss_weights"] and run.data.params["serp"] == "False"
    assert "train_bce" in run.data.metrics and "train_serp" not in run.data.metrics
    assert "train_mwl" not in run.data.metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_mlflow_server(synthetic_data, tmp_path):
    from mlflow import MlflowClient

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp_path / 'db.sqlite'}",
            "--default-artifact-root", str(tmp_path / "art"), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=MLFLOW_SERVER_ENV,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        deadline = time.monotonic() + 90
        while not healthy():
            if server.poll() is not None or time.monotonic() > deadline:
                skip_or_fail(f"mlflow server did not become healthy (exit code {server.poll()})")
            time.sleep(0.5)
        overrides = small_overrides(synthetic_data, tmp_path / "out", tmp_path / "models", max_epochs=1)
        run_cmd(
            bundle_cmd(
                "run", "--config_file", TRAIN, *overrides, "--tracking", SETTINGS,
                "--tracking_uri", uri, "--run_name", "server_run",
            )
        )  # fmt: skip
        client = MlflowClient(uri)
        (run,) = client.search_runs(
            [client.get_experiment_by_name("litenext_seg").experiment_id],
            "attributes.run_name = 'server_run'",
        )
        assert run.info.status == "FINISHED"
        assert "val_mean_dice" in run.data.metrics and "split_hash" in run.data.params
        assert any(a.path == "model.pt" for a in client.list_artifacts(run.info.run_id))
        assert not (tmp_path / "out" / "mlruns.db").exists(), "the server, not the local store, must be used"
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def test_packed_bundle_runs_from_anywhere(synthetic_data, tmp_path):
    from litenext_monai.transforms import find_pipeline_file

    packed = tmp_path / "litenext_seg"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pack_bundle.py"), str(BUNDLE), str(packed)], check=True
    )
    assert not any((packed / "models").glob("*.pt"))
    assert find_pipeline_file(packed) == (packed / "transforms" / "litenext_2d.json").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        bundle_cmd(
            "verify_net_in_out", "network_def", "--meta_file", str(packed / "configs" / "metadata.json"),
            "--config_file", str(packed / "configs" / "train.json"), "--n", "4",
        ),
        cwd=elsewhere, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    overrides = small_overrides(synthetic_data, tmp_path / "out", tmp_path / "models", max_epochs=1)
    overrides[overrides.index("--bundle_root") + 1] = str(packed)
    run_cmd(
        bundle_cmd("run", "--config_file", str(packed / "configs" / "train.json"), *overrides), cwd=elsewhere
    )
    assert (tmp_path / "models" / "model.pt").is_file()


def test_any_network_trains_through_the_bundle(synthetic_data, tmp_path):
    """MONAI's UNet, run from outside the repository, with SeRP off and a MONAI loss."""
    overrides = small_overrides(synthetic_data, tmp_path / "out", tmp_path / "models", max_epochs=1)
    network = "{'_target_': 'monai.networks.nets.UNet', 'spatial_dims': 2, 'in_channels': 1, 'out_channels': 1, 'channels': [8, 16, 32], 'strides': [2, 2]}"
    loss = "{'_target_': 'monai.losses.DiceCELoss', 'sigmoid': True}"
    run_cmd(
        bundle_cmd(
            "run", "--config_file", TRAIN, *overrides, "--serp", "False",
            "--network_def", network, "--loss", loss,
        ),
        cwd=tmp_path,
    )  # fmt: skip
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    from monai.networks.nets import UNet

    UNet(2, 1, 1, channels=(8, 16, 32), strides=(2, 2)).load_state_dict(state)  # the saved weights are UNet's
    last = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    assert "projector" not in last and "target_encoder" not in last


def test_same_seed_gives_identical_training_on_cpu(synthetic_data, tmp_path):
    """Two launches with one seed (and a DataLoader worker) end with bit-identical weights."""
    weights = []
    for name in ("a", "b"):
        overrides = small_overrides(
            synthetic_data, tmp_path / name / "out", tmp_path / name / "models", max_epochs=1
        )
        overrides[overrides.index("--num_workers") + 1] = "1"
        run_cmd(bundle_cmd("run", "--config_file", TRAIN, *overrides, "--seed", "7"))
        weights.append(torch.load(tmp_path / name / "models" / "last.pt", weights_only=True))
    for part in ("network", "target_encoder", "projector"):
        first, second = weights[0][part], weights[1][part]
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), f"{part}.{key} differs between identical runs"


def test_no_data_arguments_trains_on_generated_synthetic_data(tmp_path):
    """Without --dataset_dir the bundle generates the built-in data under its root and trains on it."""
    root = tmp_path / "bundle_root"
    run_cmd(
        bundle_cmd(
            "run", "--config_file", TRAIN, "--bundle_root", str(root),
            "--max_epochs", "1", "--image_size", "[64,64]", "--num_workers", "0", "--progress_bar", "False",
        )
    )  # fmt: skip
    datalist = root / "data" / "synthetic_nuclei" / "datalist.json"
    assert datalist.is_file()
    data = json.loads(datalist.read_text())
    assert [len(data[k]) for k in ("training", "validation", "test")] == [160, 20, 40]
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert state["encoder.stem.0.weight"].shape[1] == 3  # the default recipe is RGB: grey is replicated
