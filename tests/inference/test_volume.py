"""Volume inference: geometry, slice content and errors, checked against a network whose output is known."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from pydicom.uid import generate_uid
from torch import nn

from litenext_monai.inference import load_inference_network, segment_volume
from litenext_monai.io import read_dicom_series
from litenext_monai.networks import LiteNeXt
from tests.dicom_helpers import write_dicom_slice
from tests.hospital_helpers import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (40, 52, 7)


class ThresholdingNet(nn.Module):
    """Stand-in network with a known answer: logits ``10 (x - 0.5)`` of channel 0.

    Its mask is therefore ``normalised input > 0.5``; it records every batch it sees.
    """

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.detach().clone())
        return 10.0 * (x[:, :1] - 0.5)


def _affine() -> np.ndarray:
    """Rotation about two axes, anisotropic spacing and an offset."""
    a, b = np.deg2rad(30.0), np.deg2rad(-12.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.8, 1.3, 3.5])
    affine[:3, 3] = [-91.5, 12.25, 40.0]
    return affine


def _volume(seed: int = 0) -> np.ndarray:
    """Random intensities whose scale differs per voxel index on every axis (per-slice normalisation matters)."""
    rng = np.random.default_rng(seed)
    data = rng.gamma(2.0, 100.0, SHAPE)
    i, j, k = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    return (data * (1 + i % 5) * (1 + 2 * (j % 3)) * (1 + k)).astype(np.float32)


def _save(data: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, _affine() if affine is None else affine), str(path))
    return path


def _mr_normalised(slice_2d: np.ndarray) -> np.ndarray:
    low, high = np.percentile(slice_2d.astype(np.float64), [1.0, 99.0])
    return np.clip((slice_2d - low) / (high - low), 0.0, 1.0)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_masks_match(mask: np.ndarray, expected_norm: np.ndarray) -> None:
    """Mask equals ``normalised > 0.5`` wherever rounding cannot decide the other way."""
    clear = np.abs(expected_norm - 0.5) > 1e-4
    assert clear.mean() > 0.99
    assert np.array_equal(mask[clear], (expected_norm > 0.5)[clear])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_nifti_geometry_and_slices_along_each_axis(tmp_path: Path, axis: int) -> None:
    data = _volume()
    source = _save(data, tmp_path / "scan.nii.gz")
    before = _digest(source)
    slice_shape = tuple(s for a, s in enumerate(SHAPE) if a != axis)
    net = ThresholdingNet()
    # image_size = the slice size makes the resize an identity, so the mask is known exactly.
    out = segment_volume(
        net, source, tmp_path / "out" / "mask.nii.gz", axis=axis, image_size=slice_shape, batch_size=3, modality="mr"
    )

    result = nib.load(str(out))
    mask = np.asarray(result.dataobj)
    assert mask.shape == SHAPE and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert np.allclose(result.affine, _affine())
    assert _digest(source) == before
    assert [b.shape[0] for b in net.batches] == [3] * (SHAPE[axis] // 3) + (
        [SHAPE[axis] % 3] if SHAPE[axis] % 3 else []
    )
    assert all(tuple(b.shape[2:]) == slice_shape for b in net.batches)
    for k in range(SHAPE[axis]):
        expected = _mr_normalised(np.take(data, k, axis=axis))
        _assert_masks_match(np.take(mask, k, axis=axis), expected)


def test_slices_are_segmented_independently(tmp_path: Path) -> None:
    data = _volume(seed=3)
    changed = data.copy()
    changed[..., 4] = np.random.default_rng(9).uniform(0, 5000, SHAPE[:2])
    kwargs = {"axis": 2, "image_size": SHAPE[:2], "batch_size": 4, "modality": "mr"}
    first = segment_volume(
        ThresholdingNet(), _save(data, tmp_path / "a.nii"), tmp_path / "a_mask.nii", **kwargs
    )
    second = segment_volume(
        ThresholdingNet(), _save(changed, tmp_path / "b.nii"), tmp_path / "b_mask.nii", **kwargs
    )
    a, b = np.asarray(nib.load(str(first)).dataobj), np.asarray(nib.load(str(second)).dataobj)
    others = [k for k in range(SHAPE[2]) if k != 4]
    assert np.array_equal(a[..., others], b[..., others])
    assert not np.array_equal(a[..., 4], b[..., 4])


def test_resize_and_channel_replication(tmp_path: Path) -> None:
    # Constant slices survive any resize, so the mask is known at a network size unlike the slice size.
    values = np.array([0.2, 0.8, 0.1, 0.9, 0.3, 0.7, 0.6])
    data = np.broadcast_to(values, SHAPE).astype(np.float32).copy()
    source = _save(data, tmp_path / "const.nii.gz")
    net = ThresholdingNet(in_channels=3)
    out = segment_volume(
        net, source, tmp_path / "mask.nii.gz", image_size=(32, 48), modality="none", batch_size=8
    )
    mask = np.asarray(nib.load(str(out)).dataobj)
    assert mask.shape == SHAPE
    for k, value in enumerate(values):
        assert np.all(mask[..., k] == int(value > 0.5)), k
    (batch,) = net.batches
    assert tuple(batch.shape) == (7, 3, 32, 48)
    assert type(batch) is torch.Tensor  # a plain tensor, as a traced or exported network needs
    assert torch.allclose(batch[:, 0], batch[:, 1], atol=1e-6) and torch.allclose(
        batch[:, 0], batch[:, 2], atol=1e-6
    )


def _write_series(
    folder: Path, slices: np.ndarray, positions: list[np.ndarray], orientation: list[float]
) -> None:
    series = generate_uid()
    for name, (pixels, position) in enumerate(zip(slices, positions, strict=True)):
        write_dicom_slice(
            folder / f"im{name}.dcm",
            pixels,
            series_uid=series,
            instance=name + 1,
            position=position,
            orientation=orientation,
            spacing=(0.7, 0.9),
            patient_id="SECRET-ID-42",
            patient_name="Doe^Secretname",
        )


def test_dicom_series_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    rows, cols, n = 12, 20, 5
    slices = (rng.integers(0, 4000, (n, rows, cols)) // (1 + np.arange(n))[:, None, None]).astype(np.uint16)
    c, s = np.cos(np.deg2rad(20.0)), np.sin(np.deg2rad(20.0))
    orientation = [c, s, 0.0, 0.0, 0.0, -1.0]  # an oblique coronal series
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.array([10.0, -30.0, 55.0])
    order = [3, 0, 4, 1, 2]  # file k sits at slice position order[k]
    positions = [origin + 2.5 * p * normal for p in order]
    folder = tmp_path / "series"
    folder.mkdir()
    _write_series(folder, slices, positions, orientation)
    before = {p.name: _digest(p) for p in folder.iterdir()}

    with caplog.at_level(logging.DEBUG):
        out = segment_volume(
            ThresholdingNet(), folder, tmp_path / "series_mask.nii.gz", image_size=(rows, cols), modality="mr"
        )
    result = nib.load(str(out))
    mask = np.asarray(result.dataobj)
    _, meta = read_dicom_series(folder)
    assert mask.shape == (rows, cols, n) and mask.dtype == np.uint8
    assert np.allclose(result.affine, meta["affine"])
    # Independent of the reader: voxel (0, 0, k) lies at the k-th position along the normal, in RAS.
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    for k in range(n):
        world = result.affine @ np.array([0.0, 0.0, k, 1.0])
        assert np.allclose(world[:3], lps_to_ras * (origin + 2.5 * k * normal), atol=1e-4)
    for k in range(n):
        expected = _mr_normalised(slices[order.index(k)].astype(np.float32))
        _assert_masks_match(mask[..., k], expected)
    assert {p.name: _digest(p) for p in folder.iterdir()} == before
    assert "SECRET" not in caplog.text and "Doe" not in caplog.text


def test_litenext_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1, base_channels=4)
    checkpoint = tmp_path / "model.pt"
    torch.save(trained.state_dict(), checkpoint)

    net = load_inference_network(checkpoint, in_channels=1, base_channels=4, deploy=False)
    assert not net.training
    for key, value in trained.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    data = np.random.default_rng(1).normal(100, 30, (20, 27, 3)).astype(np.float32)
    affine = _affine()
    source = _save(data, tmp_path / "tiny.nii.gz", affine)
    out = segment_volume(net, source, tmp_path / "tiny_mask.nii.gz", image_size=(32, 32), batch_size=2)
    result = nib.load(str(out))
    mask = np.asarray(result.dataobj)
    assert mask.shape == data.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert np.allclose(result.affine, affine)

    with pytest.raises(ValueError, match="model.pt"):
        load_inference_network(checkpoint, in_channels=3, base_channels=4)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_inference_network(tmp_path / "missing.pt", in_channels=1)
    with pytest.raises(ValueError, match="in_channels must be given"):
        load_inference_network(checkpoint)


def test_self_describing_checkpoint_needs_no_settings(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "models")  # model.pt + model.json (in_channels 1, base 4)
    net = load_inference_network(checkpoint)
    reference = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1, base_channels=4, kernel_size=3)
    reference.load_state_dict(torch.load(checkpoint, weights_only=True))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), reference.eval()(x), atol=1e-4)
    with pytest.raises(ValueError, match=r"in_channels=1 \(model.json\), not 3"):
        load_inference_network(checkpoint, in_channels=3)


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    flat = _save(np.ones((16, 16), np.float32), tmp_path / "flat2d.nii.gz")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    net = ThresholdingNet()
    with pytest.raises(ValueError, match=r"flat2d\.nii\.gz.*3D"):
        segment_volume(net, flat, tmp_path / "o1.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.nii\.gz"):
        segment_volume(net, tmp_path / "nowhere.nii.gz", tmp_path / "o2.nii.gz")
    with pytest.raises(ValueError, match=r"notes\.txt: unsupported"):
        segment_volume(net, notes, tmp_path / "o3.nii.gz")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz: unreadable"):
        segment_volume(net, broken, tmp_path / "o4.nii.gz")
    with pytest.raises(ValueError, match=r"empty_dir: no DICOM images"):
        (tmp_path / "empty_dir").mkdir()
        segment_volume(net, tmp_path / "empty_dir", tmp_path / "o5.nii.gz")
    with pytest.raises(ValueError, match=r"mask\.png.*NIfTI"):
        segment_volume(net, _save(_volume(), tmp_path / "v.nii.gz"), tmp_path / "mask.png")
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


def _cli():
    spec = importlib.util.spec_from_file_location(
        "segment_volume_cli", ROOT / "scripts" / "segment_volume.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_processes_good_inputs_and_reports_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = tmp_path / "model.pt"
    torch.save(LiteNeXt(spatial_dims=2, in_channels=1, base_channels=4).state_dict(), checkpoint)
    good = _save(
        np.random.default_rng(2).normal(size=(18, 21, 3)).astype(np.float32), tmp_path / "good.nii.gz"
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("hello")
    cli = _cli()
    options = ["--in-channels", "1", "--image-size", "16", "16", "--modality", "mr", "--base-channels", "4"]

    status = cli.main([str(checkpoint), str(bad), str(good), str(tmp_path / "masks"), *options])
    assert status == 1
    assert "bad.txt" in capsys.readouterr().err
    written = tmp_path / "masks" / "good_mask.nii.gz"
    assert np.asarray(nib.load(str(written)).dataobj).shape == (18, 21, 3)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["good_mask.nii.gz"]

    config = tmp_path / "train.json"
    config.write_text(
        json.dumps(
            {
                "in_channels": 1,
                "image_size": [16, 16],
                "modality": "ct",
                "threshold": 0.5,
                "network_def": {"in_channels": "@in_channels", "base_channels": 4, "kernel_size": 7},
            }
        )
    )
    single = tmp_path / "single.nii"
    assert cli.main([str(checkpoint), str(good), str(single), "--config", str(config), "--axis", "0"]) == 0
    assert np.allclose(nib.load(str(single)).affine, _affine())
    with pytest.raises(SystemExit):
        cli.main([str(checkpoint), str(good), str(single), "--in-channels", "1", "--image-size", "20", "20"])


def test_command_line_needs_only_a_self_describing_checkpoint(tmp_path: Path) -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "segment_volume.py"
    spec = importlib.util.spec_from_file_location("segment_volume_cli", script)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    checkpoint = tiny_checkpoint(tmp_path / "models")
    source = _save(np.random.default_rng(2).random((20, 24, 3)).astype(np.float32), tmp_path / "vol.nii.gz")
    assert (
        cli.main([str(checkpoint), str(source), str(tmp_path / "vol_mask.nii.gz")]) == 0
    )  # no --in-channels
    mask = nib.load(tmp_path / "vol_mask.nii.gz")
    assert mask.shape == (20, 24, 3) and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
