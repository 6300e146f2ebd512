"""Pareto fronts of configurations scored on several objectives, every one minimised (pure: no Ray, no MLflow).

A configuration dominates another when it is no worse on every objective and better on at least one. The
front is the set no other configuration dominates; ranks peel fronts off one after another (rank 1 is the
front, rank 2 the front of what remains, ...), the non-dominated sorting of NSGA-II. The choice rules pick
one member of the front:

- ``scalar``: the lowest value of a given scalar (the sweep's objective), ties to the first;
- ``weights``: the lowest weighted sum of the objectives (weights >= 0, in the objectives' own units);
- ``constraint``: among members within every limit, the lowest value of one objective; when none is
  within, the member with the least total excess over the limits (the report says the limits were missed);
- ``knee``: on the front normalised to [0, 1] per objective, the member farthest on the ideal side of the
  hyperplane through the extreme members (two objectives: the line between the two ends), the point where
  gaining more on one objective starts to cost the most on the others. A front too small or degenerate for
  that hyperplane, or one whose hyperplane falls in some objective (a coefficient <= 0: its "ideal side"
  would favour being worse there), falls back to the member closest to the ideal point (objectives scaled
  by their range over every finished configuration).

A point with a non-finite value (a failed or unmeasured objective) is never on the front and ranks last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Point = Sequence[float]


def finite(point: Point) -> bool:
    return all(math.isfinite(v) for v in point)


def dominates(a: Point, b: Point) -> bool:
    """``a`` no worse than ``b`` on every objective and strictly better on one (all minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_ranks(points: Sequence[Point]) -> list[int]:
    """Rank of every point: 1 for the front, 2 for the front once those are removed, and so on; points with
    a non-finite value all share the rank after the last."""
    ranks = [0] * len(points)
    left = [i for i, p in enumerate(points) if finite(p)]
    rank = 0
    while left:
        rank += 1
        layer = [i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)]
        for i in layer:
            ranks[i] = rank
        left = [i for i in left if i not in layer]
    return [r if r else max(rank, 1) + 1 for r in ranks]  # never rank 1: not on any front


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points with finite values, in input order."""
    return [i for i, r in enumerate(pareto_ranks(points)) if r == 1 and finite(points[i])]


def choose_scalar(points: Sequence[Point], scalar: Sequence[float]) -> int | None:
    """The front member with the lowest ``scalar`` (first of equals); None for an empty front."""
    front = [i for i in pareto_front(points) if math.isfinite(scalar[i])]
    return min(front, key=lambda i: scalar[i]) if front else None


def choose_weights(points: Sequence[Point], weights: Sequence[float]) -> int | None:
    """The front member with the lowest weighted sum of its objectives."""
    front = pareto_front(points)
    return min(front, key=lambda i: sum(w * v for w, v in zip(weights, points[i], strict=True))) if front else None


def choose_constraint(points: Sequence[Point], minimise: int, limited: Sequence[Mapping[str, float]],
                      limits: Mapping[str, float]) -> tuple[int | None, bool]:
    """(the front member within every limit with the lowest objective ``minimise``, True), or, when no
    member is within, (the member with the least total excess over the limits, False). ``limited[i]``
    holds point i's values of the limited quantities (missing or NaN counts as over the limit; a limit on
    a quantity no front member has, a metric the scenario does not define, is left out)."""
    front = pareto_front(points)
    if not front:
        return None, False

    def excess(i: int) -> float:
        total = 0.0
        for key, limit in limits.items():
            value = limited[i].get(key, math.nan)
            total += math.inf if not math.isfinite(value) else max(0.0, value - limit)
        return total

    # a limit on a metric no member defines (retained-class TA in random removal) does not apply here
    limits = {k: v for k, v in limits.items() if any(math.isfinite(limited[i].get(k, math.nan)) for i in front)}
    within = [i for i in front if excess(i) == 0.0]
    if within:
        return min(within, key=lambda i: points[i][minimise]), True
    return min(front, key=lambda i: (excess(i), points[i][minimise])), False


def choose_knee(points: Sequence[Point]) -> int | None:
    """The knee of the front (see the module docstring)."""
    front = pareto_front(points)
    if len(front) <= 2:  # nothing between the ends: the one closest to the ideal point
        return _closest_to_ideal(points, front)
    values = np.array([points[i] for i in front], dtype=float)
    low, high = values.min(axis=0), values.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    norm = (values - low) / span
    extremes = sorted({int(np.argmin(norm[:, k])) for k in range(norm.shape[1])})
    if len(extremes) < norm.shape[1]:
        return _closest_to_ideal(points, front)
    # the hyperplane w . x = 1 through the extreme members (one per objective)
    try:
        w = np.linalg.solve(norm[[_extreme(norm, k) for k in range(norm.shape[1])]], np.ones(norm.shape[1]))
    except np.linalg.LinAlgError:
        return _closest_to_ideal(points, front)
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        # a plane that falls in some objective: "below" it would reward being worse there (a configuration
        # that did not forget, say); the front bends too little for a knee, take the compromise instead
        return _closest_to_ideal(points, front)
    distance = (1.0 - norm @ w) / np.linalg.norm(w)  # > 0: on the ideal side of the hyperplane
    return front[int(np.argmax(distance))]


def _extreme(norm: np.ndarray, k: int) -> int:
    """The member best on objective k (ties: the one best on the others' sum)."""
    best = norm[:, k].min()
    tied = [i for i in range(len(norm)) if norm[i, k] == best]
    return min(tied, key=lambda i: float(norm[i].sum()))


def _closest_to_ideal(points: Sequence[Point], front: list[int]) -> int | None:
    """The front member nearest the ideal point, each objective scaled by its range over every finished point
    (over the front alone, two members would always sit at opposite corners, equally far)."""
    if not front:
        return None
    every = np.array([p for p in points if finite(p)], dtype=float)
    low, high = every.min(axis=0), every.max(axis=0)
    values = np.array([points[i] for i in front], dtype=float)
    norm = (values - low) / np.where(high > low, high - low, 1.0)
    return front[int(np.argmin(np.linalg.norm(norm, axis=1)))]


def dominance_between(fronts: Mapping[str, Sequence[Point]]) -> dict[str, int]:
    """For fronts of several methods (same objectives): how many points of each method's front no other
    method's point dominates, i.e. its share of the combined front."""
    out = {}
    for name, own in fronts.items():
        others = [p for other, pts in fronts.items() if other != name for p in pts]
        out[name] = sum(1 for p in own if finite(p) and not any(dominates(q, p) for q in others if finite(q)))
    return out
