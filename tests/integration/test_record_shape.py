"""The MLflow record a job leaves has a fixed shape: run names, tags, params and metric names per run.

Scripts, dashboards and the MLflow UI's saved views read these names; a refactor of the orchestrator must not
change them. A small job (two seeds, CaMU's preset plus one sweep trial, finetune, the retrain reference)
runs through the real pipeline and its record's shape is compared with ``record_shape.json``, written from
the code before the orchestrator was reorganised into job/driver/execution/worker/record. Values are not
compared (they are the science's business); ids, hashes and times are masked. After an intended change of
the record, rewrite the file with ``CAMU_WRITE_RECORD_SHAPE=1 pytest tests/integration/test_record_shape.py``
and say why in the commit.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.integration.conftest import in_job_folder

pytestmark = pytest.mark.integration

EXPECTED = Path(__file__).with_name("record_shape.json")
JOB = {
    "name": "shape",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 2, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}],
    "seeds": [0, 1],
    "methods": [{"name": "camu", "preset": "official", "sweep": {"space": {"lr_out": {"loguniform": [3e-4, 3e-3]}}}},
                {"name": "finetune", "sweep": {"space": {}}},
                {"name": "retrain"}],
    "sweep": {"search": "random", "num_samples": 1, "max_concurrent_trials": 1},
    "evaluation": {"relearn": {"epochs": 1}},
    "resources": {"num_workers": 0},
    "tracking": {"experiment": "shape-exp"},
    "device": "cpu",
}
HEX = re.compile(r"\b[0-9a-f]{8,64}\b|\b[0-9a-f]{5}_[0-9]{5}\b")  # hashes, ids; Tune's trial ids
# machine-dependent tags, and camu.is_best, whose run depends on which configuration won (values, not names)
MASKED_TAGS = {"mlflow.source.name", "mlflow.source.git.commit", "mlflow.user", "mlflow.source.type", "camu.is_best"}


def _mask(text: str) -> str:
    return HEX.sub("<id>", text)


def record_shape(client: MlflowClient, experiment_id: str) -> list[dict]:
    """Every run of the experiment as names only: role, run name, tag / param / metric keys, status."""
    runs = client.search_runs([experiment_id], max_results=5000)
    shape = []
    for run in runs:
        tags = run.data.tags
        shape.append({
            "role": tags.get("camu.role", ""),
            "method": tags.get("camu.method", ""),
            "name": _mask(run.info.run_name or ""),
            "status": run.info.status,
            "tags": sorted({_mask(k) for k in tags if k not in MASKED_TAGS}),
            "params": sorted(_mask(k) for k in run.data.params),
            "metrics": sorted({_mask(k) for k in run.data.metrics}),
        })
    return sorted(shape, key=lambda r: json.dumps(r, sort_keys=True))


@pytest.fixture(scope="module")
def record(ray_cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("shape")
    (work / "shape.yaml").write_text(yaml.safe_dump(JOB))
    with in_job_folder(work):
        result = CliRunner().invoke(app, ["submit", "shape.yaml"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = next(e for e in client.search_experiments() if e.name.startswith("shape-exp"))
    return record_shape(client, exp.experiment_id)


def test_the_record_keeps_its_run_names_tags_params_and_metric_names(record):
    if os.environ.get("CAMU_WRITE_RECORD_SHAPE") == "1":
        EXPECTED.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    expected = json.loads(EXPECTED.read_text())
    assert len(record) == len(expected), f"{len(record)} runs, expected {len(expected)}"
    for got, want in zip(record, expected):
        assert got == want, json.dumps({"got": got, "want": want}, indent=1)


def test_the_shape_sees_a_renamed_metric(record):
    """The comparison is not vacuous: renaming one metric of one run changes the shape."""
    changed = json.loads(json.dumps(record))
    run = next(r for r in changed if r["metrics"])
    run["metrics"][0] = run["metrics"][0] + "_renamed"
    assert changed != json.loads(EXPECTED.read_text())
