"""The choice of a method's configuration (pure). Every configuration a method tried (its presets and its sweep
trials) is scored on the selection seed, where all of them ran alike, on the job's objectives: the named
``sweep.objectives`` (``orchestrator.job.objectives``), or the scalar objective alone by default. The Pareto
front of those scores (``orchestrator.pareto``) holds the configurations no other one beats on every objective,
and the rule of ``sweep.choose`` picks one member of it, so the chosen configuration is always on the front of
what was tried. The pick then runs on the other seeds (replicates) and the report gives its mean over all
seeds; a pick that fails or diverges on a replicate seed is dropped and the rule picks again from the front
of what is left (the dropped configuration no longer counts: a configuration that cannot finish is never
chosen), at most ``MAX_REPICKS`` times, after which the preset stays.

With the scalar objective alone the front is the configuration with the lowest objective, the preset included:
the choice is the selection seed's best, as a multi-objective choice is. (Before fronts, the best sweep trial
was replicated and chosen over the preset only when its mean over the seeds was lower; that rule could choose
a configuration another one beat, so the default now follows the front like every rule.)"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.job.objectives import (
    OBJECTIVE_NAMES,
    SCALAR,
    ChooseSpec,
    gap_metric,
    objective_keys,
    objective_metric,
)
from orchestrator.pareto import (
    choose_constraint,
    choose_knee,
    choose_scalar,
    choose_weights,
    pareto_ranks,
)


def _value(metrics: Mapping[str, float], key: str) -> float:
    value = metrics.get(key, math.nan)
    return float(value) if isinstance(value, (int, float)) else math.nan


@dataclass(frozen=True)
class Tried:
    """One configuration as the choice sees it: its final metrics on the selection seed ({} if it did not
    finish)."""

    trial_id: str
    metrics: Mapping[str, float]

    def vector(self, keys: Sequence[str]) -> list[float]:
        """Its scores on ``keys``; NaN (never on the front) for a model whose weights went non-finite."""
        if _value(self.metrics, "diverged") == 1.0:
            return [math.nan] * len(keys)
        return [_value(self.metrics, k) for k in keys]


@dataclass(frozen=True)
class Choice:
    """The picked configuration (None when nothing finished), the rule that picked it, whether a constraint's
    limits were met (None for other rules), and every configuration's Pareto rank (1: on the front)."""

    trial_id: str | None
    rule: str
    within_limits: bool | None = None
    ranks: dict[str, int] = field(default_factory=dict)

    def on_front(self, trial_id: str) -> bool:
        return self.ranks.get(trial_id) == 1


def pick(tried: Sequence[Tried], choose: ChooseSpec, objectives: Sequence[str] | None,
         excluded: frozenset[str] = frozenset()) -> Choice:
    """Apply ``choose`` to the Pareto front of ``tried`` on ``objectives`` (minus the ``excluded`` trial ids:
    configurations that failed on a replicate seed)."""
    keys = objective_keys(list(objectives) if objectives else None)
    pool = [t for t in tried if t.trial_id not in excluded]
    points = [t.vector(keys) for t in pool]
    ranks = {t.trial_id: r for t, r in zip(pool, pareto_ranks(points), strict=True)}
    ranks.update({t: max(ranks.values(), default=0) + 1 for t in excluded})
    within: bool | None = None
    if choose.rule == "knee":
        index = choose_knee(points)
    elif choose.rule == "weights":
        weights = choose.weights or {}
        index = choose_weights(points, [weights.get(n, 0.0) for n in objectives or []])
    elif choose.rule == "constraint":
        limits = dict(choose.limits or {})
        limited = [{k: _value(t.metrics, _limit_metric(k)) for k in limits} for t in pool]
        index, within = choose_constraint(points, keys.index(objective_metric(str(choose.minimise))), limited, limits)
    else:
        index = choose_scalar(points, [_value(t.metrics, SCALAR) for t in pool])
    return Choice(pool[index].trial_id if index is not None else None, choose.describe(), within, ranks)


def _limit_metric(key: str) -> str:
    """A constraint limit names an objective (``time``) or a metric whose gap is limited (``ra``)."""
    return objective_metric(key) if key in OBJECTIVE_NAMES else gap_metric(key)


MAX_REPICKS = 2  # picks dropped for failing on a replicate seed before the preset is kept


def finished_everywhere(metrics_per_seed: Sequence[Mapping[str, float]]) -> bool:
    """A configuration finished on every seed it ran: a finite scalar objective on each and weights that never
    went non-finite (``diverged``); a pick that failed or diverged on a replicate seed is not chosen."""
    return bool(metrics_per_seed) and all(math.isfinite(_value(m, SCALAR)) and _value(m, "diverged") != 1.0
                                          for m in metrics_per_seed)

