"""The hostile-input corpus of issue 7, generated into a temporary folder (nothing binary is committed).

:func:`build_corpus` writes every input and returns what folder inference must do with each: the
output file it must write (``outputs``) or the failure reason it must report (``failures``, a
regular expression). An input in neither place would be a silent drop; the test counts them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import tifffile
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from tests.hospital_helpers import disk_image, write_ct_series, write_projection

__all__ = ["Corpus", "PHI", "build_corpus"]

#: Identifying values written into every DICOM of the corpus; they must never reach logs or reports.
PHI = ("Doe^Jane", "PID-0042")


@dataclass
class Corpus:
    root: Path
    outputs: dict[str, str] = field(default_factory=dict)  # input (relative) -> output file name
    failures: dict[str, str] = field(default_factory=dict)  # input (relative) -> reason regex
    seg_sources: dict[str, list[str]] = field(
        default_factory=dict
    )  # SEG name -> source inputs in slice order

    def inputs(self) -> list[str]:
        return sorted(set(self.outputs) | set(self.failures))


def _grey(size=(24, 28), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)


def _png(corpus: Corpus, name: str, image: Image.Image, output: str) -> None:
    image.save(corpus.root / name)
    corpus.outputs[name] = output


def _save_quiet(ds: Dataset, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the hostile values are the point
        ds.save_as(path, enforce_file_format=False)


def build_corpus(root: Path) -> Corpus:
    """Write the corpus under ``root`` and return the expected outcome of every input."""
    root.mkdir(parents=True, exist_ok=True)
    c = Corpus(root)
    grey = _grey()
    # --- raster files that must work -------------------------------------------------------
    _png(c, "grey.png", Image.fromarray(grey), "grey_mask.png")
    _png(c, "rgb.png", Image.fromarray(np.stack([grey, grey[::-1], grey[:, ::-1]], -1)), "rgb_mask.png")
    _png(
        c,
        "rgba.png",
        Image.fromarray(np.dstack([np.stack([grey] * 3, -1), np.full_like(grey, 200)])),
        "rgba_mask.png",
    )
    _png(c, "palette.png", Image.fromarray(grey).convert("P"), "palette_mask.png")
    _png(c, "grey16.png", Image.fromarray(grey.astype(np.uint16) * 250), "grey16_mask.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(root / "photo.jpg", quality=90)
    c.outputs["photo.jpg"] = "photo_mask.png"
    tifffile.imwrite(root / "scan16.tif", grey.astype(np.uint16) * 200)
    c.outputs["scan16.tif"] = "scan16_mask.png"
    nib.save(nib.Nifti1Image(grey.astype(np.float32), np.diag([0.5, 0.5, 1, 1])), root / "slice.nii.gz")
    c.outputs["slice.nii.gz"] = "slice_mask.nii.gz"
    # --- name collisions: every one keeps its own output ---------------------------------------
    Image.fromarray(grey).save(root / "collide.png")
    Image.fromarray(grey).save(root / "collide.jpg")
    tifffile.imwrite(root / "collide.tif", grey)
    c.outputs.update(
        {
            "collide.png": "collide_png_mask.png",
            "collide.jpg": "collide_jpg_mask.png",
            "collide.tif": "collide_tif_mask.png",
        }
    )
    write_ct_series(root, [disk_image()], names=["collide.dcm"])
    c.outputs["collide.dcm"] = "collide_seg.dcm"
    c.seg_sources["collide_seg.dcm"] = ["collide.dcm"]
    # --- broken or unsupported: clear per-file errors ------------------------------------------
    nan = grey.astype(np.float32)
    nan[3, 4] = np.nan
    tifffile.imwrite(root / "nan.tif", nan)
    c.failures["nan.tif"] = r"NaN or infinite"
    inf = grey.astype(np.float32)
    inf[0, 0] = np.inf
    nib.save(nib.Nifti1Image(inf, np.eye(4)), root / "inf.nii.gz")
    c.failures["inf.nii.gz"] = r"NaN or infinite"
    (root / "truncated.png").write_bytes((root / "grey.png").read_bytes()[:60])
    c.failures["truncated.png"] = r"truncated|cannot|unreadable|broken"
    (root / "empty.nii.gz").write_bytes(b"")
    c.failures["empty.nii.gz"] = r"empty\.nii\.gz"
    (root / "notes.txt").write_text("not an image")
    c.failures["notes.txt"] = r"unsupported file type '\.txt'"
    (root / "archive.zip").write_bytes(b"PK\x03\x04")
    c.failures["archive.zip"] = r"unsupported file type '\.zip'"
    # --- DICOM -----------------------------------------------------------------------------------
    # a series without suffixes, file names out of slice order, at depth 2
    series = write_ct_series(
        root / "study1" / "ct_series", [disk_image(radius=r) for r in (4, 8, 12)], names=["IM3", "IM1", "IM2"]
    )
    for f in series:
        c.outputs[str(f.relative_to(root))] = "study1_ct_series_seg.dcm"
    c.seg_sources["study1_ct_series_seg.dcm"] = [str(f.relative_to(root)) for f in series]
    # a series whose sex is spelled out (non-conformant): still a valid SEG
    female = write_ct_series(
        root / "female", [disk_image(radius=6), disk_image(radius=9)], patient_sex="female"
    )
    for f in female:
        c.outputs[str(f.relative_to(root))] = "female_seg.dcm"
    c.seg_sources["female_seg.dcm"] = [str(f.relative_to(root)) for f in female]
    # compressed transfer syntaxes, each a single-slice series
    for name, syntax in (("jpeg2000.dcm", JPEG2000Lossless), ("rle.dcm", RLELossless)):
        (path,) = write_ct_series(root, [disk_image(radius=7)], names=[name])
        ds = pydicom.dcmread(path)
        ds.compress(syntax, ds.pixel_array)
        ds.save_as(path, enforce_file_format=True)
        c.outputs[name] = name.replace(".dcm", "_seg.dcm")
        c.seg_sources[c.outputs[name]] = [name]
    # projection images: DX, and a MONOCHROME1 CR
    write_projection(root / "chest_dx.dcm", disk_image(40, radius=10))
    c.outputs["chest_dx.dcm"] = "chest_dx_seg.dcm"
    c.seg_sources["chest_dx_seg.dcm"] = ["chest_dx.dcm"]
    cr = pydicom.dcmread(write_projection(root / "mono1_cr.dcm", disk_image(40, radius=10)))
    cr.SOPClassUID = cr.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    cr.Modality, cr.PhotometricInterpretation = "CR", "MONOCHROME1"
    del cr.ImagerPixelSpacing
    cr.PixelSpacing = [0.15, 0.15]
    cr.save_as(root / "mono1_cr.dcm", enforce_file_format=True)
    c.outputs["mono1_cr.dcm"] = "mono1_cr_seg.dcm"
    c.seg_sources["mono1_cr_seg.dcm"] = ["mono1_cr.dcm"]
    # hostile UIDs: a SEG cannot reference them
    (hostile,) = write_ct_series(root, [disk_image()], names=["hostile_uid.dcm"])
    ds = pydicom.dcmread(hostile)
    ds.StudyInstanceUID = "../../etc/passwd;rm -rf /"
    _save_quiet(ds, hostile)
    c.failures["hostile_uid.dcm"] = r"malformed StudyInstanceUID"
    # a truncated DICOM and a DICOM document without pixels
    (full,) = write_ct_series(root / "tmpdir_unused", [disk_image()], names=["x.dcm"])
    (root / "truncated.dcm").write_bytes(full.read_bytes()[:400])
    full.unlink()
    full.parent.rmdir()
    c.failures["truncated.dcm"] = r"truncated|unreadable"
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID, sr.file_meta.MediaStorageSOPInstanceUID = (
        BasicTextSRStorage,
        generate_uid(),
    )
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID, sr.SOPInstanceUID = BasicTextSRStorage, sr.file_meta.MediaStorageSOPInstanceUID
    sr.PatientName, sr.PatientID, sr.Modality = PHI[0], PHI[1], "SR"
    sr.StudyInstanceUID, sr.SeriesInstanceUID = generate_uid(), generate_uid()
    sr.save_as(root / "report_sr.dcm", enforce_file_format=True)
    c.failures["report_sr.dcm"] = r"without an image"
    return c
