"""Volume inference: a trained 2D LiteNeXt segments a 3D NIfTI volume or a DICOM series slice by slice.

The volume is cut into 2D slices along one axis; each slice goes through exactly the
preprocessing the bundle applies to a training slice that ``prepare_dataset`` cut from a volume
(a ``float32`` 2D NIfTI loaded by :class:`~litenext_monai.transforms.LoadImage2D`, then MONAI's
bilinear, anti-aliased ``Resize`` to ``image_size``), and each prediction is mapped back the way
the inference bundle's ``Invertd`` does (bilinear ``Resize`` to the slice's size). The binary
slices are stacked into a ``uint8`` {0, 1} NIfTI volume with the input's shape and affine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Resize
from monai.utils import convert_to_tensor
from torch import nn

from litenext_monai.engines.checkpoint import (
    inference_settings_path,
    load_network_from_checkpoint,
    load_state_dict,
)
from litenext_monai.engines.mlflow_models import resolve_checkpoint
from litenext_monai.io import (
    DEFAULT_CT_WINDOW,
    DEFAULT_PERCENTILES,
    MODALITIES,
    is_dicom,
    is_nifti,
    normalize_intensity,
    read_dicom_series,
    slice_volume,
    stack_slices,
    to_channels,
    write_nifti,
)
from litenext_monai.networks import LiteNeXt, reparameterize

__all__ = ["load_inference_network", "segment_volume"]

logger = logging.getLogger(__name__)


def load_inference_network(
    checkpoint: str | os.PathLike,
    in_channels: int | None = None,
    out_channels: int = 1,
    deploy: bool = True,
    **network_kwargs: object,
) -> nn.Module:
    """Load a bundle checkpoint as a network in eval mode on the CPU.

    A self-describing checkpoint (``model.json`` beside ``model.pt``, written by training) needs
    nothing else: the network is built from its ``network_def``
    (:func:`~litenext_monai.engines.load_network_from_checkpoint`). For an older checkpoint
    without one, a :class:`~litenext_monai.networks.LiteNeXt` is built from the arguments.

    Args:
        checkpoint: a ``model.pt`` holding the network's ``state_dict`` (what the bundle's
            ``BestModelSaver`` writes to ``models/model.pt``), or an MLflow model URI.
        in_channels: image channels the network was trained with; required without ``model.json``,
            and checked against it when given.
        out_channels: output channels (1 for binary segmentation) of a checkpoint without ``model.json``.
        deploy: convert the network to its inference form (:func:`litenext_monai.networks.reparameterize`).
        network_kwargs: further :class:`LiteNeXt` arguments (``base_channels``, ``kernel_size``) of a
            checkpoint without ``model.json``.

    Returns:
        The network in eval mode on the CPU.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: the file is not a ``state_dict``, does not fit the network, contradicts
            ``in_channels``, or ``in_channels`` is missing for a checkpoint without ``model.json``.
    """
    local = resolve_checkpoint(checkpoint)
    if inference_settings_path(local).is_file():
        network, settings = load_network_from_checkpoint(local, deploy=deploy)
        if in_channels is not None and int(in_channels) != int(settings["in_channels"]):
            raise ValueError(
                f"{checkpoint}: trained with in_channels={settings['in_channels']} (model.json), not {in_channels}"
            )
        return network
    if not Path(local).is_file():
        raise FileNotFoundError(f"{local}: no such checkpoint file")
    if in_channels is None:
        raise ValueError(f"{checkpoint}: no model.json beside the checkpoint, so in_channels must be given")
    network = LiteNeXt(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **network_kwargs)
    try:
        load_state_dict(network, local)
    except ValueError as err:
        raise ValueError(
            f"{err}; built as LiteNeXt(in_channels={in_channels}, out_channels={out_channels}"
            f"{''.join(f', {k}={v}' for k, v in network_kwargs.items())})"
        ) from err
    if deploy:
        reparameterize(network)
    return network.eval()


def _read_slices(source: Path, axis: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The source's ``H×W`` slices along ``axis`` and, for a DICOM series, the affine its reader computed.

    A NIfTI source returns ``None`` for the affine because its header is copied from the file.
    """
    if source.is_dir():
        volume, meta = read_dicom_series(source)
        slices = [np.take(volume, k, axis=axis) for k in range(volume.shape[axis])]
        return slices, np.asarray(meta["affine"], dtype=np.float64)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if is_nifti(source):
        return [s.array for s in slice_volume(source, axis)], None
    if is_dicom(source):
        raise ValueError(
            f"{source}: a single DICOM file is not a volume; pass the folder holding the whole series"
        )
    raise ValueError(
        f"{source}: unsupported input; expected a 3D NIfTI volume (.nii, .nii.gz) or a DICOM series folder"
    )


def _normalise(
    slices: Sequence[np.ndarray],
    modality: str,
    channels: int,
    window: Sequence[float],
    percentiles: Sequence[float],
) -> torch.Tensor:
    """``H×W`` slices normalised one by one as training saw them: ``B×C×H×W`` float32."""
    images = []
    for array in slices:
        # prepare_dataset stores volume slices as float32 NIfTI, so the loader never had an integer
        # full scale for them ("rgb" then clips to [0, 1]); casting first reproduces that exactly.
        image = normalize_intensity(
            array.astype(np.float32), modality, window=window, percentiles=percentiles
        )
        images.append(np.moveaxis(to_channels(image, channels), -1, 0))
    return torch.from_numpy(np.stack(images).astype(np.float32))


def _predict(
    network: nn.Module,
    slices: Sequence[np.ndarray],
    normalise: Callable[[Sequence[np.ndarray]], torch.Tensor],
    image_size: Sequence[int],
    threshold: float,
    batch_size: int,
    device: torch.device,
) -> list[np.ndarray]:
    """Binary ``H×W`` uint8 masks of the slices; only one batch is held normalised at a time."""
    height, width = slices[0].shape
    # The bundle's transforms: anti-aliased bilinear Resize on the way in, plain bilinear on the way back.
    to_network = Resize(tuple(image_size), mode="bilinear", anti_aliasing=True)
    to_slice = Resize((height, width), mode="bilinear")
    masks: list[np.ndarray] = []
    for start in range(0, len(slices), batch_size):
        batch = normalise(slices[start : start + batch_size])
        b, channels = batch.shape[:2]
        # Resize treats dim 0 as channels; folding batch into it resizes every image of the batch alike.
        resized = convert_to_tensor(to_network(batch.reshape(b * channels, height, width)), track_meta=False)
        logits = network(resized.reshape(b, channels, *resized.shape[1:]).to(device))
        if logits.shape[1] != 1:
            raise ValueError(
                f"expected a network with one output channel, got logits of shape {tuple(logits.shape)}"
            )
        probabilities = torch.sigmoid(logits[:, 0].float()).cpu()
        restored = convert_to_tensor(to_slice(probabilities), track_meta=False)
        masks.extend((restored > threshold).numpy().astype(np.uint8))
    return masks


def segment_volume(
    network: nn.Module,
    source: str | os.PathLike,
    output_path: str | os.PathLike,
    axis: int = 2,
    image_size: Sequence[int] = (256, 256),
    modality: str = "mr",
    threshold: float = 0.5,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    window: Sequence[float] | None = None,
    percentiles: Sequence[float] | None = None,
) -> Path:
    """Segment a 3D volume slice by slice with a 2D network and write the mask volume.

    Every slice along ``axis`` is normalised on its own (as a training slice was), replicated or
    converted to ``network.in_channels``, resized to ``image_size``, segmented, and its sigmoid
    probabilities are resized back to the slice's size and thresholded.

    Args:
        network: a 2D segmentation network with an ``in_channels`` attribute returning ``B×1×h×w``
            logits (e.g. :func:`load_inference_network`); it is moved to ``device`` and put in eval mode.
        source: a 3D NIfTI file (``.nii``/``.nii.gz``; a trailing singleton 4th dimension is allowed)
            or a folder holding one DICOM series.
        output_path: the mask volume to write (``.nii`` or ``.nii.gz``), atomically.
        axis: volume axis to slice along (2: the third voxel axis, i.e. the slices of a DICOM series
            or the axial slices of an RAS-stored scan).
        image_size: ``(h, w)`` the network was trained at (``image_size`` in ``train.json``); multiples
            of 16 for LiteNeXt.
        modality: intensity normalisation of the training data, one of
            :data:`litenext_monai.io.MODALITIES` (``modality`` in ``train.json``).
        threshold: probability above which a pixel is foreground.
        batch_size: slices per forward pass.
        device: where the network runs.
        window: CT ``(centre, width)`` in HU; ``None`` uses the loader's default.
        percentiles: ``(low, high)`` for MR/microscopy; ``None`` uses the loader's default.

    Returns:
        ``output_path``: a ``uint8`` {0, 1} NIfTI with the input's voxel shape (``H×W×S`` for a
        series) and affine (the NIfTI header's, or the one
        :func:`~litenext_monai.io.read_dicom_series` computes).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``source`` is not a 3D volume, unreadable or unsupported (message names it), or
            bad arguments.
    """
    source, output_path = Path(source), Path(output_path)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if modality.lower() not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"image_size must be two positive sizes (h, w), got {tuple(image_size)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not is_nifti(output_path):
        raise ValueError(f"{output_path}: the output must be a NIfTI file ending in .nii or .nii.gz")
    if output_path.resolve() == source.resolve():
        raise ValueError(f"{output_path}: refusing to overwrite the input volume")

    slices, series_affine = _read_slices(source, axis)
    normalise = partial(
        _normalise,
        modality=modality.lower(),
        channels=int(network.in_channels),
        window=DEFAULT_CT_WINDOW if window is None else window,
        percentiles=DEFAULT_PERCENTILES if percentiles is None else percentiles,
    )
    device = torch.device(device)
    was_training = network.training
    network.to(device).eval()
    try:
        with torch.no_grad():
            masks = _predict(network, slices, normalise, image_size, threshold, batch_size, device)
    finally:
        network.train(was_training)

    if series_affine is None:
        stack_slices(masks, range(len(masks)), axis, source, out_path=output_path, dtype=np.uint8)
    else:
        write_nifti(np.stack(masks, axis=axis), series_affine, output_path)
    logger.info("%s: %d slices along axis %d segmented -> %s", source, len(masks), axis, output_path)
    return output_path
