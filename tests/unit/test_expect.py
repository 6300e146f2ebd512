"""Jobs that check themselves: a job's ``expect:`` targets against a real sqlite MLflow store holding finished
job runs recorded the way the pipeline records them (parent run tags, ``eval/summary.parquet``, ``job.yaml``).
``results --check`` exits 1 when a target is missed and 0 when all are met; validation refuses a target
naming an unknown scenario, method or metric."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.record import summary as results

runner = CliRunner()
SEEDS = (0, 1)
CAMU_FA = {0: 1.25, 1: 2.75}          # camu's chosen configuration (its preset) per seed
ORACLE_RA = {0: 99.10, 1: 98.70}
JOB: dict[str, Any] = {
    "name": "checked", "dataset": {"name": "digits"}, "model": {"name": "mnist_cnn"},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}], "seeds": list(SEEDS),
    "methods": [{"name": "camu"}], "device": "cpu",
}
PASSING = {"scenario": "class3", "method": "camu", "metric": "fa", "value": 2.5, "tolerance": 0.5,
           "source": "official run"}
FAILING = {"scenario": "class3", "method": "oracle", "metric": "ra", "value": 95.0, "tolerance": 1.0,
           "source": "paper Table 2"}


def _metrics(seed: int, **values: float) -> dict[str, float]:
    return {"ra": 97.0 + seed, "fa": 10.0, "ta": 96.0, "mia_official": 0.5, "avg_gap": 3.0, "final": 1.0, **values}


def _summary() -> Any:
    rows = []
    for seed in SEEDS:
        rows.append(results.reference_row("class3", "original", seed, _metrics(seed, fa=99.0), "r-orig", 0.0))
        rows.append(results.reference_row("class3", "oracle", seed, _metrics(seed, ra=ORACLE_RA[seed], fa=0.0),
                                          "r-oracle", 30.0))
        rows.append(results.trial_row("class3", "camu", seed, "preset", _metrics(seed, fa=CAMU_FA[seed]),
                                      None, {"lr_out": 1e-3}))  # no trial runs here: the report reads no curves
    rows.append(results.trial_row("class3", "camu", 0, "t0", _metrics(0, fa=30.0), None, {"lr_out": 1e-2}))
    results.mark_chosen(rows, "class3", "camu", "preset")
    return results.to_table(rows)


def _record(tracker: Any, experiment: str, name: str, job: dict[str, Any]) -> str:
    """One finished job run as ``pipeline.run_job`` leaves it."""
    from orchestrator.record.identity import run_identity_tags

    run = tracker.find_or_create_run(experiment, name, {"camu.role": "job", "camu.job": name,
                                                        "camu.submission": f"s-{name}", **run_identity_tags()},
                                     key=f"job:{name}:s-{name}")
    tracker.log_text(run, yaml.safe_dump({**job, "name": name}, sort_keys=False), "job.yaml")
    tracker.log_parquet(run, _summary(), results.SUMMARY_ARTIFACT)
    tracker.end(run, "FINISHED")
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from orchestrator.record.tracking import Tracker

    folder = tmp_path_factory.mktemp("expect-store")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    from orchestrator.record.identity import experiment_name

    experiment = tracker.experiment(experiment_name("expect", "owner"))
    _record(tracker, experiment, "checked", {**JOB, "expect": [PASSING, FAILING]})
    _record(tracker, experiment, "met", {**JOB, "expect": [PASSING]})
    _record(tracker, experiment, "unchecked", JOB)
    _record(tracker, experiment, "unmeasured", {**JOB, "expect": [{**PASSING, "metric": "mia_efficacy"}]})
    return tracker.uri


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _measured(values: list[float]) -> str:
    """mean +- sample std over the seeds, written as the table writes it (3 decimals below 1, else 2)."""
    mean, std = statistics.mean(values), statistics.stdev(values)
    digits = 3 if abs(mean) < 1 else 2
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def _row(output: str, method: str, metric: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.split()[:3] == ["class3", method, metric])
    return line.split()


def test_a_missed_target_exits_1_with_pass_and_fail_rows(store, workdir):
    result = runner.invoke(app, ["results", "checked", "--check", "--tracking-uri", store])
    assert result.exit_code == 1, result.output
    header = result.output.splitlines()[0].split()
    assert header == ["scenario", "method", "metric", "target", "measured", "seeds", "result", "source"]
    camu, oracle = _row(result.output, "camu", "fa"), _row(result.output, "oracle", "ra")
    camu_measured = _measured([CAMU_FA[s] for s in SEEDS])          # 2.00 +- 1.06: within 2.5 +- 0.5
    oracle_measured = _measured([ORACLE_RA[s] for s in SEEDS])      # 98.90 +- 0.28: not within 95 +- 1
    assert " ".join(camu[3:]) == f"2.5 +- 0.5 {camu_measured} 2 PASS official run"
    assert " ".join(oracle[3:]) == f"95 +- 1 {oracle_measured} 2 FAIL paper Table 2"
    assert "1 of 2 targets met" in result.output
    assert "Traceback" not in result.output


def test_all_targets_met_exits_0(store, workdir):
    result = runner.invoke(app, ["results", "met", "--check", "--tracking-uri", store])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "FAIL" not in result.output
    assert "1 of 1 targets met" in result.output


def test_a_job_without_targets_says_so_and_exits_0(store, workdir):
    result = runner.invoke(app, ["results", "unchecked", "--check", "--tracking-uri", store])
    assert result.exit_code == 0, result.output
    assert "has no expect: targets" in result.output


def test_a_metric_not_measured_is_a_miss(store, workdir):
    result = runner.invoke(app, ["results", "unmeasured", "--check", "--tracking-uri", store])
    assert result.exit_code == 1, result.output
    assert "not measured" in result.output and "FAIL" in result.output and "0 of 1 targets met" in result.output


def test_check_of_an_unknown_job_or_with_an_output_format_is_bad_input(store, workdir):
    unknown = runner.invoke(app, ["results", "nope", "--check", "--tracking-uri", store])
    assert unknown.exit_code == 2 and "no job run named 'nope'" in unknown.output
    as_json = runner.invoke(app, ["results", "checked", "--check", "--format", "json", "--tracking-uri", store])
    assert as_json.exit_code == 2 and "--check" in as_json.output


def test_the_summary_without_check_is_unchanged(store, workdir):
    result = runner.invoke(app, ["results", "checked", "--by", "method", "--tracking-uri", store])
    assert result.exit_code == 0 and "PASS" not in result.output and "camu" in result.output


def test_the_report_reads_the_targets_from_the_job_run(store, workdir):
    from orchestrator.record.report import build_report
    from orchestrator.record.tracking import open_store

    build_report(open_store(store), "checked", workdir / "report.html", log=False)
    text = (workdir / "report.html").read_text()
    assert "<h3>Targets</h3>" in text and "1 of 2 targets met" in text
    assert ">PASS<" in text and ">FAIL<" in text and _measured([ORACLE_RA[s] for s in SEEDS]) in text
    build_report(open_store(store), "unchecked", workdir / "plain.html", log=False)
    assert "<h3>Targets</h3>" not in (workdir / "plain.html").read_text()


def test_tolerance_edge_and_single_seed():
    from orchestrator.job.spec import ExpectSpec
    from orchestrator.record.expectations import TargetResult, cells

    target = ExpectSpec(**{**PASSING, "value": 0.3, "tolerance": 0.1})
    assert TargetResult(target, 0.2, float("nan"), 1).passed  # 0.3 - 0.2 > 0.1 in float64, yet on the edge
    assert not TargetResult(target, 0.19, float("nan"), 1).passed
    assert cells(TargetResult(target, 0.2, float("nan"), 1))[4] == "0.200"  # one seed: no spread claimed


# ---------------------------------------------------------------------- validation
def test_validation_lists_every_bad_target_at_once(tmp_path, workdir):
    bad = {**JOB, "expect": [
        {**PASSING, "scenario": "class4"},
        {**PASSING, "metric": "acc"},
        {**PASSING, "method": "scrub"},
        {**PASSING, "tolerance": -1},
        {**PASSING, "source": "  "},
        {**FAILING, "metric": "lira_auc"},
        PASSING,
    ]}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = runner.invoke(app, ["validate", str(path), "--no-data"])
    assert result.exit_code == 2, result.output
    for expected in ("expect.0.scenario: unknown scenario 'class4'; choose one of this job's scenarios: class3",
                     "expect.1.metric: unknown metric 'acc'; choose one of ra, fa, ta",
                     ("expect.2.method: unknown method 'scrub'; choose one of this job's methods or a reference: "
                      "camu, original, oracle"),
                     "expect.3.tolerance:", "expect.4.source: empty",
                     "expect.5.metric: lira_auc is measured only with evaluation.privacy"):
        assert expected in result.output, result.output
    assert "expect.6" not in result.output
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**JOB, "expect": [PASSING, FAILING]}))
    assert runner.invoke(app, ["validate", str(good), "--no-data"]).exit_code == 0


def test_a_method_limited_to_other_scenarios_is_refused(tmp_path, workdir):
    from orchestrator.job.spec import JobSpecError
    from orchestrator.job.validate import check_job

    job = {**JOB, "scenarios": [*JOB["scenarios"], {"name": "random10", "kind": "random", "fraction": 0.1}],
           "methods": [{"name": "camu", "scenarios": ["random10"]}], "expect": [PASSING]}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    with pytest.raises(JobSpecError) as err:
        check_job(path, check_data=False)
    assert err.value.errors == [("expect.0.method: camu does not run on scenario class3 (its scenarios: "
                                 "random10); add the scenario to the method or target another")]
