"""Self-describing checkpoints: ``model.pt`` plus the ``model.json`` that inference needs.

Training writes, next to the inference checkpoint ``models/model.pt`` (a plain ``state_dict``),
``models/model.json``::

    {"network_def": {"_target_": "litenext_monai.networks.LiteNeXt", "spatial_dims": 2, ...},
     "in_channels": 3, "out_channels": 1, "image_size": [256, 256], "modality": "rgb",
     "threshold": 0.5,
     "segment": {"label": "Foreground", "category": ["SCT", "85756007", "Tissue"],
                 "type": ["SCT", "85756007", "Tissue"]},
     "input_mode": "resize", "num_classes": 1, "segments": null,
     "sw_overlap": 0.25, "sw_batch_size": 4,
     "package_version": "0.1.0"}

``input_mode`` (``"resize"``: the whole image is resized to ``image_size``; ``"patch"``: the
network was trained on ``image_size`` crops and infers with a Gaussian sliding window of that
size at each image's own size), ``num_classes`` (N foreground classes; 1 = binary sigmoid,
N ≥ 2 = N + 1 softmax channels), ``segments`` (N ≥ 2: one DICOM SEG description per class),
``sw_overlap`` and ``sw_batch_size`` were added with issue 18; a card without them reads as
:data:`DEFAULT_SETTINGS` says, i.e. as the binary resize model it is.

so inference, evaluation, export and the DICOM node need nothing but the checkpoint path.
``network_def`` is plain JSON: a dotted ``_target_`` naming a ``torch.nn.Module`` subclass and
its keyword arguments. It is built without evaluating any expression, and the weights are loaded
with ``weights_only=True``, so neither file can run code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from litenext_monai.inferers import DEFAULT_SW_BATCH_SIZE, DEFAULT_SW_OVERLAP, INPUT_MODES
from litenext_monai.io import atomic_write

__all__ = [
    "DEFAULT_SETTINGS",
    "INFERENCE_OVERRIDES",
    "REQUIRED_SETTINGS",
    "checkpoint_settings",
    "class_segments",
    "complete_settings",
    "datalist_num_classes",
    "dicom_seg_metadata",
    "checkpoint_sha256",
    "inference_settings_path",
    "model_metadata",
    "network_config",
    "read_inference_settings",
    "write_inference_settings",
]

logger = logging.getLogger(__name__)

_EXPLICIT_HINT = (
    "give the constructor arguments the network does not keep explicitly, e.g. "
    'inference_settings#network_def = "$litenext_monai.engines.network_config(@network, base_channels=32)"'
)

# Constructor arguments that MONAI networks keep under another attribute name.
_ATTRIBUTE_ALIASES = {"spatial_dims": ("dimensions",)}

#: The bundle metadata of the trained network, written beside ``model.pt`` by training.
MODEL_METADATA = "metadata.json"

#: Keys every ``model.json`` holds.
REQUIRED_SETTINGS = ("network_def", "in_channels", "out_channels", "image_size", "modality", "threshold")

#: The one place for the defaults of a model card's optional keys (and of the bundle's values that
#: feed them): a card written before a key existed reads as if it held these values.
DEFAULT_SETTINGS: dict[str, Any] = {
    "modality": "rgb",
    "threshold": 0.5,
    "image_size": [256, 256],
    "segment": {
        "label": "Foreground",
        "category": ["SCT", "85756007", "Tissue"],
        "type": ["SCT", "85756007", "Tissue"],
    },
    # issue 18: patch training / sliding window, several classes, flip TTA
    "input_mode": "resize",
    "num_classes": 1,
    "segments": None,
    "sw_overlap": DEFAULT_SW_OVERLAP,
    "sw_batch_size": DEFAULT_SW_BATCH_SIZE,
    "tta": False,
}

#: Settings an inference run may override on the command line (``None`` keeps the card's value).
INFERENCE_OVERRIDES = ("tta", "sw_overlap", "sw_batch_size")


def complete_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with every key of :data:`DEFAULT_SETTINGS` it lacks filled in.

    A card without ``num_classes`` but with ``out_channels`` > 1 reads as
    ``num_classes = out_channels - 1`` (the softmax convention); ``None`` values count as missing.
    """
    given = {k: v for k, v in dict(settings).items() if v is not None}
    if "num_classes" not in given and int(given.get("out_channels") or 1) > 1:
        given["num_classes"] = int(given["out_channels"]) - 1
    return {**json.loads(json.dumps(DEFAULT_SETTINGS)), **given}


def datalist_num_classes(datalist: str | os.PathLike) -> int:
    """N foreground classes a datalist declares (its ``"num_classes"``; 1 when it has none).

    Raises:
        ValueError: unreadable datalist or a ``num_classes`` that is not an integer >= 1 (names the file).
    """
    data = _read_datalist(datalist)
    value = data.get("num_classes", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{datalist}: 'num_classes' must be an integer >= 1, got {value!r}")
    return value


def _read_datalist(datalist: str | os.PathLike) -> dict[str, Any]:
    try:
        data = json.loads(Path(datalist).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{datalist}: unreadable datalist ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{datalist}: a datalist must be a JSON object")
    return data


def class_segments(
    num_classes: int, datalist: str | os.PathLike | None = None
) -> list[dict[str, Any]] | None:
    """DICOM SEG descriptions of N ≥ 2 classes for the model card's ``segments`` (``None`` for N = 1).

    Class k is labelled with the datalist's ``"labels"[str(k)]`` when it has one (the built-in
    multi-class data names cytoplasm and nucleus), else ``"Class k"``; category and type are the
    default segment's. A bundle overrides ``segments`` with coded entries for real anatomy.
    """
    if int(num_classes) < 2:
        return None
    labels: Mapping[str, Any] = {}
    if datalist is not None and Path(datalist).is_file():
        found = _read_datalist(datalist).get("labels")
        labels = found if isinstance(found, Mapping) else {}
    default = DEFAULT_SETTINGS["segment"]
    return [
        {
            "label": str(labels.get(str(k)) or f"Class {k}"),
            "category": list(default["category"]),
            "type": list(default["type"]),
        }
        for k in range(1, int(num_classes) + 1)
    ]


def inference_settings_path(ckpt_path: str | os.PathLike) -> Path:
    """``model.json`` for ``model.pt``: the checkpoint's path with the suffix ``.json``."""
    return Path(ckpt_path).with_suffix(".json")


def network_config(network: nn.Module | str, **kwargs: Any) -> dict[str, Any]:
    """A plain ``network_def`` dict ``{"_target_": "pkg.Class", **kwargs}`` for ``model.json``.

    Args:
        network: the dotted class path, or the instantiated network. For a network, ``_target_``
            is its class and every constructor argument (from the signature) is taken from an
            attribute of the same name (or ``_name``) when the network keeps one, else from the
            signature's default; arguments whose default is ``None`` are left out.
        kwargs: explicit arguments; they win over what is read from the network.

    A bundle writes ``"$litenext_monai.engines.network_config(@network)"`` and, for a network that
    does not keep a non-default argument, adds it explicitly
    (``network_config(@network, base_channels=32)``). Training checks the result with
    :func:`check_network_config` before it writes ``model.json``, so a missing argument fails
    the first save instead of a later inference.
    """
    if isinstance(network, str):
        return {"_target_": network, **kwargs}
    cls = type(getattr(network, "module", network))
    live = getattr(network, "module", network)
    found: dict[str, Any] = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        value = parameter.default
        for attribute in (name, f"_{name}", *_ATTRIBUTE_ALIASES.get(name, ())):
            if hasattr(live, attribute):
                value = getattr(live, attribute)
                break
        if value is inspect.Parameter.empty or value is None or isinstance(value, (nn.Module, torch.Tensor)):
            continue
        try:
            found[name] = _plain(value)
        except TypeError:
            continue
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **found, **kwargs}


def _plain(value: Any) -> Any:
    """JSON-ready copy: tuples to lists, numpy/torch scalars to Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _package_version() -> str:
    try:
        return metadata.version("litenext-monai")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_settings(settings: Mapping[str, Any], source: str) -> None:
    missing = [k for k in REQUIRED_SETTINGS if k not in settings]
    if missing:
        raise ValueError(f"{source}: inference settings lack {', '.join(missing)}")
    network_def = settings["network_def"]
    if not isinstance(network_def, Mapping) or not isinstance(network_def.get("_target_"), str):
        raise ValueError(f"{source}: 'network_def' must be a dict with a dotted '_target_' path")
    if len(settings["image_size"]) != 2:
        raise ValueError(f"{source}: 'image_size' must be [H, W], got {settings['image_size']!r}")
    mode = settings.get("input_mode")
    if mode is not None and mode not in INPUT_MODES:
        raise ValueError(f"{source}: 'input_mode' must be one of {INPUT_MODES}, got {mode!r}")
    num_classes = settings.get("num_classes")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{source}: 'num_classes' must be an integer >= 1, got {num_classes!r}")
        expected = 1 if num_classes == 1 else num_classes + 1
        if int(settings["out_channels"]) != expected:
            raise ValueError(
                f"{source}: num_classes={num_classes} needs out_channels={expected}, "
                f"got {settings['out_channels']}"
            )
        segments = settings.get("segments")
        if segments is not None and (num_classes < 2 or len(segments) != num_classes):
            raise ValueError(
                f"{source}: 'segments' must describe each of the {num_classes} classes (or be null for one)"
            )


def write_inference_settings(ckpt_path: str | os.PathLike, settings: Mapping[str, Any]) -> Path:
    """Write ``settings`` as ``model.json`` beside ``ckpt_path``, atomically.

    ``package_version`` is filled in with the installed ``litenext-monai`` version when absent, and
    ``in_channels``/``out_channels`` from ``network_def`` (``out_channels`` defaults to 1). A
    ``bundle_metadata`` entry (the bundle's ``metadata.json`` content) is not stored in
    ``model.json``: it is written as ``metadata.json`` beside the checkpoint with its
    ``network_data_format`` following the trained channels (:func:`model_metadata`).

    Returns:
        The path of the JSON file.

    Raises:
        ValueError: required keys missing or values that are not plain JSON.
    """
    path = inference_settings_path(ckpt_path)
    settings = dict(settings)
    bundle_metadata = settings.pop("bundle_metadata", None)
    try:
        data = _plain(settings)
    except TypeError as err:
        raise ValueError(f"{path}: inference settings must be plain JSON values ({err})") from err
    data.setdefault("package_version", _package_version())
    network_def = data.get("network_def")
    if isinstance(network_def, dict):
        for key, default in (("in_channels", None), ("out_channels", 1)):
            if key not in data and network_def.get(key, default) is not None:
                data[key] = network_def.get(key, default)
    _check_settings(data, str(path))
    if bundle_metadata:
        meta = json.dumps(model_metadata(_plain(bundle_metadata), data), indent=2) + "\n"
        atomic_write(path.with_name(MODEL_METADATA), lambda tmp: tmp.write_text(meta, encoding="utf-8"))
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def model_metadata(metadata: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle's ``metadata.json`` with ``network_data_format`` describing the trained network.

    ``inputs.image.num_channels``/``channel_def`` follow ``in_channels`` and
    ``outputs.pred.num_channels`` follows ``out_channels``, so MONAI's ``verify_net_in_out`` with
    this file checks the network that was actually trained (e.g. a 1-channel model).
    """
    meta = json.loads(json.dumps(metadata))
    formats = meta.setdefault("network_data_format", {})
    image = formats.setdefault("inputs", {}).setdefault("image", {})
    channels = int(settings["in_channels"])
    image["num_channels"] = channels
    image["channel_def"] = (
        {"0": "R", "1": "G", "2": "B"}
        if channels == 3
        else {str(c): "grey" if channels == 1 else f"channel {c}" for c in range(channels)}
    )
    if channels == 1 and str(image.get("modality", "")).upper() == "RGB":
        image["modality"] = "grey"
    formats.setdefault("outputs", {}).setdefault("pred", {})["num_channels"] = int(settings["out_channels"])
    return meta


def read_inference_settings(ckpt_path: str | os.PathLike) -> dict[str, Any]:
    """Read the ``model.json`` beside ``ckpt_path``.

    Raises:
        FileNotFoundError: no ``model.json`` (a checkpoint from before self-describing checkpoints).
        ValueError: not JSON, or required keys missing (message names the file).
    """
    path = inference_settings_path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no inference settings beside the checkpoint {Path(ckpt_path).name}; "
            "checkpoints written by training since self-describing checkpoints have one"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable inference settings ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: inference settings must be a JSON object")
    _check_settings(data, str(path))
    return complete_settings(data)


def checkpoint_sha256(checkpoint: str | os.PathLike) -> str:
    """Hex SHA-256 of the checkpoint file (recorded in DICOM SEGs and logs)."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_settings(
    ckpt_path: str | os.PathLike,
    fallback: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a bundle's inference uses: ``model.json`` when the checkpoint has one, else ``fallback``.

    Args:
        ckpt_path: a local ``model.pt``.
        fallback: the bundle config's own values (``modality``, ``in_channels``, ``image_size``,
            ``threshold``, ``segment``), used for a checkpoint written before ``model.json``
            existed; ``model.json`` values win over them.
        overrides: run-time choices that win over the card (``tta``, ``sw_overlap``,
            ``sw_batch_size``, see :data:`INFERENCE_OVERRIDES`); ``None`` values are ignored.

    Returns:
        The settings completed with :data:`DEFAULT_SETTINGS` (so ``input_mode``, ``num_classes``,
        ``sw_*`` and ``tta`` are always present).

    Raises:
        ValueError: an override that is not in :data:`INFERENCE_OVERRIDES`.
    """
    extra = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    unknown = sorted(set(extra) - set(INFERENCE_OVERRIDES))
    if unknown:
        raise ValueError(f"cannot override {unknown} at inference; only {list(INFERENCE_OVERRIDES)}")
    try:
        return complete_settings({**dict(fallback), **read_inference_settings(ckpt_path), **extra})
    except FileNotFoundError:
        logger.warning(
            "%s has no %s beside it: using the bundle config's modality, channels, size and threshold",
            Path(ckpt_path).name,
            inference_settings_path(ckpt_path).name,
        )
        return complete_settings({**dict(fallback), **extra})


def dicom_seg_metadata(ckpt_path: str | os.PathLike, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`~litenext_monai.io.dicom_seg.write_dicom_seg` for a checkpoint.

    The hash is ``settings["checkpoint_sha256"]`` when the settings came from
    :func:`load_network_from_checkpoint`, else computed from ``ckpt_path``. One class gives
    ``segment`` (and ``segments=None``); N ≥ 2 classes give ``segments`` from the card (default
    ``"Class 1" … "Class N"``, :func:`class_segments`) and ``segment=None``.
    """
    target = str(settings.get("network_def", {}).get("_target_", "LiteNeXt"))
    card = complete_settings(settings)
    several = int(card["num_classes"]) > 1
    return {
        "segment": None if several else settings.get("segment"),
        "segments": (card.get("segments") or class_segments(int(card["num_classes"]))) if several else None,
        "algorithm_name": target.rsplit(".", 1)[-1] or "LiteNeXt",
        "algorithm_version": settings.get("package_version") or _package_version(),
        "checkpoint_sha256": settings.get("checkpoint_sha256") or checkpoint_sha256(ckpt_path),
    }
