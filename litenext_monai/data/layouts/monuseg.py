"""MoNuSeg nuclei: H&E TIFF tiles with XML polygon annotations (Aperio ImageScope format)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import tifffile
from skimage.draw import polygon

from ..validation import ValidationReport
from .base import Case, Layout, files_with_suffix, find_dir, image_loader

__all__ = ["MONUSEG", "rasterize_xml"]


def rasterize_xml(xml_path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Fill every ``Region`` polygon of an ImageScope XML into an ``H×W`` instance label image.

    Vertex ``X`` is the column and ``Y`` the row, in pixels; a pixel belongs to a polygon when
    its centre lies inside it.

    Raises:
        ValueError: unparsable XML (the message names the file).
    """
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as err:
        raise ValueError(f"{xml_path}: unreadable annotation XML ({err})") from err
    labels = np.zeros(shape, dtype=np.uint16)
    for number, region in enumerate(tree.iter("Region"), start=1):
        vertices = [(float(v.get("Y")), float(v.get("X"))) for v in region.iter("Vertex")]
        if len(vertices) < 3:
            continue
        rows, cols = np.array(vertices).T
        rr, cc = polygon(rows, cols, shape=shape)
        labels[rr, cc] = number
    return labels


def _mask_from_xml(image: Path, xml: Path):
    def load() -> list[np.ndarray]:
        with tifffile.TiffFile(image) as tif:
            shape = tuple(int(s) for s in tif.pages[0].shape[:2])
        return [rasterize_xml(xml, shape)]

    return load


def _subset(folder: Path, xml_folder: Path, subset: str, report: ValidationReport) -> list[Case]:
    xmls = {p.stem: p for p in files_with_suffix(xml_folder, [".xml"])}
    cases = []
    for image in files_with_suffix(folder, [".tif", ".tiff"]):
        xml = xmls.pop(image.stem, None)
        if xml is None:
            report.warning("image_without_mask", image, "no XML annotation")
            continue
        cases.append(
            Case(
                image.stem,
                image_loader(image),
                _mask_from_xml(image, xml),
                str(image),
                [str(xml)],
                patient="-".join(image.stem.split("-")[:3]),
                subset=subset,
                mask_kind="instance",
            )
        )
    for xml in xmls.values():
        report.warning("mask_without_image", xml, "no matching TIFF image")
    return cases


def discover(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """Training ``Tissue Images/*.tif`` + ``Annotations/*.xml``; test folder with both side by side."""
    train_root = find_dir(raw_dir, ["MoNuSeg 2018 Training Data", "MoNuSegTrainingData"])
    if train_root is None:
        raise FileNotFoundError(f"{raw_dir}: no 'MoNuSeg 2018 Training Data' folder")
    images, xmls = find_dir(train_root, ["Tissue Images"]), find_dir(train_root, ["Annotations"])
    if images is None or xmls is None:
        raise FileNotFoundError(f"{train_root}: expected 'Tissue Images' and 'Annotations' folders")
    cases = _subset(images, xmls, "train", report)
    test_root = find_dir(raw_dir, ["MoNuSegTestData", "MoNuSeg 2018 Test Data"])
    if test_root is not None:
        cases += _subset(test_root, test_root, "test", report)
    return cases


MONUSEG = Layout("monuseg", "MoNuSeg 2018 nuclei", discover, split="official", modality="rgb")
