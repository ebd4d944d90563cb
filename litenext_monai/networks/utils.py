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
