"""The MLflow facade against a real sqlite store: idempotent runs, closing on failure, Parquet tables."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.record.tracking import (
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
    with pytest.raises(type(exc)), closing_runs(tracker, runs, exp):
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
    from orchestrator.record import tracking

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


def test_closing_runs_also_ends_every_running_run_of_the_job(tracker):
    """A trial whose driver died with the job is still RUNNING: it ends with the job's status; runs of the
    job that already ended keep theirs, and another job's open run is left alone."""
    exp = tracker.experiment("nested")
    other_job = tracker.find_or_create_run(exp, "other", {"camu.job_run": "someone-else"}, key="other")
    runs = []
    with pytest.raises(KeyboardInterrupt), closing_runs(tracker, runs, exp):
        runs.append(tracker.find_or_create_run(exp, "job", {}, key="job"))
        mine = {"camu.job_run": runs[0]}
        scenario = tracker.find_or_create_run(exp, "scenario", mine, key="sc", parent=runs[0])
        trial = tracker.find_or_create_run(exp, "trial", mine, key="tr", parent=scenario)
        done = tracker.find_or_create_run(exp, "done", mine, key="done", parent=scenario)
        tracker.end(done, "FINISHED")
        raise KeyboardInterrupt
    assert [tracker.status(r) for r in (runs[0], scenario, trial, done, other_job)] == \
        ["KILLED", "KILLED", "KILLED", "FINISHED", "RUNNING"]


def test_a_changed_param_is_an_error_that_names_it(tracker):
    from orchestrator.record.tracking import ParamChanged

    exp = tracker.experiment("changed")
    run = tracker.find_or_create_run(exp, "r", {}, key="changed")
    tracker.log_params(run, {"recipe": {"lr": 0.1, "epochs": 3}})
    tracker.log_params(run, {"recipe": {"lr": 0.1, "epochs": 3}, "extra": 1})  # the same values again, plus a new one
    with pytest.raises(ParamChanged, match=r"recipe\.lr: logged '0\.1', now '0\.5'") as caught:
        tracker.log_params(run, {"recipe": {"lr": 0.5}, "later": "x"})
    assert caught.value.changed == {"recipe.lr": ("0.1", "0.5")}
    # nothing of the refused call was logged; the first value stays
    assert tracker.client.get_run(run).data.params == {"recipe.lr": "0.1", "recipe.epochs": "3", "extra": "1"}
    with pytest.raises(ParamChanged, match=r"https://\*\*\*@host") as caught:
        tracker.log_params(run, {"extra": "https://user:secret@host/x"})
    assert "secret" not in str(caught.value)


def test_child_runs_are_collected_over_every_page(tracker, monkeypatch):
    from mlflow.store.entities.paged_list import PagedList

    pages = {None: PagedList(list(range(1000)), "p2"), "p2": PagedList(list(range(1000, 2000)), "p3"),
             "p3": PagedList(list(range(2000, 6500)), None)}
    asked = []

    def search_runs(experiment_ids, filter_string="", max_results=1000, page_token=None, **_):
        asked.append(page_token)
        assert "mlflow.parentRunId" in filter_string and experiment_ids == ["7"]
        return pages[page_token]

    monkeypatch.setattr(tracker.client, "search_runs", search_runs)
    assert tracker.list_child_runs("7", "parent") == list(range(6500))
    assert asked == [None, "p2", "p3"]


@pytest.mark.integration  # logs and registers a real MLflow model (torch.export: seconds)
def test_registered_model_is_logged_in_its_runs_experiment(tmp_path, monkeypatch):
    """MLflow's log_model(run_id=...) puts the logged model in the *active* experiment (Default) unless told."""
    import os

    import torch
    from torch import nn

    from camu.weights import save_weights

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    store = tmp_path / "store"
    store.mkdir()
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}")
    exp = tracker.experiment("job-exp")
    run = tracker.find_or_create_run(exp, "trial", {}, key="trial")
    model = nn.Linear(4, 2).eval()
    weights = save_weights(model, tmp_path / "weights.safetensors")
    _uri, version = tracker.log_and_register_model(run, model, torch.zeros(2, 4).numpy(), weights, "camu-x",
                                                  {"camu.method": "m"})
    client = tracker.client
    assert client.search_runs(["0"], "") == []
    assert list(client.search_logged_models(experiment_ids=["0"])) == []
    logged = list(client.search_logged_models(experiment_ids=[exp]))
    assert len(logged) == 1 and logged[0].experiment_id == exp and logged[0].source_run_id == run
    assert client.get_model_version("camu-x", version).run_id == run
    assert not (cwd / "mlruns").exists() and list(cwd.iterdir()) == []
    assert str(store) in logged[0].artifact_location  # beside the store, with the job's other artifacts
    from mlflow.tracking import fluent
    assert fluent._active_experiment_id is None and "MLFLOW_EXPERIMENT_ID" not in os.environ  # restored
