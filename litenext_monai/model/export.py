"""Export a trained checkpoint to TorchScript or ONNX.

The exported graph is the network's deploy form (:func:`litenext_monai.networks.reparameterize`)
unless ``deploy=False``. Each export is checked against the PyTorch model before it is put in
place: the saved temporary file is loaded back (``torch.jit.load`` or ONNX Runtime) and run on a
fixed example, and only an export that passes replaces ``filepath``. The checkpoint's ``model.json`` travels inside the file, so a TorchScript export opened
with :func:`monai.data.load_net_with_metadata` or an ONNX model's metadata says which channels,
size, modality and threshold it expects.

MONAI's own ``python -m monai.bundle ckpt_export``/``onnx_export`` also export the deploy form
when pointed at the bundle's ``network_export`` item (:func:`deploy_on_load`); they take a file
only. ``litenext-export`` (:mod:`litenext_monai.cli.export`) resolves ``models:/``/``runs:/`` URIs
first and then calls :func:`export_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from litenext_monai.io import atomic_write
from litenext_monai.model.card import MODEL_METADATA, model_metadata
from litenext_monai.model.loader import load_network
from litenext_monai.networks import reparameterize

__all__ = ["EXPORT_FORMATS", "deploy_on_load", "export_checkpoint", "export_format"]

logger = logging.getLogger(__name__)

#: File suffix of each export format.
EXPORT_FORMATS = {"torchscript": (".ts", ".pt"), "onnx": (".onnx",)}
#: ONNX opset of the exports (the one ONNX Runtime ≥ 1.18 runs everywhere).
ONNX_OPSET = 17
#: Largest accepted |exported − PyTorch| logit difference on the check example.
EXPORT_ATOL = 1e-4


def deploy_on_load(network: nn.Module, deploy: bool = True) -> nn.Module:
    """Make ``network`` convert itself to its deploy form right after its weights are loaded.

    MONAI's ``ckpt_export``/``onnx_export`` build the network from the config, load the training
    checkpoint into it and then convert it. A deploy-form network cannot take training-form
    weights, so the bundle's ``network_export`` item is the training form with this hook: the
    first complete ``load_state_dict`` calls :func:`~litenext_monai.networks.reparameterize`.
    A load with missing or unexpected keys leaves the network unchanged (and strict loading fails
    as usual).

    Args:
        network: a network in its training form.
        deploy: ``False`` returns ``network`` unchanged (the export is then the training form).
    """
    if not deploy:
        return network
    handle = None

    def convert(module: nn.Module, incompatible: Any) -> None:
        if module is not network or incompatible.missing_keys or incompatible.unexpected_keys:
            return
        reparameterize(network)
        network.eval()
        if handle is not None:
            handle.remove()

    handle = network.register_load_state_dict_post_hook(convert)
    return network


def export_format(filepath: str | os.PathLike, fmt: str | None = None) -> str:
    """The export format named by ``fmt`` or, when ``None``, by the suffix of ``filepath``.

    Raises:
        ValueError: an unknown format, or a suffix that names none.
    """
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(EXPORT_FORMATS)}")
        return fmt
    suffix = Path(filepath).suffix.lower()
    for name, suffixes in EXPORT_FORMATS.items():
        if suffix in suffixes:
            return name
    raise ValueError(
        f"{filepath}: cannot tell the export format from the suffix {suffix!r}; use .ts/.pt (TorchScript) "
        "or .onnx, or give the format"
    )


def _example(settings: dict[str, Any], batch_size: int) -> torch.Tensor:
    size = [int(s) for s in settings["image_size"]]
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch_size, int(settings["in_channels"]), *size, generator=generator)


def _torchscript(network: nn.Module, example: torch.Tensor, trace: bool) -> torch.jit.ScriptModule:
    """MONAI's ``convert_to_torchscript``: scripted, or traced at ``example`` when asked or when scripting fails."""
    from monai.networks.utils import convert_to_torchscript

    if not trace:
        try:
            return convert_to_torchscript(network)
        except Exception as err:  # scripting fails in many ways on arbitrary Python code
            logger.warning(
                "%s cannot be scripted (%s); tracing it at %s instead",
                type(network).__name__,
                str(err).splitlines()[0],
                tuple(example.shape),
            )
    return convert_to_torchscript(network, inputs=[example], use_trace=True, check_trace=False)


def _write_torchscript(
    network: nn.Module,
    example: torch.Tensor,
    path: Path,
    meta: dict[str, Any],
    settings_json: bytes,
    trace: bool,
    verify: Callable[[np.ndarray], None],
) -> None:
    from monai.data import load_net_with_metadata, save_net_with_metadata

    scripted = _torchscript(network, example, trace)

    def write(tmp: Path) -> None:
        save_net_with_metadata(
            scripted,
            str(tmp),
            include_config_vals=False,
            append_timestamp=False,
            meta_values=meta,
            more_extra_files={"model.json": settings_json},
        )
        loaded, _, _ = load_net_with_metadata(str(tmp), map_location="cpu")
        with torch.no_grad():
            verify(loaded(example).numpy())

    atomic_write(path, write)


def _write_onnx(
    network: nn.Module,
    example: torch.Tensor,
    path: Path,
    meta: dict[str, Any],
    settings_json: bytes,
    verify: Callable[[np.ndarray], None],
) -> None:
    import onnx
    import onnxruntime
    from monai.networks.utils import convert_to_onnx

    model = convert_to_onnx(
        network,
        inputs=[example],
        input_names=["image"],
        output_names=["logits"],
        opset_version=ONNX_OPSET,
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        use_trace=True,
        dynamo=False,  # torch >= 2.9 defaults to the dynamo exporter, which needs onnxscript
    )
    for key, value in (("model.json", settings_json.decode()), ("metadata.json", json.dumps(meta))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value

    def write(tmp: Path) -> None:
        onnx.save(model, str(tmp))
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        verify(session.run(None, {"image": example.numpy()})[0])

    atomic_write(path, write)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    filepath: str | os.PathLike,
    fmt: str | None = None,
    deploy: bool = True,
    batch_size: int = 1,
    trace: bool = False,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export a self-describing checkpoint (``model.pt`` + ``model.json``).

    Args:
        checkpoint: a local ``model.pt`` (resolve an MLflow URI first with
            :func:`litenext_monai.tracking.resolve_checkpoint`).
        filepath: the export; ``.ts``/``.pt`` is TorchScript, ``.onnx`` is ONNX (or see ``fmt``).
        fmt: ``"torchscript"`` or ``"onnx"``; ``None`` chooses by suffix.
        deploy: export the deploy form (default); ``False`` exports the training form.
        batch_size: batch of the check example (and of a traced TorchScript graph). ONNX exports
            always have a free batch axis.
        trace: TorchScript by tracing instead of scripting (a network that cannot be scripted is
            traced anyway, with a warning).
        overwrite: replace an existing ``filepath`` (only once the new export has passed its
            check: a failed export leaves the previous file as it was); by default an existing
            file is an error.
        metadata: MONAI bundle metadata to embed; default: ``metadata.json`` beside the checkpoint
            (written by training), else only the network's data format.

    Returns:
        a summary: ``path``, ``format``, ``deploy``, ``checkpoint`` (local file),
        ``checkpoint_sha256``, ``input_shape`` and ``max_abs_diff`` (exported vs PyTorch).

    Raises:
        FileExistsError: ``filepath`` exists and ``overwrite`` is false.
        FileNotFoundError, ValueError: an unusable checkpoint or URI (message names it), or an
            export whose output differs from PyTorch's by more than :data:`EXPORT_ATOL`.
    """
    path = Path(filepath)
    fmt = export_format(path, fmt)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; choose another name or allow overwriting")
    local = Path(checkpoint)
    network, settings = load_network(local, device="cpu", deploy=deploy)
    if metadata is None:
        beside = Path(local).with_name(MODEL_METADATA)
        metadata = json.loads(beside.read_text(encoding="utf-8")) if beside.is_file() else {}
    meta = model_metadata(metadata, settings)
    meta.setdefault("litenext_monai", {})["deploy_form"] = bool(deploy)
    example = _example(settings, batch_size)
    with torch.no_grad():
        expected = network(example).numpy()
    # The local path of the checkpoint stays out of the file; its hash identifies it.
    embedded = {k: v for k, v in settings.items() if k != "checkpoint"}
    settings_json = json.dumps(embedded, indent=2).encode()
    diffs: list[float] = []

    def verify(actual: np.ndarray) -> None:
        # Runs on the temporary file: raising here leaves ``path`` untouched.
        diff = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else float("inf")
        if not diff <= EXPORT_ATOL:
            raise ValueError(
                f"{path}: the {fmt} export differs from PyTorch by {diff:.3g} (> {EXPORT_ATOL}); "
                "nothing was written"
            )
        diffs.append(diff)

    if fmt == "torchscript":
        _write_torchscript(network, example, path, meta, settings_json, trace, verify)
    else:
        _write_onnx(network, example, path, meta, settings_json, verify)
    diff = diffs[0]
    summary = {
        "path": str(path),
        "format": fmt,
        "deploy": bool(deploy),
        "checkpoint": settings["checkpoint"],
        "checkpoint_sha256": settings["checkpoint_sha256"],
        "input_shape": list(example.shape),
        "max_abs_diff": diff,
    }
    logger.info("exported %s (%s, deploy=%s, max |diff| %.2e)", path, fmt, deploy, diff)
    return summary
