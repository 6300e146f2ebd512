"""The choice of a method's configuration (pure): the best sweep candidate on the selection seed is the
non-preset configuration with the lowest finite objective; after it ran on every seed, it is chosen over the
preset only when its mean objective over the seeds is lower. A configuration missing a finite objective on
any seed never wins (its mean is infinite), so a seed that failed cannot make a configuration look better."""

from __future__ import annotations

import math
from collections.abc import Sequence

from camu.methods import MethodParams
from orchestrator.job.presets import PRESET_TRIAL
from orchestrator.tables import mean_and_std

Candidate = tuple[float, str, MethodParams]
"""(objective on the selection seed, trial id, parameters)."""


def best_candidate(candidates: Sequence[Candidate]) -> Candidate | None:
    """The non-preset candidate with the lowest finite objective (the first of equals), or None."""
    contenders = [c for c in candidates if c[1] != PRESET_TRIAL and math.isfinite(c[0])]
    return min(contenders, key=lambda c: c[0]) if contenders else None


def mean_objective(objectives: Sequence[float]) -> float:
    """The mean objective over seeds; infinite when there is none or a seed has no finite objective."""
    finite = [v for v in objectives if math.isfinite(v)]
    return mean_and_std(finite)[0] if finite and len(finite) == len(objectives) else math.inf


def choose(preset_objectives: Sequence[float], candidate: str | None,
           candidate_objectives: Sequence[float]) -> str:
    """``candidate`` when its mean objective over the seeds is lower than the preset's, else the preset."""
    if candidate is None or candidate == PRESET_TRIAL:
        return PRESET_TRIAL
    return candidate if mean_objective(candidate_objectives) < mean_objective(preset_objectives) else PRESET_TRIAL
