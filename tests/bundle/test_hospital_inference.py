"""Folder inference over the hostile-input corpus (issue 7): every input handled or reported, never silent.

The bundle runs as a user would run it, with nothing but ``--ckpt_path`` (a self-describing
checkpoint) and the input folder. Oracles: the corpus' own list of what each input must give,
``dciodvfy`` for every SEG, highdicom reading the SEGs back, and a second run with
``--output_format png`` whose masks the SEG frames must equal pixel for pixel.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.bundle.conftest import (
    BUNDLE,
    IMAGE_SIZE,
    INFERENCE,
    SETTINGS,
    TRAIN,
    bundle_cmd,
    expr_path,
    run_cmd,
)
from tests.hospital_corpus import PHI, build_corpus
from tests.hospital_helpers import dciodvfy_errors, read_seg, tiny_checkpoint

pytestmark = pytest.mark.slow


def _infer(ckpt: Path, inputs: Path | str, out: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = bundle_cmd(
        "run", "--config_file", str([TRAIN, INFERENCE]), "--bundle_root", str(BUNDLE),
        "--ckpt_path", str(ckpt), "--infer_input", str(inputs), "--prediction_dir", str(out),
        "--output_dir", expr_path(tmp / "eval"), "--num_workers", "0", "--progress_bar", "False", *extra,
    )  # fmt: skip
    return run_cmd(cmd, timeout=600, env={"OMP_NUM_THREADS": "1"}, check=False)


def _failures(folder: Path, root: Path) -> dict[str, str]:
    with open(folder / "failures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {Path(r["input"]).relative_to(root).as_posix(): r["reason"] for r in rows}


def _check_mlflow_run(db: Path, failures: int) -> None:
    """The inference run logged the failure count as a metric and failures.csv as an artifact."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "litenext_seg"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["failures"] == failures
    assert run.data.params["output_format"] == "auto"
    assert "failures.csv" in [a.path for a in client.list_artifacts(run.info.run_id)]
    params = " ".join(run.data.params.values())
    assert all(secret not in params for secret in PHI)


def test_hostile_corpus_is_handled_or_reported(tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "inputs")
    ckpt = tiny_checkpoint(tmp_path / "model")
    out = tmp_path / "pred"
    out.mkdir()
    stale = out / ".litenext-tmp.grey_mask.abc123.png"  # what a run killed mid-write leaves behind
    stale.write_bytes(b"\x89PNG half")
    before = {p: p.read_bytes() for p in corpus.root.rglob("*") if p.is_file()}

    proc = _infer(ckpt, corpus.root, out, tmp_path, "--tracking", SETTINGS)

    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, "a batch with failed inputs must exit non-zero"
    assert re.search(rf"{len(corpus.failures)} of {len(corpus.inputs())} inputs got no output", log), log[
        -3000:
    ]
    failures = _failures(out, corpus.root)
    written = {p.name for p in out.iterdir() if p.is_file()} - {"failures.csv"}
    handled, clear, silent, wrong = [], [], [], []
    for name in corpus.inputs():
        if name in corpus.outputs:
            ok = corpus.outputs[name] in written and name not in failures
            (handled if ok else wrong).append(name)
        elif name in failures:
            (clear if re.search(corpus.failures[name], failures[name]) else wrong).append(name)
        else:
            silent.append(name)
    print(f"corpus: handled={len(handled)} clear_errors={len(clear)} silent={len(silent)} wrong={len(wrong)}")
    assert not silent and not wrong, (silent, wrong, failures)
    assert set(failures) == set(corpus.failures)
    assert written == set(corpus.outputs.values())  # nothing else, nothing overwritten
    assert not stale.exists() and not list(out.rglob(".litenext-tmp.*"))
    assert all(p.read_bytes() == data for p, data in before.items())  # inputs never modified
    for secret in PHI:  # no patient identifier in logs or the report
        assert secret not in log and secret not in (out / "failures.csv").read_text()
    _check_mlflow_run(tmp_path / "eval" / "mlruns.db", len(corpus.failures))

    for seg_name in {v for v in corpus.outputs.values() if v.endswith("_seg.dcm")}:
        assert dciodvfy_errors(out / seg_name) == [], seg_name
        seg = read_seg(out / seg_name)
        assert seg.SegmentationType == "BINARY" and int(seg.NumberOfFrames) == len(
            corpus.seg_sources[seg_name]
        )

    # The same inputs as PNG: every SEG frame equals the PNG mask of its source, pixel for pixel.
    png_out = tmp_path / "png"
    proc = _infer(ckpt, corpus.root, png_out, tmp_path, "--output_format", "png", "--save_overlays", "False")
    assert proc.returncode != 0
    for seg_name, sources in corpus.seg_sources.items():
        seg = read_seg(out / seg_name)
        for source in sources:
            uid = pydicom.dcmread(corpus.root / source).SOPInstanceUID
            frame = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uid], segment_numbers=[1], ignore_spatial_locations=True
            )[0, ..., 0]
            stem = Path(source).name.removesuffix(".dcm")
            stem = "collide_dcm" if stem == "collide" else stem
            png = np.asarray(Image.open(png_out / f"{stem}_mask.png")) > 0
            assert frame.shape == png.shape and np.array_equal(frame.astype(bool), png), source
            assert 0 < png.mean() < 1, source  # a mask with both classes: the comparison can fail


def test_training_writes_a_self_describing_checkpoint(trained_bundle, tmp_path: Path) -> None:
    from litenext_monai.inference import Predictor, load_network_from_checkpoint

    ckpt = trained_bundle.ckpt_dir / "model.pt"
    settings = json.loads((trained_bundle.ckpt_dir / "model.json").read_text())
    assert settings["in_channels"] == 1 and settings["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert (
        settings["network_def"]["_target_"].endswith("LiteNeXt")
        and settings["network_def"]["in_channels"] == 1
    )
    assert settings["segment"]["category"][0] == "SCT" and settings["threshold"] == 0.5
    metadata = json.loads((trained_bundle.ckpt_dir / "metadata.json").read_text())
    assert metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    # MONAI's own check of the 1-channel network against the metadata written for it
    verified = run_cmd(
        bundle_cmd(
            "verify_net_in_out", "network_def", "--meta_file", str(trained_bundle.ckpt_dir / "metadata.json"),
            "--config_file", TRAIN, "--in_channels", "1",
        )
    )  # fmt: skip
    assert "verified with no error" in verified.stdout + verified.stderr

    # inference needs nothing but the checkpoint: no --in_channels, --image_size or --modality
    images = [trained_bundle.data_dir / e["image"] for e in trained_bundle.datalist["test"]]
    out = tmp_path / "pred"
    proc = _infer(ckpt, repr([str(i) for i in images]), out, tmp_path, "--save_overlays", "False")
    assert proc.returncode == 0, proc.stderr[-3000:]
    network, loaded = load_network_from_checkpoint(ckpt)
    predictor = Predictor(network, loaded)
    for image in images:
        (expected,) = predictor.predict(image)
        mask = np.asarray(Image.open(out / f"{image.stem}_mask.png")) > 0
        assert np.array_equal(mask, expected.astype(bool)), image.name
    assert (out / "failures.csv").read_text().strip() == "input,reason"


def test_evaluation_writes_predictions_in_the_chosen_format(trained_bundle, tmp_path: Path) -> None:
    import nibabel as nib

    output_dir = tmp_path / "eval_out"
    run_cmd(
        bundle_cmd(
            "run", "--config_file", str([TRAIN, str(BUNDLE / "configs" / "evaluate.json")]),
            "--bundle_root", str(BUNDLE), "--dataset_dir", str(trained_bundle.data_dir),
            "--ckpt_path", str(trained_bundle.ckpt_dir / "model.pt"), "--output_dir", expr_path(output_dir),
            "--num_workers", "0", "--progress_bar", "False",
            "--save_predictions", "True", "--output_format", "nifti",
        )
    )  # fmt: skip
    (run_dir,) = output_dir.glob("evaluate_*")
    for case in trained_bundle.datalist["test"]:
        stem = Path(case["image"]).stem
        mask = nib.load(run_dir / "predictions" / f"{stem}_mask.nii.gz")
        label = np.asarray(Image.open(trained_bundle.data_dir / case["label"]))
        assert mask.shape == label.shape and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    assert (run_dir / "predictions" / "failures.csv").read_text().strip() == "input,reason"
