"""The other source papers' datasets: fixtures in their published folder structures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from litenext_monai.data import prepare_dataset

from .layout_helpers import check_prepared, random_image, rect_mask


def _save_mask(mask: np.ndarray, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, **kwargs)


def _save_image(image: np.ndarray, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **kwargs)


def test_isic2016_official_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    raw, expected, test_ids = tmp_path / "raw", {}, []
    for subset, folder, n in (("train", "Training", 5), ("test", "Test", 2)):
        for i in range(n):
            case = f"ISIC_{i + (100 if subset == 'test' else 0):07d}"
            _save_image(random_image(rng, 22, 26), raw / f"ISBI2016_ISIC_Part1_{folder}_Data" / f"{case}.jpg")
            mask = rect_mask(22, 26, 2 + i, 3, 18, 20)
            _save_mask(mask, raw / f"ISBI2016_ISIC_Part1_{folder}_GroundTruth" / f"{case}_Segmentation.png")
            expected[case] = mask
            if subset == "test":
                test_ids.append(case)
    result = prepare_dataset("isic2016", raw, tmp_path / "out")
    check_prepared(tmp_path / "out", expected)
    assert result.splits["test"] == sorted(test_ids)


def test_busi_multiple_masks_merged(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    root = tmp_path / "raw" / "Dataset_BUSI_with_GT"
    expected = {}
    for label in ("benign", "malignant", "normal"):
        for n in (1, 2):
            stem = f"{label} ({n})"
            grey = random_image(rng, 20, 24, 1)
            _save_image(np.dstack([grey] * 3), root / label / f"{stem}.png")
            first = rect_mask(20, 24, 2, 2, 8, 10) if label != "normal" else np.zeros((20, 24), bool)
            masks = [first]
            if label == "benign" and n == 2:
                masks.append(rect_mask(20, 24, 12, 14, 18, 22))
            for k, m in enumerate(masks):
                suffix = "_mask" if k == 0 else f"_mask_{k}"
                _save_image(np.dstack([m.astype(np.uint8) * 255] * 3), root / label / f"{stem}{suffix}.png")
            expected[f"{label}_{n:04d}"] = np.logical_or.reduce(masks)
    result = prepare_dataset("busi", tmp_path / "raw", tmp_path / "out")
    check_prepared(tmp_path / "out", expected)
    assert sorted(result.report.empty_masks) == ["normal_0001", "normal_0002"]


def test_polyp_sets(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    expected = {}
    root = tmp_path / "kvasir" / "Kvasir-SEG"
    for i in range(3):
        case = f"cju{i}abc"
        _save_image(random_image(rng, 32, 40), root / "images" / f"{case}.jpg")
        mask = rect_mask(32, 40, 4, 8, 24, 32 - i)
        _save_mask(mask, root / "masks" / f"{case}.jpg", quality=90)  # lossy JPEG mask
        expected[case] = mask
    prepare_dataset("kvasir_seg", tmp_path / "kvasir", tmp_path / "out_k")
    check_prepared(tmp_path / "out_k", expected)

    expected, images = {}, {}
    root = tmp_path / "clinic" / "CVC-ClinicDB"
    for i in range(1, 4):
        image = random_image(rng, 24, 30)
        (root / "Original").mkdir(parents=True, exist_ok=True)
        (root / "Ground Truth").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "Original" / f"{i}.tif", image)
        mask = rect_mask(24, 30, i, 2, 20, 25)
        tifffile.imwrite(root / "Ground Truth" / f"{i}.tif", mask.astype(np.uint8) * 255)
        expected[str(i)], images[str(i)] = mask, image
    prepare_dataset("cvc_clinicdb", tmp_path / "clinic", tmp_path / "out_c")
    check_prepared(tmp_path / "out_c", expected, images)

    expected = {}
    root = tmp_path / "colon" / "TestDataset" / "CVC-ColonDB"
    for i in range(1, 4):
        _save_image(random_image(rng, 20, 22), root / "images" / f"{i}.png")
        mask = rect_mask(20, 22, 1, i, 15, 20)
        _save_mask(mask, root / "masks" / f"{i}.png")
        expected[str(i)] = mask
    prepare_dataset("cvc_colondb", tmp_path / "colon", tmp_path / "out_o")
    check_prepared(tmp_path / "out_o", expected)


def test_drive_and_chase(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    root, expected = tmp_path / "drive" / "DRIVE", {}
    for subset, numbers, tag in (("training", (21, 22, 23, 24), "training"), ("test", (1, 2), "test")):
        for n in numbers:
            (root / subset / "images").mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(root / subset / "images" / f"{n:02d}_{tag}.tif", random_image(rng, 26, 24))
            vessels = rect_mask(26, 24, 0, n % 7, 26, n % 7 + 2)
            _save_mask(vessels, root / subset / "1st_manual" / f"{n:02d}_manual1.gif")
            _save_mask(np.ones((26, 24), bool), root / subset / "mask" / f"{n:02d}_{tag}_mask.gif")
            expected[f"{n:02d}_{tag}"] = vessels
    result = prepare_dataset("drive", tmp_path / "drive", tmp_path / "out_d")
    check_prepared(tmp_path / "out_d", expected)
    assert result.splits["test"] == ["01_test", "02_test"]

    root, expected, children = tmp_path / "chase" / "CHASEDB1", {}, {}
    for child in range(1, 6):
        for eye in "LR":
            stem = f"Image_{child:02d}{eye}"
            _save_image(random_image(rng, 20, 20), root / f"{stem}.jpg")
            first = rect_mask(20, 20, child, 0, child + 2, 20)
            _save_mask(first, root / f"{stem}_1stHO.png")
            _save_mask(~first, root / f"{stem}_2ndHO.png")
            expected[stem], children[stem] = first, child
    result = prepare_dataset("chase_db1", tmp_path / "chase", tmp_path / "out_ch")
    check_prepared(tmp_path / "out_ch", expected)
    where = {c: k for k, ids in result.splits.items() for c in ids}
    for child in range(1, 6):
        assert where[f"Image_{child:02d}L"] == where[f"Image_{child:02d}R"], (
            "both eyes of a child in one split"
        )


def _xml(polygons: list[list[tuple[float, float]]]) -> str:
    regions = "".join(
        f'<Region Id="{k}"><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in poly)
        + "</Vertices></Region>"
        for k, poly in enumerate(polygons, 1)
    )
    return f'<?xml version="1.0"?><Annotations><Annotation Id="1"><Regions>{regions}</Regions></Annotation></Annotations>'


def test_monuseg_xml_polygons(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    raw, expected = tmp_path / "raw", {}
    train = raw / "MoNuSeg 2018 Training Data"
    (train / "Tissue Images").mkdir(parents=True)
    (train / "Annotations").mkdir()
    (raw / "MoNuSegTestData").mkdir()
    for name, folder, xml_folder in (
        ("TCGA-18-5592-01Z-00-DX1", train / "Tissue Images", train / "Annotations"),
        ("TCGA-21-5784-01Z-00-DX1", train / "Tissue Images", train / "Annotations"),
        ("TCGA-38-6178-01Z-00-DX1", train / "Tissue Images", train / "Annotations"),
        ("TCGA-2Z-A9J9-01A-01-TS1", raw / "MoNuSegTestData", raw / "MoNuSegTestData"),
    ):
        tifffile.imwrite(folder / f"{name}.tif", random_image(rng, 30, 34))
        # Half-integer vertices: the square x∈[3.5, 9.5], y∈[4.5, 12.5] covers columns 4..9, rows 5..12.
        square = [(3.5, 4.5), (9.5, 4.5), (9.5, 12.5), (3.5, 12.5)]
        # A right triangle whose hypotenuse x + y = 49.5 passes between pixel centres.
        triangle = [(19.5, 19.5), (30.0, 19.5), (19.5, 30.0)]
        (xml_folder / f"{name}.xml").write_text(_xml([square, triangle]))
        mask = rect_mask(30, 34, 5, 4, 13, 10)
        rows, cols = np.mgrid[0:30, 0:34]
        mask |= (cols >= 20) & (rows >= 20) & (cols + rows <= 49)
        expected[name] = mask
    result = prepare_dataset("monuseg", raw, tmp_path / "out")
    check_prepared(tmp_path / "out", expected)
    assert result.splits["test"] == ["TCGA-2Z-A9J9-01A-01-TS1"]
