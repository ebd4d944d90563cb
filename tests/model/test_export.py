"""Exports of a self-describing checkpoint: deploy form, checked against PyTorch, written safely."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from litenext_monai.model import deploy_on_load, export_checkpoint
from litenext_monai.model.export import export_format
from litenext_monai.networks import LiteNeXt
from tests.hospital_helpers import tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _training_form(ckpt: Path) -> LiteNeXt:
    settings = json.loads(ckpt.with_name("model.json").read_text())
    kwargs = {k: v for k, v in settings["network_def"].items() if k != "_target_"}
    net = LiteNeXt(**kwargs)
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    return net.eval()


def _input(seed: int = 1, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_torchscript_export_is_the_deploy_form_with_settings(tmp_path: Path) -> None:
    from monai.data import load_net_with_metadata

    ckpt = tiny_checkpoint(tmp_path / "models")
    summary = export_checkpoint(ckpt, tmp_path / "model.ts")
    assert summary["format"] == "torchscript" and summary["deploy"] is True
    assert summary["max_abs_diff"] <= 1e-5
    scripted, meta, extra = load_net_with_metadata(
        str(tmp_path / "model.ts"), more_extra_files=("model.json",)
    )
    # Deploy form: the score layer is folded into the key/query MLPs, so it is gone from the graph.
    names = {name for name, _ in scripted.named_parameters()}
    assert not any(n.startswith("context.score.") for n in names)
    assert any(n.startswith("context.key_scores.") for n in names)
    settings = json.loads(extra["model.json"])
    assert settings["in_channels"] == 1 and settings["image_size"] == [32, 32]
    assert "checkpoint" not in settings and len(settings["checkpoint_sha256"]) == 64
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    # An independent reference: the training form loaded straight from model.pt, other input, batch 3.
    x = _input(batch=3)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), _training_form(ckpt)(x).numpy(), atol=1e-5)


def test_onnx_export_has_a_free_batch_axis_and_metadata(tmp_path: Path) -> None:
    import onnx
    import onnxruntime

    ckpt = tiny_checkpoint(tmp_path / "models")
    export_checkpoint(ckpt, tmp_path / "model.onnx")
    model = onnx.load(str(tmp_path / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["model.json"])["modality"] == "ct"
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = _input(batch=2)
    (logits,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, _training_form(ckpt)(x).numpy(), atol=1e-4)


def test_training_form_export_and_no_overwrite(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "models")
    target = tmp_path / "train_form.ts"
    export_checkpoint(ckpt, target, deploy=False)
    names = {name for name, _ in torch.jit.load(str(target)).named_parameters()}
    assert any(n.startswith("context.score.") for n in names)
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="train_form.ts: already exists"):
        export_checkpoint(ckpt, target)
    assert target.read_bytes() == before
    export_checkpoint(ckpt, target, overwrite=True)
    assert target.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "train_form.ts"]  # no temporaries


def test_bad_requests_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot tell the export format"):
        export_format(tmp_path / "model.bin")
    with pytest.raises(ValueError, match="unknown export format"):
        export_format(tmp_path / "model.ts", "tflite")
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint file"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "model.ts")
    assert not (tmp_path / "model.ts").exists()


def test_deploy_on_load_converts_after_a_complete_load_only(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "models")
    state = torch.load(ckpt, weights_only=True)
    net = deploy_on_load(LiteNeXt(in_channels=1, base_channels=4, kernel_size=3))
    with pytest.raises(RuntimeError):
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    assert not net.deployed  # a failed load leaves the training form
    net.load_state_dict(state)
    assert net.deployed and not net.training
    x = _input()
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), _training_form(ckpt)(x).numpy(), atol=1e-5)
    untouched = deploy_on_load(LiteNeXt(in_channels=1, base_channels=4, kernel_size=3), deploy=False)
    untouched.load_state_dict(state)
    assert not untouched.deployed


def test_script_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = tiny_checkpoint(tmp_path / "models")
    script = str(REPO / "scripts" / "export.py")

    def cli(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", [script, *args])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(script, run_name="__main__")
        return stop.value.code

    assert cli(str(ckpt), str(tmp_path / "m.onnx")) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "onnx"
    assert cli(str(ckpt), str(tmp_path / "m.onnx")) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        cli("models:/", str(tmp_path / "x.ts"), "--tracking-uri", f"sqlite:///{tmp_path / 'db.sqlite'}") == 2
    )
    assert "models:/" in capsys.readouterr().err
    assert cli(str(ckpt), str(tmp_path / "x.ts"), "--batch-size", "0") == 2
    assert not (tmp_path / "x.ts").exists()


def test_failed_check_with_overwrite_keeps_the_previous_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from litenext_monai.model import export

    ckpt = tiny_checkpoint(tmp_path / "models")
    target = tmp_path / "model.ts"
    export_checkpoint(ckpt, target)
    good = target.read_bytes()
    # No export can pass a negative tolerance: the check fails on the temporary file.
    monkeypatch.setattr(export, "EXPORT_ATOL", -1.0)
    for fmt_target in (target, tmp_path / "model.onnx"):
        with pytest.raises(ValueError, match="differs from PyTorch"):
            export_checkpoint(ckpt, fmt_target, overwrite=True)
    assert target.read_bytes() == good  # the earlier good export survives the failed replacement
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ts", "models"]  # no temporaries
