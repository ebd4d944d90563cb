"""The one checkpoint loader: build the network a model card describes and load its weights.

Every route that needs a trained network (bundle inference and evaluation, the Predictor, volume
inference, the DICOM node, export) comes through :func:`load_network`. It reads a *local*
``model.pt``; MLflow model URIs are resolved to one first by
:func:`litenext_monai.inference.load_model`, which is the entry point for URIs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from pydoc import locate
from typing import Any

import torch
from torch import nn

from litenext_monai.model.card import (
    checkpoint_sha256,
    inference_settings_path,
    read_inference_settings,
)
from litenext_monai.networks import reparameterize

__all__ = ["build_network", "check_network_config", "checkpoint_network", "load_network", "load_state_dict"]


def build_network(network_def: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``{"_target_": "pkg.Class", **kwargs}`` where ``pkg.Class`` is an ``nn.Module``.

    Raises:
        ValueError: the target cannot be imported, is not a module class, or rejects the arguments.
    """
    target = network_def.get("_target_")
    kwargs = {k: v for k, v in network_def.items() if not (k.startswith("_") and k.endswith("_"))}
    component = locate(str(target)) if isinstance(target, str) else None
    if not (isinstance(component, type) and issubclass(component, nn.Module)):
        raise ValueError(f"network_def '_target_' {target!r} is not an importable torch.nn.Module class")
    try:
        return component(**kwargs)
    except TypeError as err:
        raise ValueError(f"cannot build {target} with {kwargs} ({err})") from err


def check_network_config(
    network_def: Mapping[str, Any],
    network: nn.Module,
    image_size: tuple[int, int] | list[int],
    in_channels: int,
) -> None:
    """Check that ``network_def`` rebuilds ``network``: same weights fit and give the same output.

    Training calls this before it first writes ``model.json``, so a bundle overlay that changes
    the network but not the recorded definition fails at once instead of at inference.

    Raises:
        ValueError: the rebuilt network has other weights or computes something else.
    """
    live = getattr(network, "module", network)
    rebuilt = build_network(network_def)
    try:
        rebuilt.load_state_dict(live.state_dict())
    except RuntimeError as err:
        raise ValueError(
            f"network_def {dict(network_def)} does not rebuild the trained network ({err})"
        ) from err
    parameter = next(live.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.rand(
        1, int(in_channels), *[int(s) for s in image_size], generator=torch.Generator().manual_seed(0)
    )
    was_training = live.training
    live.eval()
    try:
        with torch.no_grad():
            expected = live(x.to(device))
            actual = rebuilt.to(device).eval()(x.to(device))
    finally:
        live.train(was_training)
    if isinstance(expected, torch.Tensor) and not (
        isinstance(actual, torch.Tensor)
        and actual.shape == expected.shape
        and torch.allclose(actual, expected, atol=1e-5)
    ):
        raise ValueError(
            f"network_def {dict(network_def)} builds a network whose output differs from the trained one"
        )


def load_state_dict(network: nn.Module, checkpoint: str | os.PathLike) -> nn.Module:
    """Load a ``state_dict`` file into ``network`` (``weights_only=True``, strict).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable ``state_dict``, or weights that do not fit (message names the file).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
    try:
        # weights_only refuses pickled code: a checkpoint from elsewhere cannot run anything on load.
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign or damaged files
        raise ValueError(f"{checkpoint}: not a readable PyTorch state_dict ({err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint}: expected a state_dict, found {type(state).__name__}")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{checkpoint}: weights do not fit {type(network).__name__} ({err})") from err
    return network


def load_network(
    checkpoint: str | os.PathLike,
    device: str | torch.device = "cpu",
    deploy: bool = True,
    fallback: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the network that the model card (``model.json``) describes and load ``model.pt`` into it.

    Args:
        checkpoint: a local ``model.pt``; its model card is ``model.json`` beside it.
        device: where the network is placed.
        deploy: convert the network to its inference form with
            :func:`litenext_monai.networks.reparameterize` after loading the weights.
        fallback: the network to load the weights into when the checkpoint has no model card
            (a checkpoint written before model cards existed); without one such a checkpoint is an
            error.

    Returns:
        ``(network, settings)``: the network in eval mode, and the model card completed with the
        defaults of :data:`~litenext_monai.model.card.DEFAULT_SETTINGS` plus ``checkpoint`` (the local
        path) and ``checkpoint_sha256``. Without a card the settings hold only those two keys.

    Raises:
        FileNotFoundError: no checkpoint, or no ``model.json`` and no ``fallback``.
        ValueError: unreadable settings or weights, or a ``network_def`` that cannot be built.
    """
    local = Path(checkpoint)
    if not local.is_file():
        raise FileNotFoundError(f"{local}: no such checkpoint file")
    if inference_settings_path(local).is_file() or fallback is None:
        settings = read_inference_settings(local)
        try:
            network = build_network(settings["network_def"])
        except ValueError as err:
            raise ValueError(f"{inference_settings_path(local)}: {err}") from err
    else:
        settings, network = {}, fallback
    load_state_dict(network, local)
    if deploy:
        reparameterize(network)
    settings = {**settings, "checkpoint": str(local), "checkpoint_sha256": checkpoint_sha256(local)}
    return network.to(torch.device(device)).eval(), settings


def checkpoint_network(
    ckpt_path: str | os.PathLike, fallback: nn.Module, device: str | torch.device = "cpu", deploy: bool = True
) -> nn.Module:
    """The bundle's ``network``: :func:`load_network` with the bundle's ``network_def`` as ``fallback``."""
    return load_network(ckpt_path, device=device, deploy=deploy, fallback=fallback)[0]
