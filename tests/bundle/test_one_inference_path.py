"""One image, three ways in, one mask: folder inference (PNG), volume inference (one-slice NIfTI) and
the DICOM node's segmenter (a DICOM instance) run the same pre- and post-processing.

The image is off the network size (so the resize and its inversion on the logits are exercised)
and the checkpoint is a trained one (so its mask has both classes and the comparison can fail).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from skimage.transform import resize

from tests.bundle.conftest import BUNDLE, INFERENCE, TRAIN, bundle_cmd, expr_path, run_cmd
from tests.hospital_helpers import read_seg

HEIGHT, WIDTH = 200, 168  # the size of the review finding; not the network's 64×64


def _off_size_image(trained_bundle) -> np.ndarray:
    case = trained_bundle.datalist["test"][0]
    image = np.asarray(Image.open(trained_bundle.data_dir / case["image"]).convert("L"), dtype=np.float64)
    return (resize(image, (HEIGHT, WIDTH), order=1, preserve_range=True)).round().astype(np.uint8)


def _checkpoint_with_both_classes(trained_bundle, image: np.ndarray, folder: Path) -> Path:
    """A copy of the trained checkpoint with steep logits, thresholded at its median probability on ``image``.

    Two training epochs leave a model that may call every pixel background, with flat logits. The
    copy's last layer is scaled (logits × 50) and its threshold is the median probability, so the
    mask has both classes and many pixels sit where the order of resizing and thresholding
    matters: resizing probabilities instead of logits, or ``>`` instead of ``>=``, changes pixels
    of this mask (about 100 of 33,600 in a check against the route of ``cfa3e59``).
    """
    import json

    import torch

    from litenext_monai.inference import load_network_from_checkpoint

    folder.mkdir()
    state = torch.load(trained_bundle.ckpt_dir / "model.pt", weights_only=True)
    state["head.weight"], state["head.bias"] = state["head.weight"] * 50, state["head.bias"] * 50
    ckpt = folder / "model.pt"
    torch.save(state, ckpt)
    card = json.loads((trained_bundle.ckpt_dir / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(card))
    network, settings = load_network_from_checkpoint(ckpt)
    small = resize(image / 255.0, settings["image_size"], order=1, anti_aliasing=True)
    with torch.no_grad():
        logits = network(torch.as_tensor(small, dtype=torch.float32)[None, None])
    card["threshold"] = float(torch.sigmoid(logits).median())
    (folder / "model.json").write_text(json.dumps(card))
    return ckpt


def test_png_nifti_and_dicom_routes_give_one_mask(trained_bundle, tmp_path: Path) -> None:
    from litenext_monai.dicom_node import checkpoint_segmenter, synthetic_mr_series
    from litenext_monai.inference import load_inference_network, segment_volume
    from litenext_monai.model import read_inference_settings

    image = _off_size_image(trained_bundle)
    ckpt = _checkpoint_with_both_classes(trained_bundle, image, tmp_path / "models")

    # 1. Folder inference through the bundle, from a PNG.
    png = tmp_path / "in" / "case.png"
    png.parent.mkdir()
    Image.fromarray(image).save(png)
    out = tmp_path / "pred"
    proc = run_cmd(
        bundle_cmd(
            "run", "--config_file", str([TRAIN, INFERENCE]), "--bundle_root", str(BUNDLE),
            "--ckpt_path", str(ckpt), "--infer_input", str(png.parent), "--prediction_dir", str(out),
            "--output_dir", expr_path(tmp_path / "eval"), "--num_workers", "0", "--progress_bar", "False",
            "--save_overlays", "False",
        ),
        timeout=600, env={"OMP_NUM_THREADS": "1"}, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder_mask = np.asarray(Image.open(out / "case_mask.png")) > 0
    assert folder_mask.shape == (HEIGHT, WIDTH)
    assert 0.01 < folder_mask.mean() < 0.99  # both classes: the comparisons below can fail

    # 2. Volume inference of the same pixels as a one-slice NIfTI volume.
    volume = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(image[:, :, None], np.eye(4)), volume)
    network = load_inference_network(ckpt)
    mask_path = segment_volume(
        network, volume, tmp_path / "case_mask.nii.gz", settings=read_inference_settings(ckpt)
    )
    volume_mask = np.asarray(nib.load(mask_path).dataobj)[:, :, 0] > 0
    assert np.array_equal(volume_mask, folder_mask), (
        f"{int((volume_mask != folder_mask).sum())} pixels differ"
    )

    # 3. The DICOM node's segmenter, from a DICOM instance of the same pixels (8 bits stored, as the PNG).
    (ds,) = synthetic_mr_series([image.astype(np.uint16)])
    ds.BitsStored, ds.HighBit = 8, 7
    dicom = tmp_path / "series" / "1.dcm"
    dicom.parent.mkdir()
    ds.save_as(dicom, enforce_file_format=True)
    seg_path = checkpoint_segmenter(str(ckpt))([dicom], tmp_path / "seg.dcm")
    seg = read_seg(seg_path)
    frame = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[
            seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        ],
        segment_numbers=[1],
        ignore_spatial_locations=True,
    )[0, ..., 0].astype(bool)
    assert np.array_equal(frame, folder_mask), f"{int((frame != folder_mask).sum())} pixels differ"
