"""A sweep whose trials ASHA stops early must give every CPU back: the next stage (here the second
scenario's oracle and runs) starts, and when the job ends the cluster's resources are back to their
total, no placement group of a dead run is left, and no checkpoint folder is left in the temp dir."""

from __future__ import annotations

import json
import os
import tempfile
import time

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB = {
    "name": "released",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 2, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]},
                  {"name": "class4", "kind": "classes", "classes": [4]}],
    # grid order is deterministic: a sound first trial, then one whose learning rate wrecks the model,
    # which ASHA stops at its first rung
    "methods": [{"name": "camu", "params": {"epochs": 4}, "sweep": {"space": {"lr_out": {"grid": [1.0e-3, 0.5]}}}}],
    "sweep": {"search": "grid", "num_samples": 1, "scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
    # one run holds 3 of the cluster's 4 CPUs: a single leaked run would block every later stage
    "resources": {"num_workers": 1, "cpus_per_worker": 3, "start_attempts": 1},
    "tracking": {"experiment": "released"},
    "device": "cpu",
}


def _checkpoint_folders() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("camu-ckpt-")}


def test_early_stopped_trials_release_their_resources(ray_cluster, tmp_path, monkeypatch):
    from orchestrator.execution.placement import orphaned_placement_groups

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB))
    before = _checkpoint_folders()
    result = CliRunner().invoke(app, ["submit", "job.yaml"])
    assert result.exit_code == 0, result.output[-3000:]
    table = CliRunner().invoke(app, ["results", "released", "--format", "json"])
    rows = json.loads(table.stdout)
    trials = [r for r in rows if r["method"] == "camu" and not r["trial_id"].startswith("preset")]
    assert {r["scenario"] for r in trials} == {"class3", "class4"}  # the stage after the first sweep ran
    assert [r["status"] for r in trials if '"lr_out": 0.5' in r["params"]] == ["stopped"] * 2, trials  # by ASHA
    assert [r["status"] for r in trials if '"lr_out": 0.001' in r["params"]] == ["finished"] * 2
    deadline = time.time() + 10
    while time.time() < deadline and ray_cluster.available_resources().get("CPU", 0) < 4:
        time.sleep(0.5)  # the last trial's actors exit asynchronously
    assert ray_cluster.available_resources().get("CPU", 0) == pytest.approx(ray_cluster.cluster_resources()["CPU"])
    assert orphaned_placement_groups() == []
    assert _checkpoint_folders() - before == set()
