"""Self-describing checkpoints: model.json beside model.pt, network rebuilt from it alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from litenext_monai.inference import load_network_from_checkpoint
from litenext_monai.model import (
    build_network,
    check_network_config,
    read_inference_settings,
    write_inference_settings,
)
from litenext_monai.model.card import checkpoint_sha256
from litenext_monai.networks import LiteNeXt
from tests.hospital_helpers import tiny_checkpoint

NETWORK_DEF = {
    "_target_": "litenext_monai.networks.LiteNeXt",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "base_channels": 4,
    "kernel_size": 3,
}


def _settings(**overrides):
    settings = {
        "network_def": dict(NETWORK_DEF),
        "in_channels": 1,
        "out_channels": 1,
        "image_size": (32, 32),
        "modality": "ct",
        "threshold": 0.5,
    }
    settings.update(overrides)
    return settings


def test_settings_round_trip_as_plain_json(tmp_path: Path) -> None:
    path = write_inference_settings(tmp_path / "models" / "model.pt", _settings())
    assert path == tmp_path / "models" / "model.json"
    raw = json.loads(path.read_text())
    assert raw["image_size"] == [32, 32] and raw["network_def"] == NETWORK_DEF
    assert raw["package_version"]  # filled in from the installed package
    # A key the card lacks reads as its default (the one place for defaults).
    tissue = ["SCT", "85756007", "Tissue"]
    default_segment = {"label": "Foreground", "category": tissue, "type": tissue}
    issue18 = {
        "input_mode": "resize",
        "num_classes": 1,
        "segments": None,
        "sw_overlap": 0.25,
        "sw_batch_size": 4,
    }
    assert read_inference_settings(tmp_path / "models" / "model.pt") == {
        **raw,
        "segment": default_segment,
        **issue18,
        "tta": False,
    }
    assert not list(path.parent.glob(".*"))  # no temporary left behind


def test_missing_or_incomplete_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.json: no inference settings"):
        read_inference_settings(tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps({"network_def": NETWORK_DEF}))
    with pytest.raises(ValueError, match="lack in_channels"):
        read_inference_settings(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="plain JSON"):
        write_inference_settings(tmp_path / "model.pt", _settings(threshold=object()))


def test_loaded_network_reproduces_the_trained_one(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path)
    reference = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1, base_channels=4, kernel_size=3)
    reference.load_state_dict(torch.load(ckpt, weights_only=True))
    network, settings = load_network_from_checkpoint(ckpt, deploy=False)
    assert not network.training
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(network(x), reference.eval()(x), atol=1e-6)
        deployed, _ = load_network_from_checkpoint(ckpt, deploy=True)
        assert torch.allclose(deployed(x), network(x), atol=1e-4)
    # an independent hash of the same bytes
    import hashlib

    assert (
        settings["checkpoint_sha256"]
        == hashlib.sha256(ckpt.read_bytes()).hexdigest()
        == checkpoint_sha256(ckpt)
    )
    assert settings["modality"] == "ct" and settings["segment"]["label"] == "Lesion"


def test_network_def_cannot_run_arbitrary_code(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an importable torch.nn.Module"):
        build_network({"_target_": "os.system", "command": "echo hacked"})
    ckpt = tiny_checkpoint(tmp_path)
    settings = json.loads((tmp_path / "model.json").read_text())
    settings["network_def"]["_target_"] = "builtins.eval"
    (tmp_path / "model.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=r"model\.json.*not an importable"):
        load_network_from_checkpoint(ckpt)


def test_pickled_code_and_wrong_weights_are_refused(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path)
    torch.save({"state": object()}, ckpt)  # needs unpickling of arbitrary objects
    with pytest.raises(ValueError, match="not a readable PyTorch state_dict"):
        load_network_from_checkpoint(ckpt)
    torch.save(LiteNeXt(in_channels=3, base_channels=4, kernel_size=3).state_dict(), ckpt)
    with pytest.raises(ValueError, match="weights do not fit"):
        load_network_from_checkpoint(ckpt)


def test_check_network_config_catches_a_stale_definition() -> None:
    network = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1, base_channels=4, kernel_size=3)
    check_network_config(NETWORK_DEF, network, (32, 32), 1)
    with pytest.raises(ValueError, match="does not rebuild"):
        check_network_config({**NETWORK_DEF, "base_channels": 8}, network, (32, 32), 1)


def _validator(dice: float, epoch: int):
    from types import SimpleNamespace

    return SimpleNamespace(state=SimpleNamespace(metrics={"val_mean_dice": dice}, epoch=epoch))


def test_best_model_saver_writes_settings_and_metadata(tmp_path: Path) -> None:
    from litenext_monai.engines import BestModelSaver
    from litenext_monai.model import network_config

    network = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1, base_channels=4, kernel_size=3)
    metadata = {
        "version": "0.1.0",
        "network_data_format": {
            "inputs": {"image": {"num_channels": 3, "modality": "RGB"}},
            "outputs": {"pred": {"num_channels": 1}},
        },
    }
    # LiteNeXt does not keep base_channels/kernel_size as attributes: given explicitly, as an overlay would
    definition = network_config(network, base_channels=4, kernel_size=3)
    assert definition["in_channels"] == 1 and definition["_target_"].endswith("LiteNeXt")
    settings = {**_settings(), "network_def": definition, "bundle_metadata": metadata}
    saver = BestModelSaver(tmp_path / "models" / "model.pt", network, "val_mean_dice", settings=settings)
    saver(_validator(0.5, 1))
    written = read_inference_settings(tmp_path / "models" / "model.pt")
    assert "bundle_metadata" not in written and written["network_def"]["base_channels"] == 4
    rebuilt, _ = load_network_from_checkpoint(tmp_path / "models" / "model.pt", deploy=False)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), network.eval()(x), atol=1e-6)
    meta = json.loads((tmp_path / "models" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 1 and meta["version"] == "0.1.0"


def test_best_model_saver_writes_no_wrong_settings(tmp_path: Path, caplog) -> None:
    from litenext_monai.engines import BestModelSaver

    network = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1, base_channels=4, kernel_size=3)
    stale = tmp_path / "model.json"
    stale.write_text("{}")  # from an earlier training: must not survive next to new weights
    saver = BestModelSaver(
        tmp_path / "model.pt",
        network,
        "val_mean_dice",
        settings=_settings(network_def={**NETWORK_DEF, "base_channels": 16}),
    )
    saver(_validator(0.5, 1))
    assert (tmp_path / "model.pt").is_file() and not stale.exists()
    assert "model.json is not written" in caplog.text
