"""200 trials of a small method (in-process, concurrency 2) complete with an intact MLflow record:
200 sweep trial runs, none left RUNNING, one summary with every trial, read back by `results`; the
benchmark's report (Tune's and MLflow's share) is printed."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_hundred_trials(tmp_path):
    from benchmarks.sweep_scale import job, measure, report

    found = measure(job(200, "finetune", 2, "none", None, 1), tmp_path)
    summary = report(found, 2)
    print(json.dumps(summary, indent=2))
    assert summary["trial_runs"] == 200
    assert summary["running_left"] == 0 and summary["killed_or_failed"] == 0
    rows = found["rows"]
    assert sum(r["method"] == "finetune" and not r["trial_id"].startswith("preset") for r in rows) == 200
    assert sum(r["status"] == "finished" for r in rows if r["method"] == "finetune") == 201  # + the preset
    assert len({r["trial_id"] for r in rows if r["method"] == "finetune"}) == 201
