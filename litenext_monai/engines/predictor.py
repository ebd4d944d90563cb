"""Segment image files with a self-describing checkpoint, outside a bundle run.

:class:`Predictor` applies, image by image, exactly the transforms of the inference bundle
(``transforms/litenext_2d.json``): :class:`~litenext_monai.transforms.LoadImage2Dd` with the
checkpoint's modality and channels, anti-aliased bilinear ``Resized`` to ``image_size``, the
network, ``Invertd`` (bilinear resize of the logits back to the image's size), sigmoid and
threshold. A DICOM SEG made here is therefore pixel for pixel the PNG mask the bundle writes for
the same file (the tests compare them). The bundle itself composes the same MONAI transforms from
its JSON; this module exists for callers that segment without one, such as the DICOM node.

:func:`segment_dicom_to_seg` turns one DICOM series (or one single- or multi-frame image) into
one DICOM SEG.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd, Resized
from torch import nn

from litenext_monai.engines.checkpoint import (
    dicom_seg_metadata,
    load_network_from_checkpoint,
    read_inference_settings,
)
from litenext_monai.engines.mlflow_models import resolve_checkpoint
from litenext_monai.io import read_dicom_frames
from litenext_monai.io.dicom_seg import (
    deduplicate_instances,
    position_order,
    read_dicom_headers,
    write_dicom_seg,
)
from litenext_monai.transforms import LoadImage2D

__all__ = ["Predictor", "segment_dicom_to_seg"]

logger = logging.getLogger(__name__)


def _check_finite(image: torch.Tensor, source: str) -> None:
    # On the plain tensor: MetaTensor's __torch_function__ would cost more than the check itself.
    if not bool(torch.isfinite(image.as_subclass(torch.Tensor)).all()):
        raise ValueError(f"{source}: the image contains NaN or infinite pixel values; nothing was segmented")


class Predictor:
    """Binary masks of 2D images at their own size, as the inference bundle computes them.

    Args:
        network: the segmentation network (``B×C×h×w`` → ``B×1×h×w`` logits), e.g. from
            :func:`~litenext_monai.engines.load_network_from_checkpoint`.
        settings: the checkpoint's inference settings (``in_channels``, ``image_size``,
            ``modality``, ``threshold``).
        device: where the network runs; default: where its parameters are.
        batch_size: images per forward pass; 1 (the default) reproduces the bundle's batches of one
            exactly, larger batches may differ in the last float bit and flip a borderline pixel.
    """

    def __init__(
        self,
        network: nn.Module,
        settings: Mapping[str, Any],
        device: str | torch.device | None = None,
        batch_size: int = 1,
    ) -> None:
        parameter = next(network.parameters(), None)
        self.device = (
            torch.device(device)
            if device is not None
            else (parameter.device if parameter is not None else torch.device("cpu"))
        )
        self.network = network.to(self.device).eval()
        self.batch_size = max(1, int(batch_size))
        self.loader = LoadImage2D(modality=str(settings["modality"]), channels=int(settings["in_channels"]))
        self.resize = Resized(
            keys="image",
            spatial_size=[int(s) for s in settings["image_size"]],
            mode="bilinear",
            anti_aliasing=True,
        )
        self.image_size = tuple(int(s) for s in settings["image_size"])
        self.threshold = float(settings["threshold"])
        # Resized is the identity for an image already at image_size (MONAI returns it unchanged),
        # so such images skip Resized/Invertd; the others are inverted on the logits as in the bundle.
        self.invert = Invertd(keys="pred", transform=self.resize, orig_keys="image", nearest_interp=False)

    def _frame_tensor(self, array: np.ndarray, meta: Mapping[str, Any], source: str) -> MetaTensor:
        """One frame of a multi-frame file, normalised as :class:`LoadImage2D` normalises a file."""
        data = self.loader.normalize(array, meta)
        affine = torch.as_tensor(meta["affine"], dtype=torch.float64)
        tensor_meta = {
            "filename_or_obj": source,
            "spatial_shape": np.asarray(meta["spatial_shape"]),
            "original_channel_dim": 0,
            "original_affine": affine.clone(),
            "affine": affine,
        }
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), meta=tensor_meta)

    def load(self, path: str | os.PathLike, frames: int = 1) -> list[MetaTensor]:
        """The file's frames as the bundle loads them (``C×H×W`` float32 ``MetaTensor``s).

        Raises:
            ValueError: unreadable file, or NaN/Inf pixels (message names the file).
        """
        source = str(path)
        if frames > 1:
            images = [self._frame_tensor(a, m, source) for a, m in read_dicom_frames(path)]
        else:
            images = [self.loader(path)]
        for image in images:
            _check_finite(image, source)
        return images

    def predict_images(self, images: Sequence[MetaTensor]) -> list[np.ndarray]:
        """``H×W`` uint8 {0, 1} masks of loaded images, each at its own size.

        The bundle's post-processing (``Invertd`` of the resize, ``Activationsd(sigmoid=True)``,
        ``AsDiscreted(threshold=t)``, i.e. ``sigmoid(logit) >= t``) computed on plain tensors.
        """
        masks: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            items = [self._resized(image) for image in images[start : start + self.batch_size]]
            sizes = {tuple(item["image"].shape) for item in items}
            groups = [[item] for item in items] if len(sizes) > 1 else [items]
            for group in groups:
                # The network runs on plain tensors: a MetaTensor would route each of its ops
                # through MetaTensor.__torch_function__ (about half of the folder-inference
                # time); the logits get the image's metadata back for Invertd below.
                plain = [item["image"].as_subclass(torch.Tensor) for item in group]
                batch = torch.stack(plain).to(self.device)
                with torch.inference_mode():
                    logits = self.network(batch)
                for item, logit in zip(group, logits.detach().cpu()):
                    if logit.shape[0] != 1:
                        raise ValueError(
                            f"expected one output channel, got logits of shape {tuple(logit.shape)}"
                        )
                    if item["resized"]:
                        item["pred"] = MetaTensor(logit.clone()).copy_meta_from(item["image"])
                        logit = self.invert(item)["pred"].as_subclass(torch.Tensor)
                    masks.append((torch.sigmoid(logit[0]) >= self.threshold).numpy().astype(np.uint8))
        return masks

    def _resized(self, image: MetaTensor) -> dict[str, Any]:
        if tuple(image.shape[1:]) == self.image_size:
            return {"image": image, "resized": False}
        return {**self.resize({"image": image}), "resized": True}

    def predict(self, path: str | os.PathLike, frames: int = 1) -> list[np.ndarray]:
        """Masks of every frame of one file."""
        return self.predict_images(self.load(path, frames))


def segment_dicom_to_seg(
    files: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    network: nn.Module | None = None,
    settings: Mapping[str, Any] | None = None,
    seg_options: Mapping[str, Any] | None = None,
) -> Path:
    """Segment one DICOM series (or one image) and write one BINARY DICOM SEG atomically.

    The instances are segmented one by one in position order (Image Position (Patient) along
    the slice normal, else Instance Number) and become the frames of the SEG in that order.

    Args:
        files: the instances of ONE series, in any order; or one single- or multi-frame file.
        checkpoint: ``model.pt`` (with ``model.json`` beside it) or an MLflow model URI; used
            for the settings and the hash when ``network``/``settings`` are not given.
        output_path: the SEG to write.
        network: an already loaded network (a long-running caller loads it once).
        settings: its inference settings (from :func:`load_network_from_checkpoint`).
        seg_options: keyword arguments of :func:`~litenext_monai.io.dicom_seg.write_dicom_seg` that
            override the checkpoint's (e.g. ``segment``, ``series_description``).

    Duplicate files of one instance (same SOP Instance UID) are segmented once, from a copy that
    reads completely (:func:`~litenext_monai.io.dicom_seg.deduplicate_instances`).

    Returns:
        ``output_path``.

    Raises:
        ValueError: unreadable files, several series, NaN/Inf pixels, or a source the SEG cannot
            reference (every message names the file).
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("segment_dicom_to_seg: no input files")
    files, _ = deduplicate_instances(files)
    if network is None:
        network, settings = load_network_from_checkpoint(checkpoint)
    elif settings is None:
        settings = read_inference_settings(resolve_checkpoint(checkpoint))
    assert settings is not None
    local = settings.get("checkpoint") or resolve_checkpoint(checkpoint)
    headers = read_dicom_headers(files)
    for path, header in zip(files, headers):
        if "Rows" not in header or "Columns" not in header:
            raise ValueError(f"{path}: not a DICOM image (no Rows/Columns)")
    if len({str(h.get("SeriesInstanceUID", "")) for h in headers}) > 1:
        raise ValueError(f"{files[0].parent}: the files belong to several series; pass one series at a time")
    order = position_order(headers)
    files, headers = [files[i] for i in order], [headers[i] for i in order]
    predictor = Predictor(network, settings)
    if len(files) == 1:
        masks = predictor.predict(files[0], frames=int(headers[0].get("NumberOfFrames", 1) or 1))
    else:
        masks = predictor.predict_images([image for f in files for image in predictor.load(f)])
    write_dicom_seg(
        headers, masks, output_path, **{**dicom_seg_metadata(local, settings), **(seg_options or {})}
    )
    logger.info("%d instance(s) segmented -> %s", len(masks), Path(output_path).name)
    return Path(output_path)
