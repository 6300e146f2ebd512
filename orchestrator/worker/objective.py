"""The sweep objective: the average gap to the oracle, guarded by floors (which configuration is chosen from the
objectives: ``orchestrator.driver.choice``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from camu.metrics import average_gap
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
