"""A small multi-objective job end to end through the real pipeline (local Ray, Tune with Optuna's
multi-objective TPE, MLflow): every configuration ranked on the job's objectives, the front in the summary
equal to an independent computation from the recorded objectives, the chosen configuration on it, the rank
and flag in the MLflow record, and the fronts in ``results --by method`` and the report."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.integration.conftest import in_job_folder

pytestmark = pytest.mark.integration

OBJECTIVES = ["forgetting", "utility", "time"]
JOB = {
    "name": "mo",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 3, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}],
    "seeds": [0, 1],
    "methods": [{"name": "finetune", "params": {"epochs": 1, "batch_size": 128},
                 "sweep": {"space": {"lr": {"loguniform": [1.0e-4, 1.0e-1]}}}},
                {"name": "retrain"}],
    "sweep": {"num_samples": 4, "objectives": OBJECTIVES, "choose": "knee"},
    "resources": {"num_workers": 0},
    "tracking": {"experiment": "mo"},
    "device": "cpu",
}


def brute_front(points: dict[str, list[float]]) -> set[str]:
    return {a for a, p in points.items() if all(math.isfinite(v) for v in p) and not any(
        all(x <= y for x, y in zip(q, p)) and any(x < y for x, y in zip(q, p))
        for b, q in points.items() if b != a and all(math.isfinite(v) for v in q))}


def knee(points: dict[str, list[float]], front: set[str]) -> str:
    """The front member farthest below the plane through the extreme members (objectives scaled to the
    front's range); a front of two or fewer: the member nearest the ideal point, scaled by every point's range."""
    import numpy as np

    names = sorted(front, key=list(points).index)
    values = np.array([points[n] for n in names])
    if len(names) <= 2:
        every = np.array([p for p in points.values() if all(math.isfinite(v) for v in p)])
        scaled = (values - every.min(0)) / np.where(np.ptp(every, 0) > 0, np.ptp(every, 0), 1)
        return names[int(np.argmin(np.linalg.norm(scaled, axis=1)))]
    scaled = (values - values.min(0)) / np.where(np.ptp(values, 0) > 0, np.ptp(values, 0), 1)
    ends = [int(np.argmin(scaled[:, k])) for k in range(scaled.shape[1])]
    w = np.linalg.solve(scaled[ends], np.ones(scaled.shape[1]))
    if (w <= 0).any():  # a plane that falls in some objective: the member nearest the ideal point
        every = np.array([p for p in points.values() if all(math.isfinite(v) for v in p)])
        scaled = (values - every.min(0)) / np.where(np.ptp(every, 0) > 0, np.ptp(every, 0), 1)
        return names[int(np.argmin(np.linalg.norm(scaled, axis=1)))]
    return names[int(np.argmax((1 - scaled @ w) / np.linalg.norm(w)))]


@pytest.fixture(scope="module")
def job(ray_cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("mo")
    (work / "mo.yaml").write_text(yaml.safe_dump(JOB))
    runner = CliRunner()
    with in_job_folder(work):
        submitted = runner.invoke(app, ["submit", "mo.yaml"])
        rows = runner.invoke(app, ["results", "mo", "--format", "json"])
        text = runner.invoke(app, ["results", "mo", "--by", "method"])
        report = runner.invoke(app, ["report", "mo", "-o", str(work / "mo.html")])
    from mlflow.tracking import MlflowClient

    return {"submitted": submitted, "rows": rows, "text": text, "report": report, "work": work,
            "client": MlflowClient(f"sqlite:///{work / 'mlflow.db'}")}


def test_the_front_and_the_choice(job):
    assert job["submitted"].exit_code == 0, job["submitted"].output[-3000:]
    rows = [r for r in json.loads(job["rows"].stdout) if r["method"] == "finetune"]
    first = {r["trial_id"]: r for r in rows if r["seed"] == 0}
    assert len(first) == 5  # the preset and four sweep trials, all on the selection seed
    points = {t: [r[f"obj_{o}"] if r["status"] == "finished" and r[f"obj_{o}"] is not None else math.nan
                  for o in OBJECTIVES] for t, r in first.items()}
    front = brute_front(points)
    assert front and {t for t, r in first.items() if r["is_pareto"]} == front
    chosen = [r for r in rows if r["is_best"]]
    assert sorted(r["seed"] for r in chosen) == [0, 1] and len({r["trial_id"] for r in chosen}) == 1
    assert chosen[0]["trial_id"] in front and chosen[0]["chosen_by"] == "knee of the front"
    assert chosen[0]["trial_id"] == knee(points, front)
    # every objective is what its definition says from the row's own selection-part gaps
    for r in first.values():
        if r["status"] == "finished":
            assert r["obj_utility"] == pytest.approx((r["gap_ra"] + r["gap_ta"] + r["gap_ta_retained"]) / 3)
            assert r["obj_forgetting"] == pytest.approx((r["gap_fa"] + r["gap_mia_official"]) / 2)
            assert r["obj_time"] == pytest.approx(r["unlearn_seconds"])


def test_the_record_carries_rank_flag_and_rule(job):
    client = job["client"]
    exp = client.get_experiment_by_name("mo@" + next(
        e.name.split("@", 1)[1] for e in client.search_experiments() if e.name.startswith("mo@")))
    runs = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial' and tags.`camu.method` = 'finetune'")
    assert runs and all("pareto_rank" in r.data.metrics and r.data.tags.get("camu.is_pareto") in ("true", "false")
                        for r in runs)
    chosen = [r for r in runs if r.data.tags.get("camu.chosen_by")]
    assert {r.data.tags["camu.chosen_by"] for r in chosen} == {"knee of the front"} and len(chosen) == 2
    assert all(r.data.tags["camu.is_pareto"] == "true" for r in chosen)
    assert all(f"obj_{o}" in r.data.metrics for r in runs if r.info.status == "FINISHED" for o in OBJECTIVES)


def test_results_and_report_show_the_fronts(job):
    text = job["text"].stdout
    assert job["text"].exit_code == 0, text
    assert "Pareto fronts on forgetting, utility, time" in text and "knee of the front" in text
    assert job["report"].exit_code == 0, job["report"].output
    page = (job["work"] / "mo.html").read_text()
    assert "<h3>Pareto fronts</h3>" in page and "Chosen by <b>knee of the front</b>" in page
    assert "<h3>Pareto fronts</h3><figure><img" in page  # the figure is drawn, not "Not drawn"
