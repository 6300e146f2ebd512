"""Single-worker sweep trials run in their Tune trial's own process (no Ray Train run), holding the worker's
CPUs, and Tune's retries take the place of Train's: a trial that crashes after a checkpoint is retried and
continues from that checkpoint, in the same MLflow run. Real Ray (the session's local cluster), real MLflow."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.record.identity import experiment_name
from tests.integration.conftest import in_job_folder

pytestmark = pytest.mark.integration

JOB = {
    "name": "inproc",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 1, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}],
    "methods": [{"name": "finetune", "params": {"epochs": 3}, "sweep": {"space": {"lr": {"grid": [0.01, 0.02]}}}}],
    "sweep": {"search": "grid", "num_samples": 1, "max_concurrent_trials": 1, "max_failures": 1},
    "resources": {"num_workers": 1, "cpus_per_worker": 2, "checkpoint_interval_s": 0, "worker_max_failures": 0},
    "plugins": ["tests.crash_after_checkpoint"],
    "tracking": {"experiment": "inproc"},
    "device": "cpu",
}


def test_single_worker_trials_run_in_their_trial_process_and_resume_after_a_crash(ray_cluster, tmp_path):
    with in_job_folder(tmp_path):
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB))
        result = CliRunner().invoke(app, ["submit", "job.yaml"])
        assert result.exit_code == 0, result.output[-3000:]
        rows = json.loads(CliRunner().invoke(app, ["results", "inproc", "--format", "json"]).stdout)
    trials = [r for r in rows if r["method"] == "finetune" and not r["trial_id"].startswith("preset")]
    assert sorted(r["status"] for r in trials) == ["finished", "finished"], trials
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment_name("inproc", "owner"))
    runs = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial'")
    sweep = [r for r in runs if not r.data.tags["camu.trial_id"].startswith("preset")]
    assert len(sweep) == 2 and len({r.info.run_name for r in runs}) == len(runs)  # the retry reused its run
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in sweep:  # the plugin crashed each once, after its first checkpoint: continued from there
        assert run.data.tags.get("camu.restored_from_epoch") == "0", run.data.tags
        metrics = run.data.metrics
        assert metrics["time.worker_start"] < 0.5  # no worker group: the trial's own process computes
        assert 0 < metrics["time.to_unlearn"] < metrics["time.total"]
    storage = tmp_path / "camu_runs"
    train_runs = [p.name for p in storage.iterdir() if p.is_dir() and "finetune" in p.name]
    assert all(name.endswith("preset") for name in train_runs), train_runs  # only the driver's preset ran in Train
    assert not list(tmp_path.rglob("resume-state.pt"))  # a finished trial's checkpoint is removed
