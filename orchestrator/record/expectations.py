"""Jobs that check themselves: a job file's ``expect:`` targets (``orchestrator.job.spec.ExpectSpec``) against
what the job measured. ``camu-orch results JOB --check`` prints one row per target and exits 1 when one
is missed; the report shows the same rows per scenario.

A target reads one row of ``results.by_method``: the method's chosen configuration (``config == "best"``)
or, for ``original`` and ``oracle``, the reference; its metric's mean over the seeds must lie within the
target's tolerance of its value. A metric the job did not measure (NaN, or no such row) is a miss, said
as "not measured": a check that cannot be made never passes.

    targets = read_targets(tracker, run.info.run_id)
    checked = evaluate(targets, results.by_method(summary))
    print(render_check(checked)); print(met_line(checked))
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from orchestrator.job.messages import format_validation_error
from orchestrator.job.spec import ExpectSpec, JobSpecError
from orchestrator.tables import format_mean_std, render_table

JOB_FILE_ARTIFACT = "job.yaml"      # the job file as the job ran it (overrides applied, credentials redacted)
REFERENCES = ("original", "oracle")
COLUMNS = ("scenario", "method", "metric", "target", "measured", "seeds", "result", "source")
NOT_MEASURED = "not measured"
SLACK = 1e-9  # relative float rounding allowed at the tolerance's edge (|mean - value| computed in float64)


@dataclass(frozen=True)
class TargetResult:
    """One target with what the job measured for it: the mean and std over ``seeds`` seeds (NaN std for a
    single seed, NaN mean when the job did not measure it)."""

    target: ExpectSpec
    mean: float
    std: float
    seeds: int

    @property
    def measured(self) -> bool:
        """True when the job recorded a finite mean for the target's metric."""
        return self.mean is not None and math.isfinite(self.mean)

    @property
    def passed(self) -> bool:
        """Met: measured, and within the tolerance of the value (plus float rounding at the edge)."""
        if not self.measured:
            return False
        slack = SLACK * max(1.0, abs(self.target.value))
        return abs(self.mean - self.target.value) <= self.target.tolerance + slack


# ----------------------------------------------------------------------------- reading the targets
def parse_targets(raw: Any, source: str = JOB_FILE_ARTIFACT) -> list[ExpectSpec]:
    """The ``expect:`` targets of a job file's mapping (none when it has no such key). Only this key is
    validated: a recorded job file from an older camu-orch is still checkable."""
    if not isinstance(raw, dict) or raw.get("expect") is None:
        return []
    try:
        return TypeAdapter(list[ExpectSpec]).validate_python(raw["expect"])
    except ValidationError as err:
        raise JobSpecError(source, format_validation_error(err, "expect")) from None


def read_targets(tracker: Any, run_id: str) -> list[ExpectSpec]:
    """The targets of a job run, read from the ``job.yaml`` it logged (why: the record holds the job file
    as it ran, so the check needs no local copy and cannot drift from it). A run without that artifact
    is a ``LookupError``."""
    from orchestrator.job.jobfile import parse_yaml

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.download(run_id, JOB_FILE_ARTIFACT, tmp)
        except Exception as err:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise LookupError(f"run {run_id} has no {JOB_FILE_ARTIFACT} artifact ({str(err)[:200]}), so its "
                              f"expect: targets cannot be read") from None
        text = Path(path).read_text(encoding="utf-8")
    source = f"run {run_id} {JOB_FILE_ARTIFACT}"
    return parse_targets(parse_yaml(text, source), source)


# ----------------------------------------------------------------------------- checking
def _row_for(rows: list[dict[str, Any]], target: ExpectSpec) -> dict[str, Any] | None:
    """The ``by_method`` row a target reads: the chosen configuration, or the reference."""
    config = "reference" if target.method in REFERENCES else "best"
    return next((r for r in rows if r["scenario"] == target.scenario and r["method"] == target.method
                 and r["config"] == config), None)


def evaluate(targets: list[ExpectSpec], by_method: pa.Table) -> list[TargetResult]:
    """Each target with its measured mean +- std over the seeds (``by_method``: ``results.by_method``)."""
    rows = by_method.to_pylist()
    out = []
    for target in targets:
        row = _row_for(rows, target)
        if row is None or target.metric not in row:
            out.append(TargetResult(target, math.nan, math.nan, 0))
            continue
        mean, std = row[target.metric], row.get(f"{target.metric}_std")
        out.append(TargetResult(target, math.nan if mean is None else float(mean),
                                math.nan if std is None else float(std), int(row["seeds"])))
    return out


# ----------------------------------------------------------------------------- showing
def format_measured(mean: float, std: float) -> str:
    """``mean +- std`` as every table prints it (``orchestrator.tables``); ``not measured`` when missing."""
    if mean is None or not math.isfinite(mean):
        return NOT_MEASURED
    return format_mean_std(mean, std)


def cells(result: TargetResult) -> list[str]:
    """One target's row as text, in ``COLUMNS`` order (what the terminal and the report show)."""
    t = result.target
    return [t.scenario, t.method, t.metric, f"{t.value:g} +- {t.tolerance:g}", format_measured(result.mean, result.std),
            str(result.seeds), "PASS" if result.passed else "FAIL", t.source]


def render_check(results: list[TargetResult]) -> str:
    """A fixed-width text table of the targets (the source last, unpadded: it may be long)."""
    return render_table(COLUMNS, [cells(r) for r in results], pad_last=False)


def met_line(results: list[TargetResult]) -> str:
    """'N of M targets met'."""
    return f"{sum(r.passed for r in results)} of {len(results)} targets met"


def exit_code(results: list[TargetResult]) -> int:
    """0 when every target is met, 1 (the job failed its check) otherwise."""
    from orchestrator.errors import JOB_FAILED

    return 0 if all(r.passed for r in results) else JOB_FAILED
