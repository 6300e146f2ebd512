"""The sweep objective and best-trial selection: average gap to the oracle, guarded by floors."""

from __future__ import annotations

import math
from collections.abc import Mapping

from camu.metrics import average_gap

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
