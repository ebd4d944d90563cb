"""MLflow as the model's home: logged models, the registry, dataset inputs and lineage.

* :class:`MLflowModelLogger` (trainer handler) logs the best checkpoint in MLflow's PyTorch flavour
  to the training run at the end of training, with a tensor signature, a small input example and
  the self-describing checkpoint's inference settings (as model metadata and as ``model.json``
  beside ``model.pt`` in the model's ``extra_files``); optionally it registers a new version.
* :class:`MLflowLineage` (trainer or evaluator handler) records the run's dataset inputs (the
  datalist as source, its split hash as digest), the package version and git commit, and for
  evaluation/inference runs the training run and logged model of the checkpoint used.
* Model URIs (``models:/…``, ``runs:/…``) are resolved to local files by
  :func:`litenext_monai.tracking.uris.resolve_checkpoint`.

Both handlers find their run through the MONAI ``MLFlowHandler`` attached to the same engine (the
one ``--tracking`` appends), so they write to exactly the run the metrics go to, on the same
tracking store; without one they fall back to :func:`mlflow.active_run`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import min_version, optional_import

from litenext_monai.data.splits import datalist_split_hash
from litenext_monai.model.card import (
    inference_settings_path,
    read_inference_settings,
    write_inference_settings,
)
from litenext_monai.model.loader import load_network
from litenext_monai.tracking.uris import (
    CHECKPOINT_FILE,
    SETTINGS_FILE,
    _resolve_model_uri,
    _use_tracking_uri,
    effective_tracking_uri,
    is_mlflow_model_uri,
)

if TYPE_CHECKING:
    import mlflow
    from ignite.engine import Engine, Events
    from mlflow import MlflowClient
else:
    mlflow, _ = optional_import("mlflow")
    MlflowClient, _ = optional_import("mlflow", name="MlflowClient")
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
    Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = [
    "MLflowModelLogger",
    "MLflowLineage",
    "log_checkpoint_model",
    "log_datalist_inputs",
    "LoggedCheckpoint",
    "checkpoint_lineage",
    "provenance_tags",
    "TAG_PACKAGE_VERSION",
    "TAG_TRAINING_RUN",
    "TAG_CHECKPOINT",
    "TAG_MODEL_ID",
]

logger = logging.getLogger(__name__)

PACKAGE = "litenext-monai"
TAG_PACKAGE_VERSION = "litenext_monai.version"
TAG_TRAINING_RUN = "litenext_monai.training_run_id"
TAG_CHECKPOINT = "litenext_monai.checkpoint"
TAG_MODEL_ID = "litenext_monai.model_id"
TAG_GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own tag: the UI shows it as the run's commit
DATASET_CONTEXT_TAG = "mlflow.data.context"
#: MLflow's dataset digest column holds at most 36 characters; the split hash is a 64-hex SHA-256.
MAX_DIGEST_LENGTH = 36
#: Keys added to the logged copy of ``model.json`` (and to the local one) for lineage.
SETTINGS_RUN_KEY = "training_run_id"
SETTINGS_MODEL_KEY = "mlflow_model_id"
DEFAULT_SPLIT_CONTEXTS = {"training": "training", "validation": "validation", "test": "test"}


# --------------------------------------------------------------------------- run discovery


def find_mlflow_run(engine: Engine) -> tuple[MlflowClient, str] | None:
    """The client and run id of the MONAI ``MLFlowHandler`` attached to ``engine``, else the active run."""
    from monai.handlers import MLFlowHandler

    for handlers in engine._event_handlers.values():
        for handler, _args, _kwargs in handlers:
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, MLFlowHandler) and owner.cur_run is not None:
                return owner.client, owner.cur_run.info.run_id
    active = mlflow.active_run()
    if active is not None:
        return MlflowClient(), active.info.run_id
    return None


# --------------------------------------------------------------------------- provenance
@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    """Commit of the git checkout the package is imported from (editable installs), else None."""
    package_dir = Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    # A package installed into a virtual environment that lives inside some checkout is not
    # that checkout's code: only a checkout whose top level holds the package counts.
    if len(top) != 2 or Path(top[0]).resolve() != package_dir.parent:
        return None
    return top[1]


def provenance_tags() -> dict[str, str]:
    """``{litenext_monai.version: …, mlflow.source.git.commit: …}`` (the commit only when there is one)."""
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    tags = {TAG_PACKAGE_VERSION: version}
    commit = _git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    return tags


# --------------------------------------------------------------------------- datasets
def log_datalist_inputs(
    client: MlflowClient,
    run_id: str,
    datalist: str | os.PathLike,
    contexts: Mapping[str, str] | None = None,
    split_hash: str | None = None,
) -> list[str]:
    """Record the datalist's splits as the run's MLflow dataset inputs.

    Each split becomes one dataset: name ``"<dataset folder>/<split>"``, source the datalist file,
    digest the split hash (its first 36 hex digits: MLflow's digest limit), profile the number of
    cases; the input is tagged with its context. Inputs the run already has (a resumed run) are
    not logged twice.

    Args:
        client: client of the run's tracking store.
        run_id: the run.
        datalist: MONAI datalist JSON.
        contexts: ``{context: datalist key}``, default training/validation/test; keys missing from
            the datalist are skipped.
        split_hash: default :func:`~litenext_monai.engines.datalist_split_hash` of the datalist.

    Returns:
        The names of the datasets logged now.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    path = Path(datalist).resolve()
    data = json.loads(path.read_text(encoding="utf-8"))
    digest = (split_hash or datalist_split_hash(path))[:MAX_DIGEST_LENGTH]
    # MLflow's "local" dataset source (what its LocalArtifactDatasetSource serialises to).
    source = json.dumps({"uri": str(path)})
    existing = {
        (d.dataset.name, d.dataset.digest, {t.key: t.value for t in d.tags}.get(DATASET_CONTEXT_TAG))
        for d in client.get_run(run_id).inputs.dataset_inputs
    }
    inputs, names = [], []
    for context, key in (contexts or DEFAULT_SPLIT_CONTEXTS).items():
        if key not in data:
            continue
        name = f"{path.parent.name}/{key}"
        if (name, digest, context) in existing:
            continue
        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="local",
            source=source,
            profile=json.dumps({"num_cases": len(data[key])}),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(DATASET_CONTEXT_TAG, context)]))
        names.append(name)
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
    return names


# --------------------------------------------------------------------------- checkpoints
def _pip_requirements() -> list[str]:
    names = (PACKAGE, "monai", "torch", "numpy", "mlflow")
    found = []
    for name in names:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def _signature_and_example(settings: Mapping[str, Any]) -> tuple[Any, np.ndarray]:
    """Tensor signature ``float32 B×C×H×W -> B×K×H×W`` logits and a 2-image example at the model's size.

    H and W are the settings' ``image_size`` (inference resizes every image to it, and the
    exported graph is specialised to it); the batch is free. Two images, because ``torch.export``
    fixes a dimension of size 1.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    h, w = (int(s) for s in settings["image_size"])
    c, k = int(settings["in_channels"]), int(settings["out_channels"])
    signature = ModelSignature(
        # unnamed specs: MLflow's PyTorch pyfunc takes (and serves) a plain array, not a dict
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, c, h, w))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, k, h, w))]),
    )
    # Values on a coarse grid keep input_example.json small; they are a valid normalised image.
    example = np.round(np.random.default_rng(0).random((2, c, h, w)), 2).astype(np.float32)
    return signature, example


@contextmanager
def _failed_on_error(client: MlflowClient, model_id: str) -> Iterator[None]:
    """Mark the logged model FAILED (not forever PENDING) when logging its files raises."""
    try:
        yield
    except BaseException:
        client.finalize_logged_model(model_id, "FAILED")
        raise


@dataclass
class LoggedCheckpoint:
    """What :func:`log_checkpoint_model` logged: the model URI and id, and the registered version."""

    model_uri: str
    model_id: str
    run_id: str
    registered_name: str | None = None
    registered_version: str | None = None


def log_checkpoint_model(
    checkpoint: str | os.PathLike,
    client: MlflowClient,
    run_id: str,
    *,
    name: str = "model",
    register_model: str | None = None,
    registry_tags: Mapping[str, Any] | None = None,
    deploy: bool = True,
    update_local_settings: bool = True,
) -> LoggedCheckpoint:
    """Log ``checkpoint`` (``model.pt`` + ``model.json``) in MLflow's PyTorch flavour to ``run_id``.

    The logged model is the network in its deploy form, saved by ``torch.export`` (MLflow's
    ``pt2`` format: no pickled code), with a tensor signature, a 2-image input example, the
    settings as model metadata, the run's parameters, and ``extra_files/model.pt`` +
    ``extra_files/model.json`` (the settings plus ``training_run_id`` and ``mlflow_model_id``),
    which is what :func:`resolve_checkpoint` hands to inference. The logged model belongs to the
    run's experiment, so ``runs:/<run_id>/<name>`` resolves to it.

    Args:
        checkpoint: the ``model.pt`` state_dict; ``model.json`` must be beside it.
        client: client of the run's tracking store.
        run_id: the training run.
        name: the logged model's name (the ``<name>`` of ``runs:/<run_id>/<name>``).
        register_model: register the model as a new version of this registered model.
        registry_tags: tags of the new version (e.g. validation Dice, split hash).
        deploy: log the reparameterised network (contract 1).
        update_local_settings: also add the run and model ids to the local ``model.json``, so an
            evaluation of the local file is linked to this run.

    Raises:
        FileNotFoundError: no checkpoint or no ``model.json``.
        ValueError: the settings are unreadable or the weights do not fit.
    """
    import mlflow.pytorch

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file to log")
    settings = read_inference_settings(checkpoint)
    network, _ = load_network(checkpoint, deploy=deploy)
    signature, example = _signature_and_example(settings)
    run = client.get_run(run_id)
    tracking_uri = client.tracking_uri
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        params=dict(run.data.params),
        tags={k: str(v) for k, v in (registry_tags or {}).items()},
        model_type="segmentation",
    )
    settings = {**settings, SETTINGS_RUN_KEY: run_id, SETTINGS_MODEL_KEY: logged.model_id}
    with tempfile.TemporaryDirectory(prefix="litenext_mlflow_") as tmp:
        staged_ckpt, staged_settings = Path(tmp) / CHECKPOINT_FILE, Path(tmp) / SETTINGS_FILE
        shutil.copyfile(checkpoint, staged_ckpt)
        staged_settings.write_text(json.dumps(settings, indent=2), encoding="utf-8")
        with _use_tracking_uri(tracking_uri):
            with torch.no_grad(), _failed_on_error(client, logged.model_id):
                info = mlflow.pytorch.log_model(
                    network,
                    name=name,
                    run_id=run_id,
                    model_id=logged.model_id,
                    signature=signature,
                    input_example=example,
                    metadata=settings,
                    extra_files=[str(staged_ckpt), str(staged_settings)],
                    pip_requirements=_pip_requirements(),
                    serialization_format="pt2",
                    # validation would load and run the exported model once more at the end of every
                    # training; serving the logged model is covered by the tests instead
                    validate_serving_input=False,
                )
            result = LoggedCheckpoint(info.model_uri, logged.model_id, run_id)
            if register_model:
                version = mlflow.register_model(
                    info.model_uri, register_model, tags={k: str(v) for k, v in (registry_tags or {}).items()}
                )
                result.registered_name, result.registered_version = register_model, str(version.version)
    if update_local_settings:
        local = read_inference_settings(checkpoint)
        write_inference_settings(
            checkpoint, {**local, SETTINGS_RUN_KEY: run_id, SETTINGS_MODEL_KEY: logged.model_id}
        )
    logger.info("logged %s to run %s as %s", checkpoint, run_id, result.model_uri)
    return result


# --------------------------------------------------------------------------- model URIs


def checkpoint_lineage(path_or_uri: str | os.PathLike, client: MlflowClient | None = None) -> dict[str, str]:
    """Tags linking a run to the checkpoint it used: the checkpoint, its training run and model id.

    For an MLflow URI the registry/run is asked (through ``client``); for a local file the
    ``training_run_id``/``mlflow_model_id`` that :class:`MLflowModelLogger` wrote into its
    ``model.json`` are used (also true of files :func:`resolve_checkpoint` downloaded).
    """
    tags = {
        TAG_CHECKPOINT: str(path_or_uri)
        if is_mlflow_model_uri(path_or_uri)
        else str(Path(path_or_uri).resolve())
    }
    if is_mlflow_model_uri(path_or_uri):
        resolved = _resolve_model_uri(client or MlflowClient(effective_tracking_uri()), str(path_or_uri))
        run_id, model_id = resolved.run_id, resolved.model_id
    else:
        try:
            settings = json.loads(inference_settings_path(path_or_uri).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            settings = {}
        run_id, model_id = settings.get(SETTINGS_RUN_KEY), settings.get(SETTINGS_MODEL_KEY)
    if run_id:
        tags[TAG_TRAINING_RUN] = str(run_id)
    if model_id:
        tags[TAG_MODEL_ID] = str(model_id)
    return tags


# --------------------------------------------------------------------------- handlers
class MLflowLineage:
    """Record where a tracked run's data, code and model came from.

    At the engine's first ``EPOCH_STARTED`` (the MONAI ``MLFlowHandler`` has opened its run at
    ``STARTED``), on that run:

    * tags ``litenext_monai.version`` and, in a git checkout, ``mlflow.source.git.commit``;
    * with ``datalist``: one dataset input per split (see :func:`log_datalist_inputs`);
    * with ``checkpoint`` (evaluation/inference): tags naming the checkpoint, its training run and
      logged model (:func:`checkpoint_lineage`), and the logged model as a model input of the run
      when it is in the same store, so the MLflow UI links the two.

    Without an MLflow run (tracking off) it does nothing.

    Args:
        datalist: MONAI datalist JSON whose splits the run uses.
        contexts: ``{context: datalist key}``, default training/validation/test.
        checkpoint: checkpoint path or MLflow model URI the run evaluates or infers with.
        split_hash: digest of the datasets, default the datalist's split hash.
    """

    def __init__(
        self,
        datalist: str | os.PathLike | None = None,
        contexts: Mapping[str, str] | None = None,
        checkpoint: str | os.PathLike | None = None,
        split_hash: str | None = None,
    ) -> None:
        self.datalist = datalist
        self.contexts = dict(contexts) if contexts is not None else None
        self.checkpoint = checkpoint
        self.split_hash = split_hash
        self._done = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self._done:
            return
        self._done = True
        found = find_mlflow_run(engine)
        if found is None:
            logger.warning("MLflowLineage: no MLflow run on this engine; nothing recorded.")
            return
        client, run_id = found
        tags = provenance_tags()
        model_id = None
        if self.checkpoint is not None:
            try:
                lineage = checkpoint_lineage(self.checkpoint, client)
            except ValueError as err:  # lineage is bookkeeping: never stop the evaluation for it
                logger.warning("MLflowLineage: cannot trace %s to its training run: %s", self.checkpoint, err)
                lineage = {TAG_CHECKPOINT: str(self.checkpoint)}
            model_id = lineage.get(TAG_MODEL_ID)
            tags.update(lineage)
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        if model_id:
            self._log_model_input(client, run_id, model_id)
        if self.datalist is not None:
            log_datalist_inputs(client, run_id, self.datalist, self.contexts, self.split_hash)

    @staticmethod
    def _log_model_input(client: MlflowClient, run_id: str, model_id: str) -> None:
        from mlflow.entities import LoggedModelInput
        from mlflow.exceptions import MlflowException

        try:
            client.get_logged_model(model_id)
        except MlflowException:
            return  # the model lives in another store; the tags still name it
        client.log_inputs(run_id, models=[LoggedModelInput(model_id)])


class MLflowModelLogger:
    """Log the best checkpoint as an MLflow model of the training run when training completes.

    Attach to the trainer BEFORE the MONAI ``MLFlowHandler`` (``mlflow_settings.json`` lists it
    first), so it runs while the run is still open. The validation score is read from the run's
    metric ``metric_name`` (``best_val_mean_dice``, logged by ``BestModelSaver`` through the
    validator's MLflow handler). See :func:`log_checkpoint_model` for what is logged.

    Args:
        checkpoint: the best ``model.pt`` (``model.json`` beside it).
        register_model: registered model name; when set, a new version is created and tagged with
            the validation score and the split hash. Empty/None: log only.
        split_hash: the training data's split hash (a tag of the model and of the version).
        metric_name: run metric holding the best validation score.
        metric_tag: tag name of that score on the logged model and the registered version.
        name: the logged model's name (``runs:/<run_id>/<name>``).
        deploy: log the reparameterised network.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        register_model: str | None = None,
        split_hash: str | None = None,
        metric_name: str = "best_val_mean_dice",
        metric_tag: str = "val_mean_dice",
        name: str = "model",
        deploy: bool = True,
    ) -> None:
        self.checkpoint = checkpoint
        self.register_model = register_model or None
        self.split_hash = split_hash
        self.metric_name = metric_name
        self.metric_tag = metric_tag
        self.name = name
        self.deploy = deploy
        self.logged: LoggedCheckpoint | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        found = find_mlflow_run(engine)
        if found is None:
            logger.warning("MLflowModelLogger: no MLflow run on this engine; the model is not logged.")
            return
        client, run_id = found
        tags = {}
        score = client.get_run(run_id).data.metrics.get(self.metric_name)
        if score is not None:
            tags[self.metric_tag] = f"{score:.6f}"
        if self.split_hash:
            tags["split_hash"] = self.split_hash
        self.logged = log_checkpoint_model(
            self.checkpoint,
            client,
            run_id,
            name=self.name,
            register_model=self.register_model,
            registry_tags=tags,
            deploy=self.deploy,
        )
