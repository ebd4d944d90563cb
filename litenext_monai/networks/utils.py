"""Model accounting: parameter and multiply-accumulate counts, deploy forms and table names.

Two MAC conventions (see ``docs/networks.md``):

* ``"executed"``: every multiply-accumulate the forward pass executes in convolutions (also
  transposed and grouped), linear layers and matrix products (``mm``, ``bmm``, ``addmm``,
  ``matmul``, ``einsum``, attention), counted at the ATen level by
  :class:`torch.utils.flop_counter.FlopCounterMode` (its FLOPs / 2). Bias additions, norms,
  activations, pooling and interpolation are not counted. This is the honest cost of a network whose
  decoder does matrix products outside ``nn.Conv``/``nn.Linear`` modules (LiteNeXt's fused decoder).
* ``"thop"``: what ``thop.profile`` 0.1.1 reports, the counter behind the baseline papers' "MACs"
  (baselines spec §0): leaf modules only; convolutions ``out.numel() · C_in/groups · k…`` without
  bias (also for transposed convolutions, thop's formula); affine norms 4 and plain norms 2 ops per
  input element; ``nn.Upsample`` 1 (nearest), 5 (linear), 11 (bilinear), 259 (bicubic) or 31
  (trilinear) per output element; average pooling 1 and adaptive average pooling ``kernel + 1``
  per output element; linear ``out.numel() · in_features``; PReLU 1 per element; softmax
  ``2n − 1`` per row of ``n``; every other module, functional op and matrix product 0.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_parameters",
    "count_macs",
    "complexity_report",
    "network_display_name",
    "reparameterize",
    "MAC_CONVENTIONS",
]

#: Accepted values of ``count_macs(..., convention=...)``.
MAC_CONVENTIONS = ("executed", "thop")

#: thop 0.1.1's operations per output element of ``nn.Upsample`` by mode.
_THOP_UPSAMPLE_OPS = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 224 + 35, "trilinear": 13 * 2 + 5}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those requiring gradients if ``trainable_only``).

    Buffers (BatchNorm running statistics, LV-UNet's input normalisation) are not parameters and
    are not counted; pass the network's deploy form (:func:`reparameterize`) for deploy counts.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm statistics untouched by the counting pass), restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _zeros_input(module: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    if len(input_shape) < 2:
        raise ValueError(f"input_shape must include the batch and channel dimensions, got {tuple(input_shape)}.")
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    dtype = tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.float32
    return torch.zeros(*input_shape, device=device, dtype=dtype)


def _thop_ops(mod: nn.Module, inputs: tuple, output: Any) -> int:
    """thop 0.1.1's count for one call of the leaf module ``mod`` (module docstring)."""
    if not isinstance(output, torch.Tensor):
        return 0
    x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    if isinstance(mod, nn.modules.conv._ConvNd):
        return output.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
    if isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        assert x is not None
        return (4 if mod.affine else 2) * x.numel()
    if isinstance(mod, (nn.LayerNorm, nn.GroupNorm)):
        assert x is not None
        affine = getattr(mod, "elementwise_affine", getattr(mod, "affine", False))
        return (4 if affine else 2) * x.numel()
    if isinstance(mod, nn.Linear):
        return output.numel() * mod.in_features
    if isinstance(mod, nn.Upsample):
        return _THOP_UPSAMPLE_OPS.get(mod.mode, 0) * output.numel()
    if isinstance(mod, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return output.numel()
    if isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        assert x is not None
        kernel = math.prod(i / o for i, o in zip(x.shape[2:], output.shape[2:]))
        return int((kernel + 1) * output.numel())
    if isinstance(mod, nn.PReLU):
        assert x is not None
        return 0 if mod.training else x.numel()
    if isinstance(mod, nn.Softmax):
        assert x is not None
        features = x.shape[mod.dim if mod.dim is not None else -1]
        return (x.numel() // features) * (2 * features - 1)
    return 0


def _thop_macs(module: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(mod: nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal total
        total += _thop_ops(mod, inputs, output)

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        module(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def count_macs(module: nn.Module, input_shape: Sequence[int], convention: str = "executed") -> int:
    """Multiply-accumulates of one forward pass on a zero input of ``input_shape``.

    The pass runs in eval mode under ``torch.no_grad()`` (BatchNorm statistics are not touched;
    the module's train/eval flags are restored), on the device and dtype of its parameters.

    Args:
        module: the network (training or deploy form).
        input_shape: full input shape including the batch dimension, e.g. ``(1, 3, 256, 256)``;
            MACs scale with the batch size.
        convention: ``"executed"`` (every executed multiply-accumulate of convolutions, linear
            layers and matrix products; ``FlopCounterMode`` FLOPs / 2) or ``"thop"`` (the
            baseline papers' counter, including its norm/upsampling ops and its bias-free
            convolution count); see the module docstring.

    Returns:
        the count (an int; divide by 1e9 for G).

    Raises:
        ValueError: unknown ``convention`` or an ``input_shape`` without batch/channel dimensions.
    """
    if convention not in MAC_CONVENTIONS:
        raise ValueError(f"convention must be one of {MAC_CONVENTIONS}, got {convention!r}.")
    x = _zeros_input(module, input_shape)
    with _eval_mode(module), torch.no_grad():
        if convention == "thop":
            return _thop_macs(module, x)
        with FlopCounterMode(display=False) as counter:
            module(x)
        return int(counter.get_total_flops()) // 2


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


def _deploy_copy(network: nn.Module) -> nn.Module:
    """A deep copy of ``network`` in its deploy form (the original is untouched)."""
    clone = copy.deepcopy(network)
    set_slope = getattr(clone, "set_act_slope", None)
    if callable(set_slope) and not getattr(clone, "is_deployed", False):
        set_slope(1.0)  # the fused form's structure does not depend on the slope; no warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reparameterize(clone)


def complexity_report(network: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Parameters and MACs of ``network`` in its training and deploy forms, for comparison tables.

    The deploy form is :func:`reparameterize` applied to a deep copy (``network`` is not changed);
    a network without a deploy form reports the same numbers for both. Pass the training form.

    Args:
        network: the network in its training form.
        input_shape: full input shape with batch dimension, e.g. ``(1, 3, 256, 256)``.

    Returns:
        ``{"network": display name, "input_shape": list, "params_train", "params_deploy",
        "macs_executed_train", "macs_executed_deploy", "macs_thop_train", "macs_thop_deploy",
        "macs_thop"}``; ``macs_thop`` is the training form's thop count (the papers' convention).
        Counts are ints (MACs for the whole batch).
    """
    deploy = _deploy_copy(network)
    thop_train = count_macs(network, input_shape, "thop")
    return {
        "network": network_display_name(network),
        "input_shape": [int(s) for s in input_shape],
        "params_train": count_parameters(network),
        "params_deploy": count_parameters(deploy),
        "macs_executed_train": count_macs(network, input_shape, "executed"),
        "macs_executed_deploy": count_macs(deploy, input_shape, "executed"),
        "macs_thop_train": thop_train,
        "macs_thop_deploy": count_macs(deploy, input_shape, "thop"),
        "macs_thop": thop_train,
    }


def _config_value(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, default)
    return default if value is None else value


def network_display_name(network_or_config: nn.Module | Mapping[str, Any]) -> str:
    """The name a results table shows for a network, stating which form/initialisation ran.

    ``"LiteNeXt"``, ``"CMUNeXt-XXS"``, ``"Mini-Net (ES-2)"`` / ``"Mini-Net (dense)"``,
    ``"LV-UNet (ImageNet)"`` / ``"LV-UNet (random init)"`` and ``"MONAI UNet 16-256 res2"`` (first
    and last widths, residual units); any other class gives its class name.

    Args:
        network_or_config: an instantiated network (a ``.module`` wrapper such as DDP is
            unwrapped), or a bundle ``network_def`` mapping with ``_target_`` (also a ``model.json``
            dict holding one under ``network_def``). For LV-UNet a config names ImageNet weights
            through ``pretrained`` or ``pretrained_path``.
    """
    if isinstance(network_or_config, Mapping):
        config = network_or_config
        if "_target_" not in config and isinstance(config.get("network_def"), Mapping):
            config = config["network_def"]
        target = str(config.get("_target_", ""))
        name = target.rsplit(".", 1)[-1]
        if name == "LVUNet":
            imagenet = bool(config.get("pretrained")) or config.get("pretrained_path") is not None
            return "LV-UNet (ImageNet)" if imagenet else "LV-UNet (random init)"
        if name == "MiniNet":
            return "Mini-Net (dense)" if _config_value(config, "variant", "es2") == "dense" else "Mini-Net (ES-2)"
        if name == "UNet" and target.startswith("monai."):
            channels = list(_config_value(config, "channels", [0]))
            units = _config_value(config, "num_res_units", 0)
            return f"MONAI UNet {channels[0]}-{channels[-1]} res{units}"
        return _FIXED_NAMES.get(name, name or "unknown network")
    network = getattr(network_or_config, "module", network_or_config)
    own = getattr(network, "display_name", None)
    if isinstance(own, str):
        return own
    cls = type(network)
    if cls.__name__ == "MiniNet":
        return "Mini-Net (dense)" if getattr(network, "variant", "es2") == "dense" else "Mini-Net (ES-2)"
    if cls.__name__ == "UNet" and cls.__module__.startswith("monai."):
        channels = list(getattr(network, "channels", [0]))
        return f"MONAI UNet {channels[0]}-{channels[-1]} res{getattr(network, 'num_res_units', 0)}"
    return _FIXED_NAMES.get(cls.__name__, cls.__name__)


_FIXED_NAMES = {"LiteNeXt": "LiteNeXt", "CMUNeXtXXS": "CMUNeXt-XXS"}
