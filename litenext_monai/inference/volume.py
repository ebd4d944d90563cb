"""Slice-by-slice segmentation of 3D volumes (NIfTI files, DICOM series folders) with a 2D network.

Every slice goes through the one inference path, :class:`~litenext_monai.inference.Predictor`,
so a slice gives the mask that the same image gives as a PNG in folder inference or as a DICOM
instance at the DICOM node.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from litenext_monai.inference.predictor import Predictor
from litenext_monai.io import (
    DEFAULT_CT_WINDOW,
    DEFAULT_PERCENTILES,
    MODALITIES,
    is_dicom,
    is_nifti,
    read_dicom_series,
    slice_volume,
    stack_slices,
    write_nifti,
)
from litenext_monai.io.nifti import _value_range
from litenext_monai.model.card import complete_settings, inference_settings_path
from litenext_monai.model.loader import load_network
from litenext_monai.networks import LiteNeXt
from litenext_monai.tracking.uris import resolve_checkpoint

__all__ = ["load_inference_network", "segment_volume"]

logger = logging.getLogger(__name__)


def load_inference_network(
    checkpoint: str | os.PathLike,
    in_channels: int | None = None,
    out_channels: int = 1,
    deploy: bool = True,
    **network_kwargs: object,
) -> nn.Module:
    """A checkpoint's network in eval mode on the CPU, also for a checkpoint without a model card.

    A self-describing checkpoint (``model.json`` beside ``model.pt``) needs nothing else. For an
    older one, a :class:`~litenext_monai.networks.LiteNeXt` built from the arguments is the
    ``fallback`` of the one loader (:func:`~litenext_monai.model.load_network`).

    Args:
        checkpoint: ``model.pt`` or an MLflow model URI.
        in_channels: image channels the network was trained with; required without ``model.json``,
            and checked against it when given.
        out_channels: output channels of a checkpoint without ``model.json``.
        deploy: convert the network to its inference form.
        network_kwargs: further :class:`LiteNeXt` arguments of a checkpoint without ``model.json``.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: unusable weights, ``in_channels`` that contradict the card, or missing without one.
    """
    local = resolve_checkpoint(checkpoint)
    fallback = None
    if not inference_settings_path(local).is_file():
        if in_channels is None:
            raise ValueError(
                f"{checkpoint}: no model.json beside the checkpoint, so in_channels must be given"
            )
        fallback = LiteNeXt(
            spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **network_kwargs
        )
    try:
        network, settings = load_network(local, deploy=deploy, fallback=fallback)
    except ValueError as err:
        if fallback is None:
            raise
        raise ValueError(
            f"{err}; built as LiteNeXt(in_channels={in_channels}, out_channels={out_channels}"
            f"{''.join(f', {k}={v}' for k, v in network_kwargs.items())})"
        ) from err
    if fallback is None and in_channels is not None and int(in_channels) != int(settings["in_channels"]):
        raise ValueError(
            f"{checkpoint}: trained with in_channels={settings['in_channels']} (model.json), not {in_channels}"
        )
    return network


def _read_slices(source: Path, axis: int) -> tuple[list[np.ndarray], np.ndarray | None, Any]:
    """The source's ``H×W`` slices along ``axis``, the series affine, and the values' full scale.

    A NIfTI source returns ``None`` for the affine because its header is copied from the file;
    its full scale is the one a 2D NIfTI of the same data type reads with.
    """
    if source.is_dir():
        volume, meta = read_dicom_series(source)
        slices = [np.take(volume, k, axis=axis) for k in range(volume.shape[axis])]
        return slices, np.asarray(meta["affine"], dtype=np.float64), meta.get("value_range")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if is_nifti(source):
        slices = [s.array for s in slice_volume(source, axis)]
        return slices, None, _value_range(np.stack(slices))
    if is_dicom(source):
        raise ValueError(
            f"{source}: a single DICOM file is not a volume; pass the folder holding the whole series"
        )
    raise ValueError(
        f"{source}: unsupported input; expected a 3D NIfTI volume (.nii, .nii.gz) or a DICOM series folder"
    )


def segment_volume(
    network: nn.Module,
    source: str | os.PathLike,
    output_path: str | os.PathLike,
    axis: int = 2,
    image_size: Sequence[int] | None = None,
    modality: str | None = None,
    threshold: float | None = None,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    window: Sequence[float] | None = None,
    percentiles: Sequence[float] | None = None,
    settings: Mapping[str, Any] | None = None,
    tta: bool | None = None,
) -> Path:
    """Segment a 3D volume slice by slice with a 2D network and write the mask volume.

    Every slice along ``axis`` goes through :class:`~litenext_monai.inference.Predictor` with the
    model card ``settings``: normalised on its own (as a training slice was), converted to
    ``network.in_channels``, then as the card's ``input_mode`` says either resized to
    ``image_size``, segmented and its logits resized back to the slice's size, or segmented by a
    Gaussian sliding window of ``image_size`` at the slice's own size; then ``sigmoid >= threshold``
    (one class) or argmax (``num_classes`` ≥ 2).

    Args:
        network: a 2D segmentation network with an ``in_channels`` attribute (e.g. from
            :func:`load_inference_network`); moved to ``device`` and put in eval mode.
        source: a 3D NIfTI file (``.nii``/``.nii.gz``; a trailing singleton 4th dimension is allowed)
            or a folder holding one DICOM series.
        output_path: the mask volume to write (``.nii`` or ``.nii.gz``), atomically.
        axis: volume axis to slice along (2: the slices of a DICOM series or the axial slices of an
            RAS-stored scan).
        image_size, modality, threshold: override the model card's values (its defaults, in
            :data:`~litenext_monai.model.card.DEFAULT_SETTINGS`, when neither gives one).
        batch_size: slices per forward pass; 1 (the default) reproduces the bundle's batches exactly.
        device: where the network runs.
        window: CT ``(centre, width)`` in HU; ``None`` uses the loader's default.
        percentiles: ``(low, high)`` for MR/microscopy; ``None`` uses the loader's default.
        settings: the model card (e.g. the settings :func:`load_network_from_checkpoint` returns).
        tta: override the card's flip test-time augmentation (``None``: the card's, default off).

    Returns:
        ``output_path``: a ``uint8`` NIfTI ({0, 1}, or the label map ``0 .. N`` for N classes) with
        the input's voxel shape (``H×W×S`` for a
        series) and affine (the NIfTI header's, or the one
        :func:`~litenext_monai.io.read_dicom_series` computes).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``source`` is not a 3D volume, unreadable or unsupported (message names it), or
            bad arguments.
    """
    source, output_path = Path(source), Path(output_path)
    overrides = {"image_size": image_size, "modality": modality, "threshold": threshold, "tta": tta}
    card = complete_settings(
        {
            **dict(settings or {}),
            **{k: v for k, v in overrides.items() if v is not None},
            "in_channels": int(network.in_channels),
            # a network without a card: its output channels tell one class from several
            "out_channels": (settings or {}).get("out_channels") or getattr(network, "out_channels", None),
        }
    )
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if str(card["modality"]).lower() not in MODALITIES:
        raise ValueError(f"unknown modality {card['modality']!r}; expected one of {MODALITIES}")
    if len(card["image_size"]) != 2 or min(card["image_size"]) < 1:
        raise ValueError(f"image_size must be two positive sizes (h, w), got {tuple(card['image_size'])}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not is_nifti(output_path):
        raise ValueError(f"{output_path}: the output must be a NIfTI file ending in .nii or .nii.gz")
    if output_path.resolve() == source.resolve():
        raise ValueError(f"{output_path}: refusing to overwrite the input volume")

    slices, series_affine, value_range = _read_slices(source, axis)
    was_training = network.training
    predictor = Predictor(network, card, device=device, batch_size=batch_size)
    predictor.loader.window = tuple(DEFAULT_CT_WINDOW if window is None else window)
    predictor.loader.percentiles = tuple(DEFAULT_PERCENTILES if percentiles is None else percentiles)
    masks: list[np.ndarray] = []
    try:
        for start in range(0, len(slices), batch_size):
            images = [
                predictor.from_array(
                    array, {"spatial_shape": array.shape, "value_range": value_range}, str(source)
                )
                for array in slices[start : start + batch_size]
            ]
            masks.extend(predictor.predict_images(images))
    finally:
        network.train(was_training)

    if series_affine is None:
        stack_slices(masks, range(len(masks)), axis, source, out_path=output_path, dtype=np.uint8)
    else:
        write_nifti(np.stack(masks, axis=axis), series_affine, output_path)
    logger.info(
        "%s: %d slices along axis %d segmented -> %s", source.name, len(masks), axis, output_path.name
    )
    return output_path
