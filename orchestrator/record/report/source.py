"""What a report is drawn from: the job's summary table (one row per scenario, method, trial, seed)
and, read from the MLflow store, what the summary does not hold: each chosen configuration's
per-epoch curves, relearning curves (FA per epoch; the gap acc(D_r) - acc(D_f) per batch on every seed)
and per-sample forget-set scores, and the oracle's.

``ReportSource.from_summary`` builds one from a summary table alone (figures that need the store
then say so); ``load_source`` reads everything from a finished (or interrupted) job's run tree.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orchestrator.record import summary
from orchestrator.record.run_identity import Tag
from orchestrator.record.tracking import Tracker

REFERENCES = ("original", "oracle")
Curve = list[tuple[int, float]]


@dataclass
class MethodDetail:
    """The chosen configuration of one method on the first seed, as the store recorded it."""

    run_id: str
    trial_id: str
    epoch_fa: Curve = field(default_factory=list)   # selection part, after every epoch
    epoch_ra: Curve = field(default_factory=list)
    relearn_fa: Curve = field(default_factory=list)  # FA while relearning on D_r (when the job asked)
    # seed -> (batch, acc(D_r) - acc(D_f)) while relearning, the chosen configuration on every seed
    # (when the job asked: evaluation.relearn.gap_every_batches)
    relearn_gap: dict[int, Curve] = field(default_factory=dict)
    forget_scores: np.ndarray | None = None          # membership score on D_f (report part)


@dataclass
class ScenarioData:
    name: str
    kind: str                      # classes | random | ... (the scenario registry's kinds)
    rows: list[dict[str, Any]]     # this scenario's summary rows
    run_id: str = ""
    seed: int = 0                  # the seed the sweep ran on (details are read on it)
    details: dict[str, MethodDetail] = field(default_factory=dict)
    reference_relearn: dict[str, Curve] = field(default_factory=dict)  # original / oracle
    reference_gap: dict[str, dict[int, Curve]] = field(default_factory=dict)  # original / oracle -> seed -> curve
    oracle_forget_scores: np.ndarray | None = None
    oracle_test_scores: np.ndarray | None = None
    objectives: list[str] = field(default_factory=list)  # sweep.objectives (empty: the scalar objective alone)
    choose: str = ""                                     # the rule of sweep.choose, as the report words it

    @property
    def class_removal(self) -> bool:
        return self.kind == "classes"

    @property
    def methods(self) -> list[str]:
        """Unlearning methods in job order (references and retrain, which is the oracle, excluded)."""
        return [m for m in dict.fromkeys(r["method"] for r in self.rows) if m not in (*REFERENCES, "retrain")]


@dataclass
class ReportSource:
    job: str
    summary: pa.Table
    scenarios: list[ScenarioData]
    parent_run_id: str = ""
    experiment_id: str = ""
    tracking_uri: str = ""
    status: str = "FINISHED"
    notes: list[str] = field(default_factory=list)  # what the report could not read, said on its first page
    expect: list[Any] = field(default_factory=list)  # the job's expect: targets (orchestrator.job.spec.ExpectSpec)

    @classmethod
    def from_summary(cls, summary: pa.Table, job: str = "job", kinds: dict[str, str] | None = None,
                     objectives: list[str] | None = None, choose: str = "", **info: Any) -> ReportSource:
        """A source with the summary only: tables, trade-off, frontier, Pareto and sweep figures; no curves."""
        rows = summary.to_pylist()
        scenarios = [ScenarioData(name, (kinds or {}).get(name) or _guess_kind(scoped), scoped,
                                  seed=_sweep_seed(scoped), objectives=list(objectives or []), choose=choose)
                     for name in dict.fromkeys(r["scenario"] for r in rows)
                     for scoped in [[r for r in rows if r["scenario"] == name]]]
        return cls(job, summary, scenarios, **info)


def _guess_kind(rows: list[dict[str, Any]]) -> str:
    """Class removal leaves a forgotten-class test accuracy; random removal has none."""
    return "classes" if any(_finite(r.get("ta_forgotten")) for r in rows) else "random"


def _sweep_seed(rows: list[dict[str, Any]]) -> int:
    """The seed the sweeps ran on: the one with the most trials (presets alone run on the others)."""
    trials: dict[int, int] = {}
    for r in rows:
        if r["method"] not in REFERENCES:
            trials[r["seed"]] = trials.get(r["seed"], 0) + 1
    return max(sorted(trials), key=lambda s: trials[s]) if trials else min((r["seed"] for r in rows), default=0)


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def membership_score(true_prob: np.ndarray) -> np.ndarray:
    """The logit-scaled true-class confidence log(p / (1 - p)) that LiRA-style attacks threshold."""
    p = np.clip(true_prob.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _scores(table: pa.Table, split: str) -> np.ndarray:
    mask = pc.and_(pc.equal(table["split"], split), pc.equal(table["set"], "report"))
    return membership_score(table.filter(mask).column("true_prob").to_numpy())


# ----------------------------------------------------------------------------- from the store
def load_source(tracker: Tracker, ident: str) -> ReportSource:
    """Everything a report shows about job ``ident`` (name or parent run id)."""
    parent = summary.find_job_run(tracker, ident)
    run_id, experiment_id = parent.info.run_id, parent.info.experiment_id
    children = [r for r in tracker.list_child_runs(experiment_id, run_id) if r.data.tags.get(Tag.ROLE) == "scenario"]
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        table = _summary(tracker, run_id, children, Path(tmp), notes)
        kinds = {c.data.tags.get(Tag.SCENARIO, c.info.run_name): c.data.params.get("scenario.kind") for c in children}
        objectives = [o for o in parent.data.tags.get(Tag.OBJECTIVES, "").split(",") if o]
        source = ReportSource.from_summary(table, parent.data.tags.get(Tag.JOB, ident), kinds, objectives,
                                           parent.data.tags.get(Tag.CHOOSE, ""), parent_run_id=run_id,
                                           experiment_id=experiment_id,
                                           tracking_uri=tracker.uri, status=parent.info.status, notes=notes)
        by_name = {c.data.tags.get(Tag.SCENARIO, c.info.run_name): c for c in children}
        for sc in source.scenarios:
            child = by_name.get(sc.name)
            sc.run_id = child.info.run_id if child else ""
            _details(tracker, sc, Path(tmp), notes)
    source.expect = _targets(tracker, run_id, notes)
    if parent.info.status != "FINISHED":
        notes.insert(0, f"the job run is {parent.info.status}: this report shows what it recorded before it ended")
    return source


def _targets(tracker: Tracker, run_id: str, notes: list[str]) -> list[Any]:
    """The job's expect: targets from its logged job.yaml; a job run without a readable one has none
    (said in the notes when the file is there but its targets cannot be read)."""
    from orchestrator.job.spec import JobSpecError
    from orchestrator.record.expectations import read_targets

    try:
        return read_targets(tracker, run_id)
    except LookupError:
        return []
    except JobSpecError as err:
        notes.append(f"the job's expect: targets cannot be read ({'; '.join(err.errors)[:300]})")
        return []


def _summary(tracker: Tracker, run_id: str, children: list[Any], tmp: Path, notes: list[str]) -> pa.Table:
    """The job's summary, else the summaries its finished scenarios wrote (an interrupted job)."""
    with contextlib.suppress(Exception):  # MLflow raises several types for a missing artifact
        return summary.conform(pq.read_table(tracker.download(run_id, summary.SUMMARY_ARTIFACT, tmp / "job")))
    tables = []
    for child in children:
        try:
            tables.append(pq.read_table(tracker.download(child.info.run_id, summary.SUMMARY_ARTIFACT,
                                                         tmp / child.info.run_id)))
        except Exception:  # noqa: BLE001
            notes.append(f"scenario {child.info.run_name} did not finish: it is not in this report")
    if not tables:
        raise LookupError(f"job run {run_id} has no summary yet (no scenario finished): nothing to report")
    notes.append("the job did not write its summary: this report is built from the scenarios that finished")
    return pa.concat_tables([summary.conform(t) for t in tables])


def _gap_curves(tracker: Tracker, first: dict[str, Any], chosen: list[dict[str, Any]]) -> dict[int, Curve]:
    """seed -> relearning gap curve of a method's chosen configuration, from its run on every seed (the
    sweep seed's first: without one there, the job did not ask for the gap and no other run is read)."""
    curve = tracker.metric_history(first["run_id"], "relearn_gap")
    if not curve:
        return {}
    out = {first["seed"]: curve}
    for row in sorted(chosen, key=lambda r: r["seed"]):
        if row["seed"] not in out and (c := tracker.metric_history(row["run_id"], "relearn_gap")):
            out[row["seed"]] = c
    return out


def _details(tracker: Tracker, sc: ScenarioData, tmp: Path, notes: list[str]) -> None:
    """Curves and forget-set scores of each method's chosen configuration, and the oracle's."""
    for method in sc.methods:
        chosen = [r for r in sc.rows if r["method"] == method and r["is_best"] and r["run_id"]]
        if not chosen:
            continue
        row = next((r for r in chosen if r["seed"] == sc.seed), min(chosen, key=lambda r: r["seed"]))
        detail = MethodDetail(row["run_id"], row["trial_id"])
        detail.epoch_fa = tracker.metric_history(row["run_id"], "epoch_fa")
        detail.epoch_ra = tracker.metric_history(row["run_id"], "epoch_ra")
        detail.relearn_fa = tracker.metric_history(row["run_id"], "relearn_fa")
        detail.relearn_gap = _gap_curves(tracker, row, chosen)
        try:
            samples = pq.read_table(tracker.download(row["run_id"], "eval/samples.parquet", tmp / row["run_id"]))
            detail.forget_scores = _scores(samples, "forget")
        except Exception:  # noqa: BLE001
            notes.append(f"{sc.name}/{method}: no per-sample table in run {row['run_id']}")
        sc.details[method] = detail
    if not sc.run_id:
        return
    for name in REFERENCES:
        sc.reference_relearn[name] = tracker.metric_history(sc.run_id, f"{name}.seed{sc.seed}.relearn_fa")
        first = tracker.metric_history(sc.run_id, f"{name}.seed{sc.seed}.relearn_gap")
        if first:  # a job that did not ask for the gap has it on no seed: one look-up, not one per seed
            seeds = sorted({r["seed"] for r in sc.rows if r["method"] == name} - {sc.seed})
            sc.reference_gap[name] = {sc.seed: first, **{
                s: c for s in seeds if (c := tracker.metric_history(sc.run_id, f"{name}.seed{s}.relearn_gap"))}}
    try:
        oracle = pq.read_table(tracker.download(sc.run_id, f"eval/oracle-seed{sc.seed}.parquet", tmp / sc.run_id))
        sc.oracle_forget_scores, sc.oracle_test_scores = _scores(oracle, "forget"), _scores(oracle, "test")
    except Exception:  # noqa: BLE001
        notes.append(f"{sc.name}: no per-sample table of the oracle (seed {sc.seed})")
