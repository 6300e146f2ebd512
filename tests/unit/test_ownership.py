"""Names across users and a record that never lies: job runs are found only among the caller's own,
another owner's job is not resumed, a job run whose driver is gone is closed, code changes are caught."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.record.identity import (
    code_hash,
    experiment_name,
    owner,
    registered_model_name,
    run_identity_tags,
)
from orchestrator.record.liveness import (
    STALE_AFTER_S,
    driver_state,
    driver_tags,
    process_start,
)
from orchestrator.record.run_identity import Tag
from orchestrator.record.tracking import Tracker


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _job_run(tracker: Tracker, experiment: str, name: str, who: str, **tags: str) -> str:
    exp = tracker.experiment(experiment)
    return tracker.find_or_create_run(exp, name, {"camu.role": "job", "camu.job": name, "camu.submission": "s",
                                                  **run_identity_tags(), Tag.OWNER: who, **tags},
                                      key=f"job:{name}:{experiment}:{who}")


def test_owner_comes_from_the_mlflow_user_and_namespaces_names(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice smith/ops")
    assert owner() == "alice_smith_ops"
    assert experiment_name("camu-quickstart", "owner") == "camu-quickstart@alice_smith_ops"
    assert experiment_name("camu-quickstart", "shared") == "camu-quickstart"
    assert registered_model_name("camu-q", "owner", "class3", "camu") == "camu-q.alice_smith_ops-class3-camu"
    assert registered_model_name("camu-q", "shared", "class3", "camu") == "camu-q-class3-camu"
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert owner() != "alice_smith_ops"


def test_an_experiment_of_another_owner_is_never_written_or_restored(tracker):
    exp = tracker.experiment("shared-name", owner="bob")
    with pytest.raises(PermissionError, match="belongs to bob"):
        tracker.experiment("shared-name", owner="alice")
    assert tracker.experiment("shared-name", owner="bob") == exp
    tracker.client.delete_experiment(exp)
    with pytest.raises(PermissionError, match="belongs to bob"):
        tracker.experiment("shared-name", owner="alice")
    legacy = tracker.experiment("legacy")  # no owner recorded
    tracker.client.delete_experiment(legacy)
    with pytest.raises(PermissionError, match="'legacy' was deleted; restore it in the MLflow UI"):
        tracker.experiment("legacy", owner="alice")
    assert tracker.experiment("shared-name", owner="bob") == exp  # its owner may bring it back
    assert tracker.client.get_experiment(exp).lifecycle_stage == "active"


def test_a_name_resolves_only_to_the_callers_own_job_runs(tracker, tmp_path):
    me = owner()
    theirs = _job_run(tracker, "other-exp", "quick", "mallory")
    runner = CliRunner()
    only_theirs = runner.invoke(app, ["results", "quick", "--tracking-uri", tracker.uri])
    assert only_theirs.exit_code == 2
    assert f"no job run named 'quick' is yours ({me})" in only_theirs.output
    assert theirs in only_theirs.output and "owner mallory" in only_theirs.output
    mine = _job_run(tracker, experiment_name("my-exp", "owner"), "quick", me)
    time.sleep(0.01)
    _job_run(tracker, "other-exp2", "quick", "mallory")  # newer, same name, someone else's
    _job_run(tracker, "planted@mallory", "quick", me)  # newer, tagged as mine, but in someone else's namespace
    from orchestrator.record.summary import find_job_run

    assert find_job_run(tracker, "quick").info.run_id == mine
    _job_run(tracker, experiment_name("my-second-exp", "owner"), "quick", me)
    with pytest.raises(LookupError, match="in several experiments"):
        find_job_run(tracker, "quick")
    assert find_job_run(tracker, mine).info.run_id == mine  # a run id is always exact


def test_resume_refuses_another_owners_job_and_other_code(tracker, tmp_path):
    from orchestrator.driver.pipeline import _check_resumable

    other = tracker.run(_job_run(tracker, "e", "j1", "mallory"))
    with pytest.raises(LookupError, match="belongs to mallory.*--accept-owner mallory"):
        _check_resumable(tracker, other, accept_owner=None, allow_code_change=False)
    _check_resumable(tracker, other, accept_owner="mallory", allow_code_change=False)
    changed = tracker.run(_job_run(tracker, experiment_name("e", "owner"), "j2", owner(), **{Tag.CODE_HASH: "0" * 16}))
    with pytest.raises(LookupError, match=f"this is {code_hash()}.*--allow-code-change"):
        _check_resumable(tracker, changed, accept_owner=None, allow_code_change=False)
    _check_resumable(tracker, changed, accept_owner=None, allow_code_change=True)
    alive = tracker.run(_job_run(tracker, "e", "j3", owner(), **driver_tags()))  # this very process
    with pytest.raises(LookupError, match="still running"):
        _check_resumable(tracker, alive, accept_owner=None, allow_code_change=False)


def test_driver_state_on_this_host_and_by_heartbeat():
    host = socket.gethostname()
    here = f"{host}:{os.getpid()}:{process_start(os.getpid())}"
    assert driver_state({Tag.DRIVER: here}) == "alive"
    assert driver_state({Tag.DRIVER: f"{host}:{os.getpid()}:1"}) == "gone"  # the pid now belongs to another process
    now = time.time()
    far = {Tag.DRIVER: "another-host:123:456"}
    assert driver_state({**far, Tag.HEARTBEAT: f"{now - 5:.0f}"}, now) == "alive"
    assert driver_state({**far, Tag.HEARTBEAT: f"{now - STALE_AFTER_S - 5:.0f}"}, now) == "gone"
    assert driver_state({}) == "unknown"


def test_results_closes_the_runs_of_a_killed_driver(tracker):
    """A driver that died without closing its runs (SIGKILL): the next `results` marks them FAILED."""
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = process_start(dead.pid)
    dead.kill()
    dead.wait()
    job = _job_run(tracker, experiment_name("e", "owner"), "zombie", owner(),
                   **{Tag.DRIVER: f"{socket.gethostname()}:{dead.pid}:{started}"})
    exp = tracker.run(job).info.experiment_id
    trial = tracker.find_or_create_run(exp, "t", {"camu.job_run": job}, key="t", parent=job)
    finished = tracker.find_or_create_run(exp, "f", {"camu.job_run": job}, key="f", parent=job)
    tracker.end(finished, "FINISHED")
    out = CliRunner().invoke(app, ["results", "zombie", "--tracking-uri", tracker.uri])
    assert out.exit_code == 2 and "did not finish" in out.output
    assert [tracker.status(r) for r in (job, trial, finished)] == ["FAILED", "FAILED", "FINISHED"]
    assert "driver" in tracker.run(trial).data.tags["camu.status_reason"]


def test_code_hash_follows_the_source(tmp_path, monkeypatch):
    """The hash reads the packages' files: equal code, equal hash; one changed byte, another hash."""
    from orchestrator.record import identity

    fake = tmp_path / "orchestrator"
    fake.mkdir()
    for package in identity.CODE_PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(identity, "__file__", str(fake / "identity.py"))
    identity.code_hash.cache_clear()
    first = identity.code_hash()
    identity.code_hash.cache_clear()
    assert identity.code_hash() == first
    (tmp_path / "camu" / "a.py").write_text("x = 2\n")
    identity.code_hash.cache_clear()
    assert identity.code_hash() != first
    identity.code_hash.cache_clear()


def test_every_job_run_tags_carry_owner_and_code():
    tags = run_identity_tags()
    assert tags[Tag.OWNER] == owner() and len(tags[Tag.CODE_HASH]) == 16 and tags["camu.code_version"]
