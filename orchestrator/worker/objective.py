"""The sweep objective: the average gap to the oracle, guarded by floors; and the named objectives of a
multi-objective sweep (``orchestrator.job.objectives``) with the per-metric gaps a constraint may limit. Which
configuration is chosen from them: ``orchestrator.driver.choice``."""

from __future__ import annotations

import math
from collections.abc import Mapping

from camu.metrics import FRACTION_KEYS, average_gap
from orchestrator.job.objectives import GAP_METRICS, OBJECTIVE_GAPS, gap_metric, objective_metric
from orchestrator.job.spec import ObjectiveSpec

OBJECTIVE = "objective"  # Tune metric name; mode "min"


def objective(metrics: Mapping[str, float], oracle: Mapping[str, float], ra_max_drop: float,
              ta_retained_max_drop: float, penalty: float, keys: tuple[str, ...] | None = None) -> tuple[float, float]:
    """(average gap, objective). The objective equals the gap unless RA or retained-class test accuracy
    fell more than the allowed drop below the oracle's, in which case ``penalty`` is added: a collapsed
    model (which trivially forgets) can never beat a healthy one."""
    gap = average_gap(metrics, oracle, keys) if keys else average_gap(metrics, oracle)
    if math.isnan(gap):
        return gap, penalty * 10
    floors = [("ra", ra_max_drop), ("ta_retained", ta_retained_max_drop)]
    below = any(k in metrics and k in oracle and metrics[k] < oracle[k] - drop for k, drop in floors)
    return gap, gap + (penalty if below else 0.0)


def _part(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}


def score(metrics: Mapping[str, float], oracle: Mapping[str, float], spec: ObjectiveSpec) -> dict[str, float]:
    """A run against its oracle: ``avg_gap`` on the report part (what the summary reports), and on the
    selection part ``sel_avg_gap`` and the ``objective`` (with the floors) that sweeps and the choice
    of a configuration use. Without a selection part (``sel_*`` absent) both use the same numbers."""
    report_gap = average_gap(metrics, oracle)
    sel, sel_oracle = _part(metrics, "sel_"), _part(oracle, "sel_")
    if not sel or not sel_oracle:
        sel, sel_oracle = dict(metrics), dict(oracle)
    sel_gap, value = objective(sel, sel_oracle, spec.ra_max_drop, spec.ta_retained_max_drop, spec.penalty)
    return {"avg_gap": report_gap, "sel_avg_gap": sel_gap, OBJECTIVE: value}


OPTIONAL_GAPS = frozenset({"ta_retained"})  # defined only where a class is removed; averaged in where it is


def _selection(metrics: Mapping[str, float], oracle: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    sel, sel_oracle = _part(metrics, "sel_"), _part(oracle, "sel_")
    return (sel, sel_oracle) if sel and sel_oracle else (dict(metrics), dict(oracle))


def objective_values(metrics: Mapping[str, float], oracle: Mapping[str, float]) -> dict[str, float]:
    """A finished run's named objectives (``obj_<name>``) and selection-part gaps to the oracle
    (``gap_<metric>``), all minimised; a value that cannot be measured (the privacy objective without the
    per-example attack, a gap whose metric is undefined on either side) is absent (NaN in the summary)."""
    sel, sel_oracle = _selection(metrics, oracle)
    out: dict[str, float] = {}
    for key in GAP_METRICS:
        a, b = float(sel.get(key, math.nan)), float(sel_oracle.get(key, math.nan))
        out[gap_metric(key)] = abs(a - b) * (100.0 if key in FRACTION_KEYS else 1.0)
    for name, keys in OBJECTIVE_GAPS.items():
        gaps = [out[gap_metric(k)] for k in keys]
        required = [g for k, g in zip(keys, gaps, strict=True) if k not in OPTIONAL_GAPS]
        used = [g for g in gaps if math.isfinite(g)]
        out[objective_metric(name)] = sum(used) / len(used) if all(map(math.isfinite, required)) else math.nan
    lira = float(metrics.get("lira_auc", math.nan))
    out[objective_metric("privacy")] = abs(lira - 0.5) * 100.0
    out[objective_metric("time")] = float(metrics.get("unlearn_seconds", math.nan))
    return {k: v for k, v in out.items() if math.isfinite(v)}  # an unmeasurable value is left out, not NaN


def with_objective_values(metrics: Mapping[str, float], oracle: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` with its objective values, computed when absent (a run recorded by an older camu-orch)."""
    if not metrics or any(k.startswith("obj_") for k in metrics):
        return dict(metrics)
    return {**metrics, **objective_values(metrics, oracle)}
