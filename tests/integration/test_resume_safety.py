"""`camu-orch resume` runs no code from the record or the storage: a malicious pickle planted where an
interrupted job's sweep state lives, and a newer same-named job run of another user in another
experiment, and the job still resumes to the end, from the caller's own record, without the payload."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.record.identity import experiment_name, run_identity_tags
from orchestrator.record.run_identity import Tag, content_hash
from tests.integration.conftest import in_job_folder

pytestmark = pytest.mark.integration

JOB = {
    "name": "safe",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 2, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}],
    "methods": [{"name": "finetune", "params": {"epochs": 1},
                 "sweep": {"space": {"lr": {"loguniform": [1e-3, 1e-1]}}}}],
    "sweep": {"search": "random", "num_samples": 2, "max_concurrent_trials": 1},
    "resources": {"num_workers": 0},
    "tracking": {"experiment": "safe-exp"},
    "device": "cpu",
}


class Payload:
    """Unpickling this writes the marker file: proof that someone's pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_resume_runs_no_planted_pickle_and_ignores_other_users_runs(ray_cluster, tmp_path):
    work = tmp_path
    (work / "job.yaml").write_text(yaml.safe_dump(JOB))
    runner = CliRunner()
    with in_job_folder(work):
        first = runner.invoke(app, ["submit", "job.yaml"])
    assert first.exit_code == 0, first.output
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment_name("safe-exp", "owner"))
    job_run = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'job'")[0]
    sweep = [r for r in client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial'")
             if "camu.sweep" in r.data.tags]
    assert len(sweep) == 2
    # interrupt it after the fact: the job and one sweep trial were cut off (no final.json, runs KILLED)
    victim = sweep[0]
    trial_id = victim.data.tags["camu.trial_id"]
    finals = list((work / "camu_runs").rglob(f"seed0/{trial_id}/final.json"))
    assert len(finals) == 1
    finals[0].unlink()
    client.set_terminated(victim.info.run_id, "KILLED")
    client.set_terminated(job_run.info.run_id, "KILLED")
    scenario_run = client.get_run(victim.data.tags["mlflow.parentRunId"])
    done = [k for k in scenario_run.data.tags if k.startswith("camu.sweep_done.")]
    assert len(done) == 1  # the sweep had completed: an interruption comes before this mark
    client.delete_tag(scenario_run.info.run_id, done[0])
    client.set_terminated(scenario_run.info.run_id, "KILLED")
    # plant the payload wherever Tune's sweep state is or was ever read from
    marker = work / "PWNED"
    evil = pickle.dumps(Payload(marker))
    assert not [f for f in (work / "camu_runs").iterdir() if (f / "tuner.pkl").is_file()]  # sweep folders deleted
    scope = content_hash([job_run.info.run_id, "class3", "finetune"])
    old_path = work / "camu_runs" / f"safe-{scope}-s0"  # where an interrupted sweep was once restored from
    old_path.mkdir()
    (old_path / "tuner.pkl").write_bytes(evil)
    (work / "camu_runs" / f"safe-{scope}-s0-0a1b2c3d").mkdir()  # and a folder shaped like today's
    (work / "camu_runs" / f"safe-{scope}-s0-0a1b2c3d" / "tuner.pkl").write_bytes(evil)
    # a newer same-named job run of another user, in another experiment, with a job file of its own
    other_exp = client.create_experiment("safe-exp@mallory")
    other = client.create_run(other_exp, run_name="safe", tags={"camu.role": "job", "camu.job": "safe",
                                                                "camu.submission": "evil", **run_identity_tags(),
                                                                Tag.OWNER: "mallory"})
    client.log_text(other.info.run_id, yaml.safe_dump({**JOB, "plugins": ["tests.hooks"]}), "job.yaml")

    with in_job_folder(work):
        resumed = runner.invoke(app, ["resume", "safe"])
    assert resumed.exit_code == 0, resumed.output
    assert not marker.exists(), "a planted pickle was unpickled"
    assert "resuming the sweep from the MLflow record: 1 finished, 0 stopped, 1 unfinished" in resumed.output
    assert f"parent run {job_run.info.run_id}" in resumed.output  # the caller's job, not mallory's newer one
    runs = client.search_runs([exp.experiment_id], "")
    assert not [r.info.run_name for r in runs if r.info.status != "FINISHED"]
    trials = [r for r in runs if r.data.tags.get("camu.role") == "trial"]
    names = [r.info.run_name for r in trials]
    assert len(names) == len(set(names))  # the interrupted trial continued under its own run
    assert client.get_run(victim.info.run_id).info.status == "FINISHED"
    assert finals[0].exists()
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # someone else's run is left alone
