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

from orchestrator.job.metrics import BY_METHOD_METRICS
from orchestrator.job.objectives import GAP_METRICS, OBJECTIVE_NAMES, gap_metric, objective_metric
from orchestrator.record.run_identity import Tag
from orchestrator.record.tracking import Tracker
from orchestrator.secrets import redact
from orchestrator.tables import format_mean_std, format_value, mean_and_std, render_table

METRIC_COLUMNS = ["ra", "fa", "ta", "ta_retained", "ta_forgotten", "mia_official", "mia_efficacy",
                  "mia_forget_member_rate", "mia_auc", "lira_auc", "lira_tpr_at_1pct_fpr", "avg_gap", "relearn_epochs",
                  "unlearn_seconds", "rte", "nonfinite_outputs",
                  # the selection part: what the choice of a configuration read (see camu.evaluation)
                  "sel_ra", "sel_fa", "sel_ta", "sel_mia_official", "sel_avg_gap", "objective", "selection_fraction",
                  # the named objectives and per-metric gaps (selection part; orchestrator.job.objectives) and the
                  # configuration's rank on its method's Pareto front (1: on it)
                  *(objective_metric(n) for n in OBJECTIVE_NAMES), *(gap_metric(m) for m in GAP_METRICS),
                  "pareto_rank"]
SCHEMA = pa.schema([("scenario", pa.string()), ("method", pa.string()), ("trial_id", pa.string()),
                    ("seed", pa.int64()), ("is_best", pa.bool_()), ("status", pa.string())]
                   + [(c, pa.float64()) for c in METRIC_COLUMNS]
                   + [("is_pareto", pa.bool_()), ("chosen_by", pa.string()),
                      ("run_id", pa.string()), ("params", pa.string())])
SUMMARY_ARTIFACT = "eval/summary.parquet"


def _row(scenario: str, method: str, seed: int, trial_id: str, metrics: dict[str, Any], run_id: str | None,
         params: dict[str, Any] | None, status: str) -> dict[str, Any]:
    row = {"scenario": scenario, "method": method, "trial_id": trial_id, "seed": seed, "is_best": False,
           "status": status, "is_pareto": False, "chosen_by": "", "run_id": run_id or "",
           "params": json.dumps(params or {}, sort_keys=True, default=str)}
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


def mark_chosen(rows: list[dict[str, Any]], scenario: str, method: str, trial_id: str) -> None:
    """Flag the chosen configuration of (scenario, method): its rows, one per seed."""
    for row in rows:
        if row["scenario"] == scenario and row["method"] == method:
            row["is_best"] = row["trial_id"] == trial_id and row["status"] == "finished"


def chosen_rows(rows: list[dict[str, Any]], scenario: str, method: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["scenario"] == scenario and r["method"] == method and r["is_best"]]


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


# ----------------------------------------------------------------------------- reading back
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def find_job_run(tracker: Tracker, ident: str) -> Any:
    """A job's parent run by run id, or by name: the newest job run of that name among the caller's own
    (tag ``camu.owner``), in one experiment. A name that only other owners' runs carry, or that the
    caller's runs carry in several experiments, is refused with the candidates' run ids: someone else's
    same-named job is never picked. A RUNNING job run whose driver is gone is marked FAILED on the way."""
    from orchestrator.record.liveness import close_if_driver_gone

    run = _job_run(tracker, ident)
    close_if_driver_gone(tracker, run)
    return run


def _job_run(tracker: Tracker, ident: str) -> Any:
    from orchestrator.record.identity import owner

    where = f"in {redact(tracker.uri)}; check the name or pass --tracking-uri"
    if re.fullmatch(r"[0-9a-f]{32}", ident):
        try:
            run = tracker.client.get_run(ident)
        except Exception as err:
            raise LookupError(f"no run with id {ident} {where}") from err
        if run.data.tags.get(Tag.ROLE) != "job":
            raise LookupError(f"run {ident} is not a camu-orch job run (role {run.data.tags.get(Tag.ROLE, 'none')}); "
                              f"give the job's parent run id or its name")
        return run
    if not JOB_NAME.fullmatch(ident):
        raise LookupError(f"{ident[:80]!r} is neither a job name (letters, digits, _ . -) nor a 32-hex run id")
    names = {e.experiment_id: e.name for e in tracker.client.search_experiments(max_results=50000)}
    me = owner()
    query = f"tags.`{Tag.ROLE}` = 'job' and tags.`{Tag.JOB}` = '{ident}'"
    search = (lambda q, n: tracker.client.search_runs(list(names), q, max_results=n,
                                                      order_by=["attributes.start_time DESC"]) if names else [])
    # the caller's own: tagged with their name, in an experiment of their namespace (``<experiment>@<owner>``)
    # or of a job that asked for a shared record; a tag alone is anyone's to set
    mine = [r for r in search(f"{query} and tags.`{Tag.OWNER}` = '{me}'", 1000)
            if r.data.tags.get(Tag.NAMESPACE) == "shared" or names.get(r.info.experiment_id, "").endswith(f"@{me}")]
    runs = mine or search(query, 20)
    if not runs:
        raise LookupError(f"no job run named {ident!r} {where}")
    if not mine:
        raise LookupError(f"no job run named {ident!r} is yours ({me}) {where}; runs of that name by other owners "
                          f"(give a run id to read one):\n" + _candidates(tracker, runs))
    if len({r.info.experiment_id for r in mine}) > 1:
        raise LookupError(f"your job runs named {ident!r} are in several experiments; give the run id of the one "
                          f"you mean:\n" + _candidates(tracker, mine))
    return mine[0]


def _candidates(tracker: Tracker, runs: list[Any], limit: int = 10) -> str:
    """One line per run: id, owner, experiment, start time, status (newest first)."""
    import datetime

    names: dict[str, str] = {}
    lines = []
    for run in runs[:limit]:
        exp = run.info.experiment_id
        if exp not in names:
            names[exp] = tracker.client.get_experiment(exp).name
        started = datetime.datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
        lines.append(f"  {run.info.run_id}  owner {run.data.tags.get(Tag.OWNER, '?')}  experiment {names[exp]!r}  "
                     f"started {started}  {run.info.status}")
    if len(runs) > limit:
        lines.append(f"  ... and {len(runs) - limit} more")
    return "\n".join(lines)


def load_summary(tracker: Tracker, ident: str) -> tuple[Any, pa.Table]:
    """(parent run, summary table) of a finished job."""
    run = find_job_run(tracker, ident)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.download(run.info.run_id, SUMMARY_ARTIFACT, tmp)
        except Exception as err:
            raise LookupError(f"job run {run.info.run_id} has no {SUMMARY_ARTIFACT} (status {run.info.status}); "
                              f"it did not finish") from err
        return run, conform(pq.read_table(path))


def conform(table: pa.Table) -> pa.Table:
    """A summary in today's ``SCHEMA``: columns that a job recorded by an older camu-orch lacks are added
    (metrics NaN, ``is_pareto`` false, ``chosen_by`` empty), so every reader sees the same columns."""
    defaults = {pa.float64(): float("nan"), pa.bool_(): False, pa.string(): ""}
    columns = []
    for field in SCHEMA:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.array([defaults.get(field.type)] * table.num_rows, type=field.type))
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def write_table(table: pa.Table, fmt: str, output: str | None, render: Any = None) -> str | None:
    """Render ``table`` as table/json/parquet; returns text for stdout (None when written to a file)."""
    if fmt == "parquet":
        if not output:
            raise ValueError("--format parquet needs -o FILE")
        pq.write_table(table, output)
        return None
    if fmt == "json":
        text = json.dumps(table.to_pylist(), indent=2, default=_json_default)
    else:
        text = (render or render_text)(table)
    if output:
        Path(output).write_text(text)
        return None
    return text


def _json_default(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def render_text(table: pa.Table) -> str:
    """A fixed-width text table of the main columns (what a terminal shows)."""
    cols = ["scenario", "method", "trial_id", "seed", "is_best", "ra", "fa", "ta", "ta_retained", "ta_forgotten",
            "mia_official", "mia_efficacy", "mia_auc", "avg_gap", "objective", "unlearn_seconds", "rte"]
    cols += [c for c in ("lira_auc", "relearn_epochs") if any(not _missing(v) for v in table.column(c).to_pylist())]
    return render_table(cols, [[format_value(r[c]) for c in cols] for r in table.to_pylist()])


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ----------------------------------------------------------------------------- one row per method

def by_method(table: pa.Table) -> pa.Table:
    """One row per (scenario, method, configuration): the chosen configuration (``best``) and, when it is
    not the preset, the preset too; original and oracle as references. Each metric is the mean over
    the job's seeds with its standard deviation (NaN for a single seed: no spread is claimed)."""
    rows = table.to_pylist()
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        scoped = [r for r in rows if r["scenario"] == scenario]
        for method in dict.fromkeys(r["method"] for r in scoped):
            mine = [r for r in scoped if r["method"] == method]
            trials = len({r["trial_id"] for r in mine})
            groups = [("best", [r for r in mine if r["is_best"]])] if method not in ("original", "oracle") else \
                [("reference", mine)]
            best_id = groups[0][1][0]["trial_id"] if groups[0][1] else None
            if best_id not in (None, "preset") and method not in ("original", "oracle"):
                groups.append(("preset", [r for r in mine if r["trial_id"] == "preset" and r["status"] == "finished"]))
            for config, chosen in groups:
                if chosen:
                    out.append(_aggregate(scenario, method, config, chosen, trials))
    return pa.Table.from_pylist(out, schema=BY_METHOD_SCHEMA)


def _aggregate(scenario: str, method: str, config: str, chosen: list[dict[str, Any]], trials: int) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": scenario, "method": method, "config": config,
                           "trial_id": chosen[0]["trial_id"], "seeds": len(chosen), "trials": trials,
                           "is_pareto": bool(chosen[0].get("is_pareto")), "chosen_by": chosen[0].get("chosen_by") or ""}
    for metric in BY_METHOD_METRICS:
        values = [r[metric] for r in chosen if r[metric] is not None and not math.isnan(r[metric])]
        full = len(values) == len(chosen) and values
        row[metric], row[f"{metric}_std"] = mean_and_std(values) if full else (math.nan, math.nan)
    return row


BY_METHOD_SCHEMA = pa.schema([("scenario", pa.string()), ("method", pa.string()), ("config", pa.string()),
                              ("trial_id", pa.string()), ("seeds", pa.int64()), ("trials", pa.int64())]
                             + [f for m in BY_METHOD_METRICS for f in ((m, pa.float64()), (f"{m}_std", pa.float64()))]
                             + [("is_pareto", pa.bool_()), ("chosen_by", pa.string())])


def render_by_method(table: pa.Table) -> str:
    """Fixed-width text: ``mean +- std`` over seeds, a plain value for a single seed."""
    cols = ["scenario", "method", "config", "trial_id", "seeds", "trials"] + BY_METHOD_METRICS
    rows = [[format_mean_std(r[c], r[f"{c}_std"], same_decimals=False) if c in BY_METHOD_METRICS
             else format_value(r[c]) for c in cols] for r in table.to_pylist()]
    return render_table(cols, rows)
