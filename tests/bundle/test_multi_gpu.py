"""Multi-process training with torchrun and gloo on the CPU (the multi_gpu_train.json overlay).

Each torch process gets OMP_NUM_THREADS=1: on 2 cores, two processes with default threads slow
each other several-fold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.bundle.conftest import (
    BUNDLE,
    INFERENCE,
    NUM_TRAIN,
    NUM_VAL,
    SETTINGS,
    TRAIN,
    bundle_cmd,
    run_cmd,
    small_overrides,
)

MULTI_GPU = str(BUNDLE / "configs" / "multi_gpu_train.json")
MULTI_GPU_INFERENCE = str(BUNDLE / "configs" / "multi_gpu_inference.json")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
#: No random augmentation, so one process and two see exactly the same samples.
NO_AUGMENTATION = (
    "{'rotate_range_deg': 0.0, 'prob_rotate': 0.0, 'prob_hflip': 0.0, 'prob_vflip': 0.0, "
    "'prob_blur': 0.0, 'prob_intensity': 0.0}"
)


def torchrun_cmd(*args: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
        "-m", "monai.bundle", "run", "--config_file", f"['{TRAIN}','{MULTI_GPU}']", *args,
    ]  # fmt: skip


def _close(expected: dict, actual: dict, what: str) -> None:
    assert expected.keys() == actual.keys()
    for key in expected:
        diff = (expected[key].float() - actual[key].float()).abs().max().item()
        assert diff <= 1e-5, f"{what}.{key}: max |Δ| {diff:.3g} between 1 process and 2 ranks"


def test_two_ranks_equal_one_process_with_twice_the_batch(synthetic_data, tmp_path):
    from mlflow import MlflowClient

    common = ["--augmentation", NO_AUGMENTATION, "--seed", "5"]
    one = small_overrides(synthetic_data, tmp_path / "one" / "out", tmp_path / "one" / "models", max_epochs=1)
    run_cmd(
        bundle_cmd("run", "--config_file", TRAIN, *one, *common, "--batch_size", "4", "--train#dataloader#shuffle", "False"),
        env=ONE_THREAD,
    )  # fmt: skip
    out = tmp_path / "two" / "out"
    two = small_overrides(synthetic_data, out, tmp_path / "two" / "models", max_epochs=1)
    run_cmd(
        torchrun_cmd(*two, *common, "--batch_size", "2", "--train#sampler#shuffle", "False", "--tracking", SETTINGS),
        env=ONE_THREAD, timeout=400, cwd=tmp_path,
    )  # fmt: skip

    single = torch.load(tmp_path / "one" / "models" / "last.pt", weights_only=True)
    ranks = torch.load(tmp_path / "two" / "models" / "last.pt", weights_only=True)
    assert ranks["trainer"]["iteration"] == single["trainer"]["iteration"] == NUM_TRAIN // 4
    for part in ("network", "projector", "target_encoder"):
        _close(single[part], ranks[part], part)
    # One run folder, one checkpoint set, one MLflow run; validation rows of both ranks' shards.
    runs = [p for p in out.iterdir() if p.is_dir() and p.name.startswith("train_")]
    assert len(runs) == 1
    written = {p.name for p in (tmp_path / "two" / "models").iterdir()}
    # one checkpoint set, no per-rank copies (model.json, metadata.json: the self-describing settings)
    assert written == {"last.pt", "last_run_name.txt", "model.pt", "model.json", "metadata.json"}
    rows = (runs[0] / "val_per_image_metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + NUM_VAL
    client = MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("litenext_seg").experiment_id])
    assert run.info.run_name == runs[0].name and run.info.status == "FINISHED"
    assert "val_mean_dice" in run.data.metrics


def _epoch_of(path: Path) -> int | None:
    try:
        state = torch.load(path, weights_only=True)["trainer"]
        return int(state["iteration"]) // int(state["epoch_length"])
    except (OSError, EOFError, RuntimeError, KeyError):
        return None


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


@pytest.mark.skipif(sys.platform != "linux", reason="finds the worker processes with pgrep")
def test_killed_rank_fails_the_job_and_the_run_resumes(synthetic_data, tmp_path):
    models = tmp_path / "models"
    overrides = small_overrides(synthetic_data, tmp_path / "out", models, max_epochs=3)
    overrides += ["--batch_size", "1", "--dist_timeout_s", "60"]
    env = {**os.environ, **ONE_THREAD, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        torchrun_cmd(*overrides),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while _epoch_of(models / "last.pt") != 1:
            assert proc.poll() is None, f"torchrun ended early:\n{proc.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, "no epoch-1 checkpoint within 300 s"
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) == 2, f"expected 2 worker processes, found {workers}"
        os.kill(workers[1], signal.SIGKILL)
        # torchrun notices the dead worker, stops the other one and fails: no hang.
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "ChildFailedError" in output or "exitcode" in output, output[-3000:]
    killed_at = _epoch_of(models / "last.pt")
    assert killed_at is not None and killed_at < 3, "the kill came too late to test resuming"

    run_cmd(torchrun_cmd(*overrides, "--resume", "True"), env=ONE_THREAD, timeout=400, cwd=tmp_path)
    checkpoint = torch.load(models / "last.pt", weights_only=True)
    # 8 images, batch 1 per rank: 4 iterations per epoch; 3 epochs in all, each exactly once.
    assert checkpoint["trainer"]["epoch_length"] == NUM_TRAIN // 2
    assert checkpoint["trainer"]["iteration"] == 3 * NUM_TRAIN // 2


def test_sharded_inference_writes_every_output_once_and_resumes(tmp_path):
    """Two ranks split a folder (PNGs, a DICOM series, a corrupt file) and a rerun skips finished outputs."""
    import numpy as np
    from PIL import Image

    from tests.hospital_helpers import disk_image, tiny_checkpoint, write_ct_series

    ckpt = tiny_checkpoint(tmp_path / "model")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 40), dtype=np.uint8)).save(inputs / f"img{i}.png")
    write_ct_series(inputs / "series", [disk_image(32) for _ in range(3)])
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "predictions"
    infer = [
        *torchrun_cmd()[: torchrun_cmd().index("--config_file")],
        "--config_file", f"['{TRAIN}','{INFERENCE}','{MULTI_GPU_INFERENCE}']", "--bundle_root", str(BUNDLE),
        "--ckpt_path", str(ckpt), "--infer_input", str(inputs), "--prediction_dir", str(out),
        "--output_dir", f"$'{tmp_path / 'eval'}'", "--num_workers", "0", "--progress_bar", "False",
    ]  # fmt: skip
    env = {**os.environ, **ONE_THREAD, "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    first = subprocess.run(infer, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert first.returncode != 0, "a failed input must fail the job"
    outputs = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "failures.csv")
    assert len(outputs) == 6, outputs  # 5 masks + 1 SEG for the 3-slice series, each once
    assert len([o for o in outputs if o.endswith(".dcm")]) == 1
    rows = (out / "failures.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and "broken.png" in rows[1]  # header + the corrupt file, once

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in outputs}
    victim = next(o for o in outputs if o.endswith(".png"))
    (out / victim).unlink()
    second = subprocess.run(
        [*infer, "--skip_existing", "True"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert second.returncode != 0  # broken.png still fails
    assert (out / victim).is_file()
    for name, stamp in stamps.items():
        if name != victim:
            assert (out / name).stat().st_mtime_ns == stamp, f"{name} was rewritten although it existed"
