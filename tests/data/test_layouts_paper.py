"""The six datasets of the LiteNeXt paper: fixtures in the published folder structures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from litenext_monai.data import prepare_dataset, verify_split_hash
from tests.dicom_helpers import write_dicom_slice

from .layout_helpers import check_prepared, random_image, rect_mask, tree_digest


def _prepare(name: str, raw: Path, out: Path, **kwargs):
    before = tree_digest(raw)
    result = prepare_dataset(name, raw, out, **kwargs)
    assert tree_digest(raw) == before, "RAW_DIR was modified"
    assert verify_split_hash(out / "datalist.json")
    return result


def test_dsb2018_instance_folders_are_merged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "raw" / "stage1_train"
    expected, images = {}, {}
    for i in range(5):
        case = f"{i:02d}abcdef"
        h, w = 24 + i, 32
        rgba = np.dstack([random_image(rng, h, w), np.full((h, w), 255, np.uint8)])
        (root / case / "images").mkdir(parents=True)
        Image.fromarray(rgba).save(root / case / "images" / f"{case}.png")
        nuclei = [rect_mask(h, w, 2, 3, 8, 9 + i), rect_mask(h, w, 12, 20, 20, 30)]
        (root / case / "masks").mkdir()
        for k, nucleus in enumerate(nuclei):
            Image.fromarray(nucleus.astype(np.uint8) * 255).save(root / case / "masks" / f"m{k}.png")
        expected[case] = nuclei[0] | nuclei[1]
        images[case] = rgba[..., :3]
    result = _prepare("dsb2018", tmp_path / "raw", tmp_path / "out")
    check_prepared(tmp_path / "out", expected, images)
    assert result.report.ok()
    sizes = {k: len(v) for k, v in result.splits.items()}
    assert sizes == {"training": 3, "validation": 1, "test": 1}  # 70/10/20 of 5 with rounding


def test_glas_official_split_and_instance_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "raw" / "Warwick QU Dataset (Released 2016_07_08)"
    root.mkdir(parents=True)
    expected, subsets = {}, {}
    names = [f"train_{i}" for i in range(1, 9)] + ["testA_1", "testA_2", "testB_1"]
    rows = ["name,patient ID,grade (GlaS),grade (Sirinukunwattana et al. 2015)"]
    for n, name in enumerate(names):
        h, w = 20, 28
        Image.fromarray(random_image(rng, h, w)).save(root / f"{name}.bmp")
        instances = np.zeros((h, w), np.uint8)
        instances[2:6, 2:10] = 1
        instances[10:18, 5:9] = 2 + n
        Image.fromarray(instances).save(root / f"{name}_anno.bmp")
        expected[name] = instances > 0
        subsets[name] = "test" if name.startswith("test") else "train"
        rows.append(f"{name},{n // 2},benign,adenomatous")
    (root / "Grade.csv").write_text("\n".join(rows) + "\n")
    result = _prepare("glas", tmp_path / "raw", tmp_path / "out")
    check_prepared(tmp_path / "out", expected)
    assert sorted(result.splits["test"]) == sorted(n for n, s in subsets.items() if s == "test")
    patients = {n: rows[i + 1].split(",")[1] for i, n in enumerate(names)}
    for a in result.splits["training"]:
        for b in result.splits["validation"]:
            assert patients[a] != patients[b], "a GlaS patient is in training and validation"


def test_isic2018_and_ph2(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    raw = tmp_path / "isic"
    (raw / "ISIC2018_Task1-2_Training_Input").mkdir(parents=True)
    (raw / "ISIC2018_Task1_Training_GroundTruth").mkdir(parents=True)
    expected = {}
    for i in range(4):
        case = f"ISIC_{i:07d}"
        Image.fromarray(random_image(rng, 30, 40)).save(
            raw / "ISIC2018_Task1-2_Training_Input" / f"{case}.jpg", quality=95
        )
        mask = rect_mask(30, 40, 5, 7 + i, 20, 33)
        Image.fromarray(mask.astype(np.uint8) * 255).save(
            raw / "ISIC2018_Task1_Training_GroundTruth" / f"{case}_segmentation.png"
        )
        expected[case] = mask
    (raw / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("licence")
    _prepare("isic2018", raw, tmp_path / "out_isic")
    datalist = check_prepared(tmp_path / "out_isic", expected)
    first = datalist["training"][0]
    # JPEG inputs are copied byte for byte, not re-encoded.
    source = raw / "ISIC2018_Task1-2_Training_Input" / f"{first['case_id']}.jpg"
    assert (tmp_path / "out_isic" / first["image"]).read_bytes() == source.read_bytes()

    raw = tmp_path / "ph2" / "PH2Dataset" / "PH2 Dataset images"
    expected, images = {}, {}
    for i in (2, 3, 4):
        case = f"IMD{i:03d}"
        (raw / case / f"{case}_Dermoscopic_Image").mkdir(parents=True)
        (raw / case / f"{case}_lesion").mkdir()
        image = random_image(rng, 28, 36)
        Image.fromarray(image).save(raw / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp")
        mask = rect_mask(28, 36, i, 4, 20, 30)
        Image.fromarray(mask).save(raw / case / f"{case}_lesion" / f"{case}_lesion.bmp")  # 1-bit BMP
        expected[case], images[case] = mask, image
    _prepare("ph2", tmp_path / "ph2", tmp_path / "out_ph2")
    check_prepared(tmp_path / "out_ph2", expected, images)


def _write_mr(path: Path, pixels: np.ndarray, patient: str, series_uid: str, position: float) -> None:
    # 12 of the 16 bits stored, as in the Sunnybrook files.
    write_dicom_slice(
        path,
        pixels.astype(np.uint16),
        series_uid=series_uid,
        position=(0.0, 0.0, position),
        spacing=(1.25, 1.25),
        patient_id=patient,
        bits_stored=12,
    )


@pytest.mark.parametrize("task", ["endo", "epi"])
def test_sunnybrook_contours_rasterised_per_patient(tmp_path: Path, task: str) -> None:
    rng = np.random.default_rng(3)
    raw = tmp_path / "raw"
    expected, patients = {}, {}
    h, w = 40, 48
    for p in range(1, 11):
        contour_folder = f"SC-HF-I-{p:02d}"
        image_folder = f"SC-HF-I-{p}"
        series = generate_uid()
        for number in (20, 40):
            # Two series in the image folder; the contoured numbers exist only in series 0004.
            _write_mr(
                raw / "challenge_training" / image_folder / f"IM-0004-{number:04d}.dcm",
                rng.integers(0, 4000, (h, w)),
                f"P{p}",
                series,
                number / 10,
            )
        _write_mr(
            raw / "challenge_training" / image_folder / "IM-0001-0001.dcm",
            rng.integers(0, 4000, (h, w)),
            f"P{p}",
            series,
            0.0,
        )
        for number in (20, 40):
            folder = (
                raw
                / "Sunnybrook Cardiac MR Database ContoursPart3"
                / "TrainingDataContours"
                / contour_folder
                / "contours-manual"
                / "IRCCI-expert"
            )
            folder.mkdir(parents=True, exist_ok=True)
            # Pixel-centre rule: the square x∈[9.5, 20.5], y∈[5.5, 30.5] fills columns 10..20, rows 6..30.
            inner = [(9.5, 5.5), (20.5, 5.5), (20.5, 30.5), (9.5, 30.5)]
            outer = [(x + (2 if x > 15 else -2), y + (2 if y > 15 else -2)) for x, y in inner]
            (folder / f"IM-0001-{number:04d}-icontour-manual.txt").write_text(
                "\n".join(f"{x:.2f} {y:.2f}" for x, y in inner)
            )
            (folder / f"IM-0001-{number:04d}-ocontour-manual.txt").write_text(
                "\n".join(f"{x:.2f} {y:.2f}" for x, y in outer)
            )
            case = f"SC-HF-I-{p}_{number:04d}"
            expected[case] = (
                rect_mask(h, w, 6, 10, 31, 21) if task == "endo" else rect_mask(h, w, 4, 8, 33, 23)
            )
            patients[case] = p
    result = _prepare(f"sunnybrook_{task}", raw, tmp_path / "out")
    datalist = check_prepared(tmp_path / "out", expected)
    assert datalist["training"][0]["image"].endswith(".nii.gz")  # geometry kept
    sizes = {k: len(v) for k, v in result.splits.items()}
    assert sizes == {"training": 16, "validation": 2, "test": 2}  # 8/1/1 patients, two slices each
    seen = {}
    for key, ids in result.splits.items():
        for case in ids:
            assert seen.setdefault(patients[case], key) == key, f"patient {patients[case]} in two splits"


def test_lungs_shenzhen_to_montgomery(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    raw = tmp_path / "raw"
    (raw / "ChinaSet_AllFiles" / "CXR_png").mkdir(parents=True)
    (raw / "mask").mkdir()
    expected = {}
    for i in range(1, 12):
        stem = f"CHNCXR_{i:04d}_{i % 2}"
        Image.fromarray(random_image(rng, 32, 30, 1)).save(
            raw / "ChinaSet_AllFiles" / "CXR_png" / f"{stem}.png"
        )
        if i == 11:
            continue  # an image without a published mask: skipped, as in the paper
        mask = rect_mask(32, 30, 3, 2, 25 - i, 14)
        Image.fromarray(mask.astype(np.uint8) * 255).save(raw / "mask" / f"{stem}_mask.png")
        expected[stem] = mask
    mont = raw / "MontgomerySet"
    for d in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"):
        (mont / d).mkdir(parents=True)
    for i in range(1, 4):
        stem = f"MCUCXR_{i:04d}_0"
        Image.fromarray(random_image(rng, 32, 30, 1)).save(mont / "CXR_png" / f"{stem}.png")
        left, right = rect_mask(32, 30, 4, 2, 28, 12), rect_mask(32, 30, 5, 17, 27, 28 - i)
        Image.fromarray(left.astype(np.uint8) * 255).save(mont / "ManualMask" / "leftMask" / f"{stem}.png")
        Image.fromarray(right.astype(np.uint8) * 255).save(mont / "ManualMask" / "rightMask" / f"{stem}.png")
        expected[stem] = left | right
    result = _prepare("lung_xray", raw, tmp_path / "out")
    check_prepared(tmp_path / "out", expected)
    assert sorted(result.splits["test"]) == [f"MCUCXR_{i:04d}_0" for i in range(1, 4)]
    assert len(result.splits["validation"]) == 2 and len(result.splits["training"]) == 8  # 80/20 of 10
    assert any(i.kind == "image_without_mask" and "CHNCXR_0011_1" in i.file for i in result.report.issues)
