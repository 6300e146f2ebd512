"""camu-orch submit on a real local Ray instance: 2-worker gloo DDP TorchTrainers, a 2-trial Tune
sweep, a real sqlite MLflow store; the run tree, artifacts, registry and `results` are asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.record.identity import experiment_name, registered_model_name
from tests.integration.conftest import in_job_folder

pytestmark = pytest.mark.integration

JOB = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 6, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}],
    "seeds": [0],
    "methods": [{"name": "camu", "preset": "official",
                 "sweep": {"space": {"w_rep_forget": {"loguniform": [0.2, 2.0]}, "lr_out": {"loguniform": [3e-4, 3e-3]}}}}],
    "sweep": {"search": "random", "num_samples": 2, "max_concurrent_trials": 1, "max_failures": 1},
    "resources": {"num_workers": 2, "cpus_per_worker": 1, "worker_max_failures": 0},
    "tracking": {"experiment": "tiny-exp"},
    "device": "cpu",
}


@pytest.fixture(scope="module")
def submitted(ray_cluster, tmp_path_factory):
    """Submit the tiny job twice from a fresh working directory (the second reuses the model cache);
    the second sweep trial fails on purpose every time (injected), to prove the sweep survives it."""
    work = tmp_path_factory.mktemp("work")
    (work / "tiny.yaml").write_text(yaml.safe_dump(JOB))
    with in_job_folder(work):
        runner = CliRunner()
        # the plugin makes the second sweep trial fail at its start (a job's own code, not the environment)
        first = runner.invoke(app, ["submit", "tiny.yaml", "--set", "plugins=[tests.hooks]"])
        second = runner.invoke(app, ["submit", "tiny.yaml", "--set", "sweep.num_samples=1"])
        table = runner.invoke(app, ["results", "tiny", "--format", "json"])
        parquet = runner.invoke(app, ["results", "tiny", "--format", "parquet", "-o", str(work / "s.parquet")])
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    return {"work": work, "first": first, "second": second, "table": table, "parquet": parquet, "client": client}


def _runs(client, exp_id, query):
    return client.search_runs([exp_id], query, max_results=1000)


def test_submit_succeeds_and_prints_where_the_record_is(submitted):
    first = submitted["first"]
    assert first.exit_code == 0, first.output
    assert "parent run id:" in first.output and "mlflow ui --backend-store-uri sqlite:///" in first.output
    assert "trials: " in first.output and "failed" in first.output
    assert submitted["second"].exit_code == 0, submitted["second"].output
    assert "original: reused from cache" in submitted["second"].output
    assert "oracle class3/seed0: reused from cache" in submitted["second"].output


def test_mlflow_run_tree(submitted):
    client = submitted["client"]
    exp = client.get_experiment_by_name(experiment_name("tiny-exp", "owner"))
    jobs = _runs(client, exp.experiment_id, "tags.`camu.role` = 'job'")
    assert len(jobs) == 2 and all(j.info.status == "FINISHED" for j in jobs)
    parent = min(jobs, key=lambda r: r.info.start_time)
    assert parent.data.params["dataset.name"] == "digits"
    assert parent.data.params["resources.num_workers"] == "2"
    children = _runs(client, exp.experiment_id, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert [c.data.tags["camu.scenario"] for c in children] == ["class3"]
    child = children[0]
    trials = _runs(client, exp.experiment_id, f"tags.`mlflow.parentRunId` = '{child.info.run_id}'")
    ids = sorted(t.data.tags["camu.trial_id"] for t in trials if t.data.tags["camu.trial_id"].startswith("preset"))
    assert ids == ["preset", "preset-official-cifar"]  # the search starts from both families' presets
    assert len(trials) == 4 and {t.data.tags["camu.method"] for t in trials} == {"camu"}  # the retry: no new run
    statuses = sorted(t.info.status for t in trials)
    assert statuses == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    for t in trials:
        assert t.info.run_name.startswith("class3/camu/seed0/")
        assert t.data.tags["camu.seed"] == "0" and t.data.tags["camu.scenario"] == "class3"
        assert "camu.w_rep_forget" in t.data.params
    ok = [t for t in trials if t.info.status == "FINISHED"]
    for t in ok:
        assert {"ra", "fa", "ta", "mia_official", "mia_auc", "avg_gap", "unlearn_seconds", "rte"} <= set(t.data.metrics)
        history = client.get_metric_history(t.info.run_id, "loss_rep")
        assert len(history) == 2 and [m.step for m in history] == [0, 1]  # one point per epoch
        assert t.data.params["data_parallel.world_size"] == "2"
        assert t.data.params["data_parallel.per_worker_batch"] == "16"
        arts = {a.path for a in client.list_artifacts(t.info.run_id, "model")} | \
               {a.path for a in client.list_artifacts(t.info.run_id, "eval")}
        assert "eval/samples.parquet" in arts
        # storage.keep_weights: chosen (default): presets and the chosen configuration keep their weights
        kept = t.data.tags["camu.trial_id"].startswith("preset") or t.data.tags.get("camu.is_best") == "true"
        assert ("model/weights.safetensors" in arts) == kept, (t.info.run_name, arts)
    for role in ("original", "oracle"):
        runs = _runs(client, exp.experiment_id, f"tags.`camu.role` = '{role}'")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # trained once, reused by the second job
        assert "train_seconds" in runs[0].data.metrics
    assert parent.data.tags["camu.original_run_id"] == _runs(client, exp.experiment_id, "tags.`camu.role` = 'original'")[0].info.run_id
    parent_arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "job.yaml" in parent_arts
    assert {a.path for a in client.list_artifacts(child.info.run_id, "splits")} == {"splits/class3-seed0.parquet"}
    local = client.download_artifacts(child.info.run_id, "eval/summary.parquet", str(submitted["work"]))
    assert pq.read_table(local).num_rows == 6  # original, oracle, 2 presets, 2 sweep trials


def test_the_job_writes_nothing_outside_its_experiment_and_named_places(submitted):
    """No run and no logged model in Default (MLflow 3 logs models into the active experiment unless told),
    nothing in the working folder besides the store, the default Ray storage and cache, and the files the
    test wrote; every run carries its owner and code; finished Train and Tune folders are gone."""
    client, work = submitted["client"], submitted["work"]
    assert client.search_runs(["0"], "") == []
    assert client.search_logged_models(experiment_ids=["0"]) == []
    exp = client.get_experiment_by_name(experiment_name("tiny-exp", "owner"))
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert models and all(m.experiment_id == exp.experiment_id for m in models)
    written_by_tests = {"tiny.yaml", "s.parquet", "summary.parquet"}
    assert sorted(p.name for p in work.iterdir() if p.name not in written_by_tests) == \
        [".camu-cache", "camu_runs", "mlartifacts", "mlflow.db"]
    for run in client.search_runs([exp.experiment_id], "", max_results=1000):
        assert run.data.tags["camu.owner"] and len(run.data.tags["camu.code_hash"]) == 16, run.info.run_name
    leftovers = [f.name for f in (work / "camu_runs").iterdir() if f.name != "tiny"]
    # every finished Train run and sweep folder was deleted; the failed trial keeps its run (for a resume)
    assert leftovers and all("_00001" in name for name in leftovers), leftovers
    assert "stored:" in submitted["first"].output and "MLflow artifacts" in submitted["first"].output


def test_registered_best_model(submitted):
    client = submitted["client"]
    mv = client.get_model_version_by_alias(registered_model_name("camu-tiny", "owner", "class3", "camu"), "candidate")
    assert mv.tags["camu.scenario"] == "class3" and mv.tags["camu.method"] == "camu"
    best_run = client.get_run(mv.run_id)
    assert best_run.data.tags["camu.is_best"] == "true"
    import mlflow.pytorch
    import torch

    mlflow_model = mlflow.pytorch.load_model(f"models:/{registered_model_name('camu-tiny', 'owner', 'class3', 'camu')}@candidate")  # pt2: no pickle
    logits = mlflow_model(torch.zeros(2, 1, 8, 8))
    assert tuple(logits.shape) == (2, 10)


def test_results_table(submitted):
    assert submitted["table"].exit_code == 0, submitted["table"].output
    rows = json.loads(submitted["table"].stdout)
    # newest job: the two presets and one sweep trial
    assert sorted((r["method"], r["trial_id"].startswith("preset")) for r in rows) == [
        ("camu", False), ("camu", True), ("camu", True), ("oracle", False), ("original", False)]
    expected = {"scenario", "method", "trial_id", "seed", "is_best", "ra", "fa", "ta", "ta_retained", "ta_forgotten",
                "mia_official", "mia_auc", "avg_gap", "unlearn_seconds", "rte"}
    assert expected <= set(rows[0])
    by = {(r["method"], r["trial_id"] == "preset"): r for r in rows if r["trial_id"] != "preset-official-cifar"}
    assert by[("oracle", False)]["fa"] == 0 and by[("oracle", False)]["avg_gap"] == 0
    assert by[("original", False)]["fa"] > 90
    chosen = [r for r in rows if r["is_best"]]
    assert len(chosen) == 1 and chosen[0]["method"] == "camu"  # one seed: one row of the chosen configuration
    assert chosen[0]["objective"] == min(r["objective"] for r in rows if r["method"] == "camu")
    assert 0 <= chosen[0]["mia_auc"] <= 1 and 0 <= chosen[0]["ra"] <= 100
    assert by[("camu", True)]["fa"] < 20  # the official configuration forgets the class
    assert submitted["parquet"].exit_code == 0
    assert pq.read_table(submitted["work"] / "s.parquet").num_rows == 5


def test_first_job_recorded_the_failed_trial(submitted):
    client = submitted["client"]
    exp = client.get_experiment_by_name(experiment_name("tiny-exp", "owner"))
    parent = min(_runs(client, exp.experiment_id, "tags.`camu.role` = 'job'"), key=lambda r: r.info.start_time)
    local = client.download_artifacts(parent.info.run_id, "eval/summary.parquet", str(submitted["work"]))
    rows = pq.read_table(local).to_pylist()
    sweep = [r for r in rows if r["method"] == "camu" and not r["trial_id"].startswith("preset")]
    assert sorted(r["status"] for r in sweep) == ["failed", "finished"]
    assert not any(r["is_best"] for r in rows if r["status"] == "failed")


def test_submit_ends_with_a_report_that_says_a_trial_failed(submitted):
    """The first job had a failed trial: its report still exists, is logged with its figures, and says so."""
    import re

    first = submitted["first"].output
    found = re.search(r"report:\s+(\S+report\.html)", first)
    assert found, first[-2000:]
    html = Path(found.group(1)).read_text(encoding="utf-8")
    assert "1 trial(s) of this scenario did not finish" in html
    assert html.count("data:image/png;base64,") >= 4  # trade-off, frontier, per-epoch, membership
    client = submitted["client"]
    exp = client.get_experiment_by_name(experiment_name("tiny-exp", "owner"))
    parent = min(_runs(client, exp.experiment_id, "tags.`camu.role` = 'job'"), key=lambda r: r.info.start_time)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "report/figures")}
    assert "report/report.html" in logged
    for name in ("tradeoff", "frontier", "epochs", "membership"):
        assert {f"report/figures/class3-{name}.png", f"report/figures/class3-{name}.svg"} <= figures
    # the parent run's description links the report, the runs table in model-training mode, the best trials
    note = parent.data.tags["mlflow.note.content"]
    assert f"#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}/artifacts/report/report.html" in note
    assert f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning&searchFilter=" in note
    # and submit printed the same links
    assert "http://127.0.0.1:5000/#/experiments/" in first and "workflowType=machine_learning" in first


def test_console_shows_camu_orch_not_ray_internals(submitted):
    import logging

    out = submitted["first"].output
    for noise in ("Configuration for experiment", "TensorBoard", "View detailed results here",
                  "max_concurrent_trials"):  # what Tune prints
        assert noise not in out, noise
    assert "[4/5]" in out and "trials: " in out
    # Train local mode's "Reported metrics" / "Running in local mode", Optuna's study line and MLflow's
    # database lines are INFO logs: kept off the console
    for name in ("ray.train", "ray.tune", "optuna", "mlflow"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
