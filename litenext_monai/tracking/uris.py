"""MLflow model URIs: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/NAME`` to a local ``model.pt``.

:func:`resolve_checkpoint` downloads the logged ``model.pt`` and its model card once into a cache
folder; a local path passes through unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from monai.utils import optional_import

if TYPE_CHECKING:
    import mlflow
    from mlflow import MlflowClient
else:
    mlflow, _ = optional_import("mlflow")
    MlflowClient, _ = optional_import("mlflow", name="MlflowClient")

__all__ = [
    "CHECKPOINT_FILE",
    "SETTINGS_FILE",
    "SOURCE_FILE",
    "effective_tracking_uri",
    "is_mlflow_model_uri",
    "resolve_checkpoint",
]

CHECKPOINT_FILE = "model.pt"

SETTINGS_FILE = "model.json"

SOURCE_FILE = "source.json"

MODEL_URI_SCHEMES = ("models:/", "runs:/")


def is_mlflow_model_uri(path_or_uri: str | os.PathLike) -> bool:
    """Whether ``path_or_uri`` is an MLflow model URI (``models:/…`` or ``runs:/…``)."""
    return isinstance(path_or_uri, str) and path_or_uri.startswith(MODEL_URI_SCHEMES)


def effective_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI MLflow uses: ``MLFLOW_TRACKING_URI`` wins, as in MONAI's ``MLFlowHandler``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or mlflow.get_tracking_uri()


@contextmanager
def _use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (used by ``log_model``/``register_model``) at ``uri`` for a while.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI``, which MONAI's handler reads,
    and MLflow's own context manager unsets it afterwards; the caller's value is restored here.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri as mlflow_use_tracking_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with mlflow_use_tracking_uri(uri):
            yield
    finally:
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


@dataclass
class _ResolvedModel:
    canonical: str  # an immutable URI: models:/NAME/VERSION or models:/m-<id>
    model_id: str | None
    run_id: str | None


def _resolve_model_uri(client: MlflowClient, uri: str) -> _ResolvedModel:
    """Pin ``uri`` to an immutable model: aliases to versions, ``runs:/`` to the run's logged model."""
    from mlflow.exceptions import MlflowException

    try:
        if uri.startswith("runs:/"):
            run_id, _, name = uri[len("runs:/") :].partition("/")
            if not run_id or not name:
                raise ValueError(f"{uri}: expected runs:/RUN_ID/MODEL_NAME")
            run = client.get_run(run_id)
            models = client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"name = '{name}' AND source_run_id = '{run_id}'",
                order_by=[{"field_name": "creation_time", "ascending": False}],
            )
            if not models:
                raise ValueError(f"{uri}: the run {run_id} has no logged model named {name!r}")
            return _ResolvedModel(f"models:/{models[0].model_id}", models[0].model_id, run_id)
        body = uri[len("models:/") :]
        if body.startswith("m-") and "/" not in body and "@" not in body:
            model = client.get_logged_model(body)
            return _ResolvedModel(uri, model.model_id, model.source_run_id)
        if "@" in body:
            name, alias = body.rsplit("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = body.rpartition("/")
            if not name or not number.isdigit():
                raise ValueError(
                    f"{uri}: expected models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/NAME"
                )
            version = client.get_model_version(name, number)
        model_id = version.model_id
        if not model_id and str(version.source).startswith("models:/m-"):
            model_id = str(version.source)[len("models:/") :]
        return _ResolvedModel(f"models:/{name}/{version.version}", model_id, version.run_id)
    except MlflowException as err:
        raise ValueError(
            f"{uri}: not found in the MLflow store {client.tracking_uri} ({err.message})"
        ) from err


def _default_cache_dir() -> Path:
    root = os.environ.get("LITENEXT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "litenext_monai"
    )
    return Path(root) / "mlflow_models"


def resolve_checkpoint(
    path_or_uri: str | os.PathLike,
    tracking_uri: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """Local path of a ``model.pt`` (with ``model.json`` beside it) for a checkpoint path or MLflow URI.

    URIs: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/NAME`` (``NAME`` is
    ``model`` for bundle trainings) and ``models:/m-<model id>``. The model's ``model.pt`` and
    ``model.json`` are downloaded once per resolved model into ``cache_dir/<key>/`` (moved into
    place atomically, so concurrent callers never see a partial folder); an alias is looked up on
    every call, so promoting another version takes effect at once. The file is the exact
    ``state_dict`` that was logged, so predictions equal those from the original ``model.pt``.

    Args:
        path_or_uri: a local checkpoint path (returned unchanged) or an MLflow URI.
        tracking_uri: store holding the model/registry; ``MLFLOW_TRACKING_URI`` takes precedence,
            MLflow's default otherwise.
        cache_dir: download folder, default ``$LITENEXT_CACHE_DIR`` or
            ``~/.cache/litenext_monai/mlflow_models``.

    Raises:
        FileNotFoundError: a local path that does not exist.
        ValueError: a malformed URI, an unknown model/version/alias/run, or a model without
            ``model.pt``/``model.json`` (not logged by :class:`MLflowModelLogger`).
    """
    if not is_mlflow_model_uri(path_or_uri):
        if not Path(path_or_uri).is_file():
            raise FileNotFoundError(f"{path_or_uri}: no such checkpoint file")
        return str(path_or_uri)
    uri = str(path_or_uri)
    store = effective_tracking_uri(tracking_uri)
    resolved = _resolve_model_uri(MlflowClient(store), uri)
    key = hashlib.sha256(f"{store}\n{resolved.canonical}".encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = root / key
    if not (target / CHECKPOINT_FILE).is_file():
        _download_model(store, uri, resolved, root, target)
    return str(target / CHECKPOINT_FILE)


def _download_model(store: str, uri: str, resolved: _ResolvedModel, root: Path, target: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download_", dir=root) as tmp:
        with _use_tracking_uri(store):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=resolved.canonical, dst_path=tmp))
        staged = Path(tmp) / "staged"
        staged.mkdir()
        for filename in (CHECKPOINT_FILE, SETTINGS_FILE):
            found = local / "extra_files" / filename
            if not found.is_file():
                raise ValueError(
                    f"{uri}: the MLflow model has no extra_files/{filename}; "
                    "log it with litenext_monai.engines.MLflowModelLogger"
                )
            shutil.move(str(found), staged / filename)
        source = {
            "uri": uri,
            "resolved": resolved.canonical,
            "model_id": resolved.model_id,
            "run_id": resolved.run_id,
        }
        (staged / SOURCE_FILE).write_text(json.dumps(source, indent=2), encoding="utf-8")
        try:
            os.replace(staged, target)
        except OSError:
            # Another process finished the same download first; its copy is identical.
            if not (target / CHECKPOINT_FILE).is_file():
                raise
