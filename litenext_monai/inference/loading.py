"""The inference entry point for a checkpoint given as a file or an MLflow model URI."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from litenext_monai.model.loader import load_network
from litenext_monai.tracking.uris import resolve_checkpoint

__all__ = ["load_network_from_checkpoint"]


def load_network_from_checkpoint(
    ckpt_path_or_uri: str | os.PathLike,
    device: str | torch.device = "cpu",
    deploy: bool = True,
    tracking_uri: str | None = None,
    fallback: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Resolve ``ckpt_path_or_uri`` to a local ``model.pt`` once, then load it with the one loader.

    Args:
        ckpt_path_or_uri: ``model.pt`` (model card ``model.json`` beside it), or ``models:/NAME/VERSION``,
            ``models:/NAME@ALIAS``, ``runs:/RUN_ID/model``.
        device: where the network is placed.
        deploy: the network's inference form (:func:`litenext_monai.networks.reparameterize`).
        tracking_uri: the MLflow store of a URI (``MLFLOW_TRACKING_URI`` wins when set).
        fallback: network for a checkpoint without a model card (see
            :func:`litenext_monai.model.load_network`).

    Returns:
        ``(network, settings)`` as :func:`litenext_monai.model.load_network` returns them;
        ``settings["checkpoint"]`` is the local file.
    """
    local = resolve_checkpoint(ckpt_path_or_uri, tracking_uri)
    return load_network(local, device=device, deploy=deploy, fallback=fallback)
