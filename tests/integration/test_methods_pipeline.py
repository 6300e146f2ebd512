"""The real pipeline with two methods and two seeds, one of them a method registered by a test module
(a job ``plugins:`` entry): rows per (method, trial, seed), the chosen configuration marked on each
seed, ``results --by method`` as mean +- std over the seeds, registration per (scenario, method), and
every method through Train local mode on digits, reporting each epoch."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.record.identity import experiment_name, registered_model_name
from tests.integration.conftest import in_job_folder

pytestmark = pytest.mark.integration

JOB = {
    "name": "two",
    "plugins": ["tests.throwaway_method"],
    "dataset": {"name": "digits", "augment": True},  # the augmented regime's wiring, job file to trial
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 3, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}],
    "seeds": [0, 1],
    "methods": [{"name": "throwaway"}, {"name": "finetune", "params": {"epochs": 1, "batch_size": 128},
                                        "sweep": {"space": {"lr": {"loguniform": [1.0e-3, 1.0e-1]}}}},
                {"name": "retrain"}],
    "sweep": {"num_samples": 2},
    "resources": {"num_workers": 0},
    "tracking": {"experiment": "two"},
    "device": "cpu",
}


@pytest.fixture(scope="module")
def job(ray_cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("two")
    (work / "two.yaml").write_text(yaml.safe_dump(JOB))
    runner = CliRunner()
    with in_job_folder(work):
        submitted = runner.invoke(app, ["submit", "two.yaml"])
        rows = runner.invoke(app, ["results", "two", "--format", "json"])
        by = runner.invoke(app, ["results", "two", "--by", "method", "--format", "json"])
        text = runner.invoke(app, ["results", "two", "--by", "method"])
        report = runner.invoke(app, ["report", "two", "-o", str(work / "two.html")])
    from mlflow.tracking import MlflowClient

    return {"submitted": submitted, "rows": rows, "by": by, "text": text, "report": report, "work": work,
            "client": MlflowClient(f"sqlite:///{work / 'mlflow.db'}")}


def test_job_ran(job):
    assert job["submitted"].exit_code == 0, job["submitted"].output[-3000:]


def test_rows_per_method_trial_and_seed(job):
    rows = json.loads(job["rows"].stdout)
    for method in ("throwaway", "finetune"):
        mine = [r for r in rows if r["method"] == method]
        presets = sorted(r["seed"] for r in mine if r["trial_id"] == "preset")
        assert presets == [0, 1], method  # the preset on every seed
        sweep = [r for r in mine if r["trial_id"] != "preset" and r["seed"] == 0]
        assert len(sweep) == 2, method  # the same budget for every method
        assert all(r["status"] == "finished" for r in sweep), sweep  # in-process trials report to Tune
        chosen = [r for r in mine if r["is_best"]]
        assert sorted(r["seed"] for r in chosen) == [0, 1] and len({r["trial_id"] for r in chosen}) == 1, method
        selection = {r["trial_id"]: r["objective"] for r in mine if r["seed"] == 0 and r["status"] == "finished"}
        # the lowest objective on the selection seed, the preset included (the scalar front), then replicated
        assert chosen[0]["trial_id"] == min(selection, key=selection.get), method
        assert all(r["is_pareto"] == (r["trial_id"] == chosen[0]["trial_id"]) for r in mine), method
    retrain = [r for r in rows if r["method"] == "retrain"]
    oracle = [r for r in rows if r["method"] == "oracle"]
    assert [(r["seed"], r["ra"], r["unlearn_seconds"]) for r in retrain] == [(r["seed"], r["ra"], r["unlearn_seconds"])
                                                                            for r in oracle]


def test_by_method_is_mean_and_std_over_seeds(job):
    rows = json.loads(job["rows"].stdout)
    table = json.loads(job["by"].stdout)
    for method in ("throwaway", "finetune"):
        best = next(r for r in table if r["method"] == method and r["config"] == "best")
        chosen = [r for r in rows if r["method"] == method and r["is_best"]]
        assert best["seeds"] == 2
        assert best["ra"] == pytest.approx(statistics.fmean(r["ra"] for r in chosen))
        assert best["ra_std"] == pytest.approx(statistics.stdev(r["ra"] for r in chosen)) or math.isnan(best["ra_std"])
    assert " +- " in job["text"].stdout


def test_mlflow_record_names_the_method(job):
    client = job["client"]
    exp = client.get_experiment_by_name(experiment_name("two", "owner"))
    trials = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial'", max_results=100)
    names = {t.info.run_name for t in trials}
    assert {"class3/throwaway/seed0/preset", "class3/throwaway/seed1/preset", "class3/finetune/seed1/preset"} <= names
    assert all(t.data.tags["camu.method"] in ("throwaway", "finetune") for t in trials)
    for t in trials:  # where each trial's time went, on every trial run
        assert {"time.total", "time.other", "time.unlearn", "time.evaluation", "time.logging"} <= set(t.data.metrics)
        assert t.data.params["data.augmented"] == "True"  # the data the trial's worker built is the job's
    best = [t for t in trials if t.data.tags.get("camu.is_best") == "true"]
    assert sorted(t.data.tags["camu.method"] for t in best) == ["finetune", "finetune", "throwaway", "throwaway"]
    for method in ("throwaway", "finetune"):
        version = client.get_model_version_by_alias(registered_model_name("camu-two", "owner", "class3", method), "candidate")
        assert version.tags["camu.method"] == method
        run_id = next(t for t in trials if t.info.run_name == f"class3/{method}/seed0/preset").info.run_id
        epochs = 2 if method == "throwaway" else 1
        objective = client.get_metric_history(run_id, "objective")
        assert sorted(m.step for m in objective) == list(range(epochs)) + [epochs]  # each epoch, then the final one
        fresh = client.get_metric_history(run_id, "epoch_fa")  # computed within a share of the unlearning time
        assert 1 <= len(fresh) <= epochs and min(m.step for m in fresh) == 0


def test_report_of_the_real_job_matches_results_by_method(job):
    """`camu-orch report` on the finished job: its table is `results --by method`, every figure drawn."""
    from tests.unit.test_report import _Page

    assert job["report"].exit_code == 0, job["report"].output
    assert "report: " in job["report"].output and "figures" in job["report"].output
    page = _Page()
    page.feed((job["work"] / "two.html").read_text())
    by = json.loads(job["by"].stdout)
    table = next(t for t in page.tables if t and t[0][:3] == ["method", "configuration", "trial"])
    assert [(r[0], r[1], r[2]) for r in table[1:]] == [
        ("oracle (retrain)" if r["method"] == "oracle" else r["method"], r["config"], r["trial_id"]) for r in by]
    header = table[0]
    fa = next(i for i, h in enumerate(header) if h.startswith("FA "))
    for cells, row in zip(table[1:], by):
        mean = row["fa"]
        assert cells[fa].startswith(f"{mean:.3f}" if abs(mean) < 1 else f"{mean:.2f}"), (cells, row)
    # trade-off, frontier, per-epoch curves, membership scores and the finetune sweep (preset + 2 trials)
    assert len(page.images) >= 5
    text = (job["work"] / "two.html").read_text()
    assert "Sweep: finetune" in text
