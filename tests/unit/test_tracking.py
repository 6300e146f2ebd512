"""The MLflow facade against a real sqlite store: idempotent runs, closing on failure, Parquet tables."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.tracking import (
    Tracker,
    closing_runs,
    default_tracking_uri,
    flatten,
    local_artifact_root,
    redact,
)


@pytest.fixture()
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_default_uri_is_absolute_sqlite_and_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert local_artifact_root(uri) == (tmp_path.resolve() / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert default_tracking_uri(tmp_path) == "http://mlflow:5000"
    assert local_artifact_root("http://mlflow:5000") is None


def test_find_or_create_does_not_duplicate(tracker):
    exp = tracker.experiment("e")
    assert tracker.experiment("e") == exp
    parent = tracker.find_or_create_run(exp, "job", {"camu.role": "job"}, key="job:1")
    a = tracker.find_or_create_run(exp, "trial", {"t": "1"}, key="trial:1", parent=parent)
    tracker.end(a)
    b = tracker.find_or_create_run(exp, "trial", {"t": "1"}, key="trial:1", parent=parent)
    assert a == b and tracker.status(b) == "RUNNING"
    children = tracker.list_child_runs(exp, parent)
    assert [r.info.run_id for r in children] == [a]


def test_params_are_flattened_and_resume_safe(tracker):
    exp = tracker.experiment("e")
    run = tracker.find_or_create_run(exp, "r", {}, key="k")
    tracker.log_params(run, {"a": {"b": 1, "c": [1, 2]}, "d": "x"})
    tracker.log_params(run, {"a": {"b": 1}})  # logging again is a no-op, not an MLflow error
    assert tracker.client.get_run(run).data.params == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


@pytest.mark.parametrize("exc,status", [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_closing_runs_marks_failures_and_keeps_logged_data(tracker, exc, status):
    exp = tracker.experiment("e")
    runs = []
    with pytest.raises(type(exc)), closing_runs(tracker, runs):
        runs.append(tracker.find_or_create_run(exp, "p", {}, key=f"p-{status}"))
        tracker.log_metrics(runs[0], {"m": 1.0}, step=0)
        raise exc
    run = tracker.client.get_run(runs[0])
    assert run.info.status == status
    assert run.data.metrics == {"m": 1.0}


def test_parquet_artifact_round_trip(tracker, tmp_path):
    exp = tracker.experiment("e")
    run = tracker.find_or_create_run(exp, "r", {}, key="k")
    table = pa.table({"x": [1, 2], "y": ["a", "b"]})
    tracker.log_parquet(run, table, "eval/t.parquet")
    local = tracker.download(run, "eval/t.parquet", tmp_path)
    assert pq.read_table(local).equals(table)


def test_unreachable_store_is_a_clear_error():
    with pytest.raises(ConnectionError, match="tracking.uri: cannot reach MLflow at http://127.0.0.1:9"):
        Tracker("http://127.0.0.1:9").ping()


def test_flatten_and_redact():
    assert flatten({"a": {"b": {"c": 1}}, "e": {}}) == {"a.b.c": "1", "e": "{}"}
    assert redact("https://user:secret@mlflow.example/path") == "https://***@mlflow.example/path"


def test_transient_errors_are_retried_with_backoff(monkeypatch):
    from orchestrator import tracking

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("sqlite3.OperationalError: database is locked")
        return "ok"

    assert tracking._retry(flaky, "test") == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        tracking._retry(lambda: (_ for _ in ()).throw(ValueError("bad param")), "test")
    always = []
    with pytest.raises(ConnectionError):
        tracking._retry(lambda: always.append(1) or (_ for _ in ()).throw(ConnectionError("connection refused")), "t")
    assert len(always) == tracking.RETRIES


def test_closing_runs_also_ends_running_nested_runs(tracker):
    """A trial whose driver died with the job is still RUNNING: it ends with the job's status."""
    exp = tracker.experiment("nested")
    runs = []
    with pytest.raises(KeyboardInterrupt), closing_runs(tracker, runs):
        runs.append(tracker.find_or_create_run(exp, "job", {}, key="job"))
        scenario = tracker.find_or_create_run(exp, "scenario", {}, key="sc", parent=runs[0])
        trial = tracker.find_or_create_run(exp, "trial", {}, key="tr", parent=scenario)
        done = tracker.find_or_create_run(exp, "done", {}, key="done", parent=scenario)
        tracker.end(done, "FINISHED")
        raise KeyboardInterrupt
    assert [tracker.status(r) for r in (runs[0], scenario, trial, done)] == ["KILLED", "KILLED", "KILLED", "FINISHED"]
