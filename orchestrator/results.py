"""The job summary: one row per (scenario, method, trial), written to MLflow as Parquet and read
back by ``camu-orch results``. Column names are a contract scripts and dashboards rely on."""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from orchestrator.secrets import redact
from orchestrator.tracking import Tracker

METRIC_COLUMNS = ["ra", "fa", "ta", "ta_retained", "ta_forgotten", "mia_official", "mia_forget_member_rate",
                  "mia_auc", "avg_gap", "objective", "unlearn_seconds", "rte"]
SCHEMA = pa.schema([("scenario", pa.string()), ("method", pa.string()), ("trial_id", pa.string()),
                    ("seed", pa.int64()), ("is_best", pa.bool_()), ("status", pa.string())]
                   + [(c, pa.float64()) for c in METRIC_COLUMNS]
                   + [("run_id", pa.string()), ("params", pa.string())])
SUMMARY_ARTIFACT = "eval/summary.parquet"


class LogitsOnly(nn.Module):
    """The served form of a camu model: images in, logits out (the embedding is internal)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def _row(scenario: str, method: str, seed: int, trial_id: str, metrics: dict[str, Any], run_id: str | None,
         params: dict[str, Any] | None, status: str) -> dict[str, Any]:
    row = {"scenario": scenario, "method": method, "trial_id": trial_id, "seed": seed, "is_best": False,
           "status": status, "run_id": run_id or "", "params": json.dumps(params or {}, sort_keys=True, default=str)}
    for c in METRIC_COLUMNS:
        value = metrics.get(c)
        row[c] = float(value) if isinstance(value, (int, float)) else float("nan")
    return row


def reference_row(scenario: str, method: str, seed: int, metrics: dict[str, Any], run_id: str,
                  train_seconds: float) -> dict[str, Any]:
    """Row of the original or the oracle (for the oracle, unlearning = retraining: its time, RTE 1)."""
    m = dict(metrics)
    if method == "oracle":
        m["unlearn_seconds"], m["rte"] = train_seconds, 1.0
    return _row(scenario, method, seed, method, m, run_id, None, "finished")


def trial_row(scenario: str, method: str, seed: int, trial_id: str, metrics: dict[str, Any], run_id: str | None,
              params: dict[str, Any], failed: bool = False) -> dict[str, Any]:
    finished = bool(metrics.get("final")) and not failed
    status = "finished" if finished else ("failed" if failed else "stopped")
    return _row(scenario, method, seed, trial_id, metrics if finished else {}, run_id, params, status)


def mark_best(rows: list[dict[str, Any]], scenario: str) -> dict[str, Any] | None:
    """Flag the lowest-objective finished sweep trial per seed; return the scenario's overall best."""
    candidates = [r for r in rows if r["scenario"] == scenario and r["method"] == "camu" and r["status"] == "finished"
                  and not math.isnan(r["objective"])]
    best_overall = None
    for seed in sorted({r["seed"] for r in candidates}):
        best = min((r for r in candidates if r["seed"] == seed), key=lambda r: r["objective"])
        best["is_best"] = True
        if best_overall is None or best["objective"] < best_overall["objective"]:
            best_overall = best
    return best_overall


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


# ----------------------------------------------------------------------------- reading back
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def find_job_run(tracker: Tracker, ident: str) -> Any:
    """A job's parent run by run id, or the newest job run with that name across experiments."""
    where = f"in {redact(tracker.uri)}; check the name or pass --tracking-uri"
    if re.fullmatch(r"[0-9a-f]{32}", ident):
        try:
            run = tracker.client.get_run(ident)
        except Exception as err:
            raise LookupError(f"no run with id {ident} {where}") from err
        if run.data.tags.get("camu.role") != "job":
            raise LookupError(f"run {ident} is not a camu-orch job run (role {run.data.tags.get('camu.role', 'none')}); "
                              f"give the job's parent run id or its name")
        return run
    if not JOB_NAME.fullmatch(ident):
        raise LookupError(f"{ident[:80]!r} is neither a job name (letters, digits, _ . -) nor a 32-hex run id")
    experiments = [e.experiment_id for e in tracker.client.search_experiments()]
    runs = tracker.client.search_runs(experiments, f"tags.`camu.role` = 'job' and tags.`camu.job` = '{ident}'",
                                      max_results=1, order_by=["attributes.start_time DESC"]) if experiments else []
    if not runs:
        raise LookupError(f"no job run named {ident!r} {where}")
    return runs[0]


def load_summary(tracker: Tracker, ident: str) -> tuple[Any, pa.Table]:
    """(parent run, summary table) of a finished job."""
    run = find_job_run(tracker, ident)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.download(run.info.run_id, SUMMARY_ARTIFACT, tmp)
        except Exception as err:
            raise LookupError(f"job run {run.info.run_id} has no {SUMMARY_ARTIFACT} (status {run.info.status}); "
                              f"it did not finish") from err
        return run, pq.read_table(path)


def write_table(table: pa.Table, fmt: str, output: str | None) -> str | None:
    """Render ``table`` as table/json/parquet; returns text for stdout (None when written to a file)."""
    if fmt == "parquet":
        if not output:
            raise ValueError("--format parquet needs -o FILE")
        pq.write_table(table, output)
        return None
    if fmt == "json":
        text = json.dumps(table.to_pylist(), indent=2, default=_json_default)
    else:
        text = render_text(table)
    if output:
        Path(output).write_text(text)
        return None
    return text


def _json_default(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def render_text(table: pa.Table) -> str:
    """A fixed-width text table of the main columns (what a terminal shows)."""
    cols = ["scenario", "method", "trial_id", "seed", "is_best", "ra", "fa", "ta", "ta_retained", "ta_forgotten",
            "mia_official", "mia_auc", "avg_gap", "unlearn_seconds", "rte"]
    rows = [[_fmt(r[c]) for c in cols] for r in table.to_pylist()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, bool):
        return "*" if value else ""
    return str(value)
