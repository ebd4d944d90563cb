"""Segment images with a self-describing checkpoint: the one pre- and post-processing of every route.

:class:`Predictor` instantiates the transforms of the pipeline file (``transforms/litenext_2d.json``,
:func:`~litenext_monai.transforms.load_pipeline`) with the model card's values, as the inference
bundle does: :class:`~litenext_monai.transforms.LoadImage2D` with the card's modality and channels;
with ``input_mode="resize"`` the ``resize_image`` pipeline (anti-aliased bilinear ``Resized`` to
``image_size``); the inferer of :func:`~litenext_monai.inferers.build_inferer` (one forward pass,
or with ``input_mode="patch"`` a Gaussian sliding window of ``image_size`` over the image at its own
size; optionally flip TTA); ``Invertd`` (bilinear resize of the *logits* back to the image's size,
resize mode only) and the ``logits_to_mask`` pipeline (one class: sigmoid, then ``>= threshold``;
N classes: argmax to a label map ``0 .. N``). Folder inference (the bundle), volume inference
(:func:`~litenext_monai.inference.segment_volume`) and the DICOM node
(:func:`segment_dicom_to_seg`) all give one image the same mask; the tests compare them.

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
from monai.transforms import Compose, Invertd
from torch import nn

from litenext_monai.inference.loading import load_network_from_checkpoint
from litenext_monai.inferers import build_inferer
from litenext_monai.io import read_dicom_frames
from litenext_monai.io.dicom_seg import (
    deduplicate_instances,
    position_order,
    read_dicom_headers,
    write_dicom_seg,
)
from litenext_monai.model.card import complete_settings, dicom_seg_metadata, read_inference_settings
from litenext_monai.tracking.uris import resolve_checkpoint
from litenext_monai.transforms import LoadImage2D, load_pipeline
from litenext_monai.transforms.io import to_meta_tensor

__all__ = ["Predictor", "pipeline_values", "segment_dicom_to_seg"]

logger = logging.getLogger(__name__)


def _check_finite(image: torch.Tensor, source: str) -> None:
    # On the plain tensor: MetaTensor's __torch_function__ would cost more than the check itself.
    if not bool(torch.isfinite(image.as_subclass(torch.Tensor)).all()):
        raise ValueError(f"{source}: the image contains NaN or infinite pixel values; nothing was segmented")


class Predictor:
    """Masks (binary or label maps) of 2D images at their own size, as the inference bundle computes them.

    Args:
        network: the segmentation network (``B×C×h×w`` → ``B×K×h×w`` logits, K = 1 for one
            class, N + 1 for N classes), e.g. from
            :func:`~litenext_monai.inference.load_network_from_checkpoint`.
        settings: the checkpoint's inference settings (model card: ``in_channels``, ``image_size``,
            ``modality``, ``threshold``, ``input_mode``, ``num_classes``, ``sw_overlap``,
            ``sw_batch_size``, ``tta``); missing keys take
            :data:`~litenext_monai.model.card.DEFAULT_SETTINGS`.
        device: where the network runs; default: where its parameters are.
        batch_size: images per inferer call; 1 (the default) reproduces the bundle's batches of one
            exactly, larger batches may differ in the last float bit and flip a borderline pixel.
            Images of different sizes are never batched together.

    Attributes:
        inferer: the MONAI inferer built by :func:`~litenext_monai.inferers.build_inferer` from
            the settings (``SimpleInferer``, ``SlidingWindowInferer`` or either inside
            ``FlipTTAInferer``).
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
        values = pipeline_values(settings)
        card = complete_settings(settings)
        self.loader = LoadImage2D(modality=str(values["modality"]), channels=int(values["in_channels"]))
        self.resize = Compose(load_pipeline("resize_image", None, values))
        self.image_size = tuple(int(s) for s in values["image_size"])
        self.num_classes = int(values["num_classes"])
        self.input_mode = str(values["input_mode"])
        self.inferer = build_inferer({**card, "image_size": list(self.image_size)})
        self.to_mask = Compose(load_pipeline("logits_to_mask", None, values))
        # Resized is the identity for an image already at image_size (MONAI returns it unchanged),
        # so such images skip Resized/Invertd; the others are inverted on the logits as in the bundle.
        self.invert = Invertd(keys="pred", transform=self.resize, orig_keys="image", nearest_interp=False)

    def from_array(self, array: np.ndarray, meta: Mapping[str, Any], source: str) -> MetaTensor:
        """An image already read (``H×W`` or ``H×W×C`` with its reader's meta) as :meth:`load` gives it."""
        return self._frame_tensor(array, meta, source)

    def _frame_tensor(self, array: np.ndarray, meta: Mapping[str, Any], source: str) -> MetaTensor:
        """One frame of a multi-frame file, normalised as :class:`LoadImage2D` normalises a file."""
        return to_meta_tensor(self.loader.normalize(array, meta), meta, source)

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
        """``H×W`` uint8 masks of loaded images, each at its own size.

        One class: {0, 1}; N classes: a label map ``0 .. N``. The bundle's inference computed on
        plain tensors: ``Resized`` (resize mode), the inferer, ``Invertd`` of the resize on the
        logits, then the ``logits_to_mask`` pipeline (``sigmoid(logit) >= t`` or argmax).

        Raises:
            ValueError: the network's output channels do not fit ``num_classes``.
        """
        expected = 1 if self.num_classes == 1 else self.num_classes + 1
        masks: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            items = [self._prepared(image) for image in images[start : start + self.batch_size]]
            sizes = {tuple(item["image"].shape) for item in items}
            groups = [[item] for item in items] if len(sizes) > 1 else [items]
            for group in groups:
                # The network runs on plain tensors: a MetaTensor would route each of its ops
                # through MetaTensor.__torch_function__ (about half of the folder-inference
                # time); the logits get the image's metadata back for Invertd below.
                plain = [item["image"].as_subclass(torch.Tensor) for item in group]
                batch = torch.stack(plain).to(self.device)
                with torch.inference_mode():
                    logits = self.inferer(batch, self.network)
                for item, logit in zip(group, logits.detach().cpu()):
                    if logit.shape[0] != expected:
                        raise ValueError(
                            f"num_classes={self.num_classes} needs {expected} output channel(s), "
                            f"got logits of shape {tuple(logit.shape)}"
                        )
                    if item["resized"]:
                        item["pred"] = MetaTensor(logit.clone()).copy_meta_from(item["image"])
                        logit = self.invert(item)["pred"].as_subclass(torch.Tensor)
                    mask = self.to_mask({"pred": logit})["pred"]
                    masks.append(np.asarray(mask[0], dtype=np.uint8))
        return masks

    def _prepared(self, image: MetaTensor) -> dict[str, Any]:
        """The network input: patch mode keeps the image's size (the sliding window covers it)."""
        if self.input_mode == "patch" or tuple(image.shape[1:]) == self.image_size:
            return {"image": image, "resized": False}
        return {**self.resize({"image": image}), "resized": True}

    def predict(self, path: str | os.PathLike, frames: int = 1) -> list[np.ndarray]:
        """Masks of every frame of one file."""
        return self.predict_images(self.load(path, frames))


def pipeline_values(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the pipeline file's ``@`` references bind to, from a model card (defaults filled in)."""
    card = complete_settings(settings)
    return {
        "modality": str(card["modality"]),
        "in_channels": int(card["in_channels"]),
        "image_size": [int(s) for s in card["image_size"]],
        "threshold": float(card["threshold"]),
        "num_classes": int(card["num_classes"]),
        "input_mode": str(card["input_mode"]),
    }


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
    A model with N ≥ 2 classes gives one segment per class, described by the card's ``segments``
    (:func:`~litenext_monai.model.card.dicom_seg_metadata`).

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
    elif settings is None or "checkpoint" not in settings:
        local = resolve_checkpoint(checkpoint)  # the URI is resolved here, once
        settings = {**(settings or read_inference_settings(local)), "checkpoint": local}
    local = settings["checkpoint"]
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
