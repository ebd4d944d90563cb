"""Model accounting: parameter and multiply-accumulate counts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_parameters", "count_macs", "reparameterize"]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those requiring gradients if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_macs(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of convolutions and linear layers for one forward pass.

    Counted with forward hooks on the modules themselves, so convolutions with any padding mode
    are included (fvcore silently drops ``padding="same"`` ones). Bias additions, norms,
    activations, pooling and interpolation are not counted — the convention of the LiteNeXt
    paper's 0.42 G figure.

    Args:
        module: the network.
        input_shape: full input shape including the batch dimension, e.g. ``(1, 3, 256, 256)``.
    """
    total = 0

    def conv_hook(mod: nn.modules.conv._ConvNd, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = 1
        for k in mod.kernel_size:
            kernel *= k
        total += output.numel() * (mod.in_channels // mod.groups) * kernel

    def linear_hook(mod: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * mod.in_features

    handles = []
    for sub in module.modules():
        if isinstance(sub, nn.modules.conv._ConvNd):
            handles.append(sub.register_forward_hook(conv_hook))
        elif isinstance(sub, nn.Linear):
            handles.append(sub.register_forward_hook(linear_hook))
    try:
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            module(torch.zeros(*input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total


def reparameterize(module: nn.Module) -> nn.Module:
    """Convert ``module`` in place to its inference-only deploy form, when it has one.

    Networks with train-time structure that folds away (timm's convention) define
    ``reparameterize()``; any other module is returned unchanged, so inference code can call this
    on whatever network a bundle defines.
    """
    convert = getattr(module, "reparameterize", None)
    if callable(convert):
        convert()
    return module


# --- TEMP networks.utils shim (issue 16 harness): minimal stand-ins for the real count_macs(convention=...),
# complexity_report and network_display_name that another branch adds; the integrator drops this block. ---

_DISPLAY_NAMES = {
    "LiteNeXt": "LiteNeXt",
    "CMUNeXtXXS": "CMUNeXt-XXS",
    "MiniNet": "Mini-Net",
    "LVUNet": "LV-UNet",
    "UNet": "MONAI UNet",
}


def _count_macs_thop_like(module: nn.Module, input_shape: Sequence[int]) -> int:
    """thop-style count (TEMP shim): conv/linear MACs without bias, 4 per element of affine BatchNorm,
    11 per output element of bilinear ``nn.Upsample``; activations and pooling free."""
    total = 0

    def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.modules.conv._ConvNd):
            kernel = 1
            for k in mod.kernel_size:
                kernel *= k
            total += output.numel() * (mod.in_channels // mod.groups) * kernel
        elif isinstance(mod, nn.Linear):
            total += output.numel() * mod.in_features
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            total += (4 if mod.affine else 2) * inputs[0].numel()
        elif isinstance(mod, nn.Upsample) and mod.mode in ("bilinear", "linear"):
            total += 11 * output.numel()

    handles = [sub.register_forward_hook(hook) for sub in module.modules()]
    try:
        param = next(module.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            module(torch.zeros(*input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total


_count_macs_executed = count_macs


def count_macs(module: nn.Module, input_shape: Sequence[int], convention: str = "executed") -> int:  # noqa: F811
    """MACs of one forward pass: ``"executed"`` (conv/linear as run) or ``"thop"`` (TEMP shim)."""
    if convention == "executed":
        return _count_macs_executed(module, input_shape)
    if convention == "thop":
        return _count_macs_thop_like(module, input_shape)
    raise ValueError(f"convention must be 'executed' or 'thop', got {convention!r}")


def complexity_report(network: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Parameters and MACs in the training and the deploy form (TEMP shim; ``network`` is not modified)."""
    import copy

    was_training = network.training
    network.eval()
    try:
        deploy = reparameterize(copy.deepcopy(network)).eval()
        return {
            "params_train": count_parameters(network),
            "params_deploy": count_parameters(deploy),
            "macs_executed_train": count_macs(network, input_shape),
            "macs_executed_deploy": count_macs(deploy, input_shape),
            "macs_thop": count_macs(network, input_shape, convention="thop"),
        }
    finally:
        network.train(was_training)


def network_display_name(network_or_network_def: nn.Module | dict) -> str:
    """Human name of a network or a ``network_def`` dict, e.g. ``"LV-UNet (random init)"`` (TEMP shim)."""
    if isinstance(network_or_network_def, dict):
        cls = str(network_or_network_def.get("_target_", "?")).rsplit(".", 1)[-1]
        pretrained = network_or_network_def.get("pretrained_path") is not None
    else:
        cls = type(network_or_network_def).__name__
        pretrained = bool(getattr(network_or_network_def, "pretrained_path", None))
    name = _DISPLAY_NAMES.get(cls, cls)
    if cls == "LVUNet":
        name += " (ImageNet)" if pretrained else " (random init)"
    return name
