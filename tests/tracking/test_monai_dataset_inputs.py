"""Why the bundle records dataset inputs with MLflowLineage, not MONAI's MLFlowHandler(dataset_dict).

Both log the same datalist into one real SQLite MLflow store; the tests state what each records.
MONAI's handler (installed version) records one pandas dataset of file names per split: named
``<key>_dataset_<n>``, digest a hash of those names, source the running script, no context tag.
The lineage the package relies on needs what ``log_datalist_inputs`` records instead: the split
context tag, the datalist file as source and the split hash as digest, which is also the
``split_hash`` tag of the logged model, so a model can be matched to the data it was trained on.
If a MONAI release starts recording these, the first test fails and the choice can be revisited
(docs/engineering-notes.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from ignite.engine import Engine  # noqa: E402
from monai.data import Dataset  # noqa: E402
from monai.handlers import MLFlowHandler  # noqa: E402

from litenext_monai.tracking import MLflowLineage  # noqa: E402

SPLIT_HASH = "ab" * 32
CONTEXT_TAG = "mlflow.data.context"


@pytest.fixture()
def datalist(tmp_path: Path) -> Path:
    cases = [{"image": f"images/{i}.png", "label": f"labels/{i}.png"} for i in range(6)]
    path = tmp_path / "data" / "datalist.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"training": cases[:4], "validation": cases[4:], "split_hash": SPLIT_HASH}))
    return path


def _run(uri: str, name: str, handlers: list, **mlflow_kwargs) -> mlflow.entities.Run:
    engine = Engine(lambda engine, batch: None)
    for handler in handlers:
        handler.attach(engine)
    MLFlowHandler(
        tracking_uri=uri, experiment_name="datasets", run_name=name, iteration_log=False,
        close_on_complete=True, **mlflow_kwargs,
    ).attach(engine)  # fmt: skip
    engine.run([0], max_epochs=1)
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("datasets").experiment_id], f"attributes.run_name = '{name}'"
    )
    return run


def test_monai_dataset_dict_records_file_name_tables_without_context_or_split_hash(
    tmp_path, datalist, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = json.loads(datalist.read_text())
    run = _run(
        f"sqlite:///{tmp_path / 'mlruns.db'}",
        "monai",
        [],
        dataset_dict={"training": Dataset(data["training"]), "validation": Dataset(data["validation"])},
        dataset_keys=["image", "label"],
    )
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training_dataset_0", "validation_dataset_0"}
    for name, count in (("training_dataset_0", 4), ("validation_dataset_0", 2)):
        entry = inputs[name]
        assert CONTEXT_TAG not in {t.key for t in entry.tags}  # no training/validation context
        assert entry.dataset.digest != SPLIT_HASH[: len(entry.dataset.digest)]  # not the split hash
        assert entry.dataset.source_type == "code"  # the running script, not the datalist file
        assert "datalist.json" not in entry.dataset.source
        assert json.loads(entry.dataset.profile)["num_rows"] == count
        assert run.data.params[f"{name}_samples"] == str(count)


def test_lineage_records_contexts_datalist_source_and_split_hash(tmp_path, datalist, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = _run(f"sqlite:///{tmp_path / 'mlruns.db'}", "lineage", [MLflowLineage(datalist=datalist)])
    found = {({t.key: t.value for t in d.tags}[CONTEXT_TAG]): d.dataset for d in run.inputs.dataset_inputs}
    assert set(found) == {"training", "validation"}
    for context, count in (("training", 4), ("validation", 2)):
        assert found[context].digest == SPLIT_HASH[:36]
        assert json.loads(found[context].source)["uri"] == str(datalist.resolve())
        assert json.loads(found[context].profile) == {"num_cases": count}
