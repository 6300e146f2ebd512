"""Each method's Pareto front read back from a job's summary (what ``results --by method`` and the report show):
every configuration a method tried, scored on the job's objectives on its selection seed (selection part,
where the choice was made and every configuration ran alike), with its reported numbers (report part) as the
mean over the seeds it ran on; which configuration was chosen and by what rule; and, across methods, how much
of the combined front each method holds and which method is best on each objective."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from orchestrator.job.objectives import SCALAR, objective_keys
from orchestrator.pareto import dominance_between, dominates, pareto_ranks
from orchestrator.tables import format_value, mean_and_std, render_table

REFERENCE_METHODS = ("original", "oracle", "retrain")
REPORTED = ("ra", "fa", "ta", "mia_official", "unlearn_seconds")


@dataclass
class Tried:
    """One configuration of a method: its objective values on the selection seed, rank, and report means."""

    trial_id: str
    values: list[float]
    rank: int
    chosen: bool
    chosen_by: str
    seeds: int
    reported: dict[str, float] = field(default_factory=dict)
    means: list[float] = field(default_factory=list)  # the objectives' means over the seeds it ran on (selection)

    @property
    def on_front(self) -> bool:
        return self.rank == 1


@dataclass
class MethodFront:
    scenario: str
    method: str
    selection_seed: int
    tried: list[Tried]

    @property
    def front(self) -> list[Tried]:
        return [t for t in self.tried if t.on_front]


def selection_seed(rows: list[dict[str, Any]]) -> int:
    """The seed a method's configurations were all tried on: the one with the most of them (its sweep ran
    there); without a sweep, the seed of its first row (presets run on the first seed first)."""
    counts = {s: len({r["trial_id"] for r in rows if r["seed"] == s}) for s in dict.fromkeys(r["seed"] for r in rows)}
    return max(counts, key=lambda s: (counts[s], -list(counts).index(s)))


def labels(objectives: list[str]) -> list[str]:
    """Column names of the objectives (the scalar one is ``objective``)."""
    return list(objectives) if objectives else [SCALAR]


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and value is not None else math.nan


def method_fronts(table: pa.Table, objectives: list[str]) -> list[MethodFront]:
    """Every (scenario, method)'s tried configurations, front first (by the first objective). The rank is the
    one the job recorded (``pareto_rank``) where there is one, else computed here (a job recorded before
    fronts were)."""
    keys = objective_keys(objectives or None)
    rows = table.to_pylist()
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["scenario"] == scenario):
            if method in REFERENCE_METHODS:
                continue
            mine = [r for r in rows if r["scenario"] == scenario and r["method"] == method]
            seed = selection_seed(mine)
            first = {r["trial_id"]: r for r in mine if r["seed"] == seed}
            points = [[_num(r.get(k)) if r["status"] == "finished" else math.nan for k in keys]
                      for r in first.values()]
            computed = pareto_ranks(points)
            tried = []
            for (trial_id, row), values, rank in zip(first.items(), points, computed, strict=True):
                recorded = _num(row.get("pareto_rank"))
                runs = [r for r in mine if r["trial_id"] == trial_id and r["status"] == "finished"]
                reported = {m: mean_and_std([_num(r[m]) for r in runs if math.isfinite(_num(r[m]))])[0]
                            if runs else math.nan for m in REPORTED}
                chosen = any(r["is_best"] for r in mine if r["trial_id"] == trial_id)
                means = [mean_and_std([_num(r.get(k)) for r in runs])[0] if len(runs) > 1 else v
                         for k, v in zip(keys, values, strict=True)]
                tried.append(Tried(trial_id, values, int(recorded) if math.isfinite(recorded) else rank, chosen,
                                   row.get("chosen_by") or "", len(runs), reported, means))
            tried.sort(key=lambda t: (t.rank, t.values[0] if math.isfinite(t.values[0]) else math.inf))
            out.append(MethodFront(scenario, method, seed, tried))
    return out


def cross_method(fronts: list[MethodFront], objectives: list[str]) -> dict[str, list[str]]:
    """scenario -> lines: each method's share of the combined front, which method's front dominates
    another's entirely, and the best method on each objective."""
    names = labels(objectives)
    out: dict[str, list[str]] = {}
    for scenario in dict.fromkeys(f.scenario for f in fronts):
        mine = {f.method: [t.values for t in f.front] for f in fronts if f.scenario == scenario and f.front}
        if len(mine) < 2:
            continue
        shares = dominance_between(mine)
        total = sum(shares.values())
        lines = ["combined front: " + ", ".join(f"{m} {n} of {total}" for m, n in
                                                sorted(shares.items(), key=lambda kv: -kv[1]))]
        seeds = {f.method: f.selection_seed for f in fronts if f.scenario == scenario and f.method in mine}
        if len(set(seeds.values())) > 1:
            lines.append("selection seeds differ (" + ", ".join(f"{m} {s}" for m, s in seeds.items()) +
                         "): each front is on its own seed's split and oracle")
        for a, pa_ in mine.items():
            for b, pb in mine.items():
                if a != b and pb and all(any(dominates(p, q) for p in pa_) for q in pb):
                    lines.append(f"{a}'s front dominates {b}'s everywhere")
        for k, name in enumerate(names):
            best = min(((min(p[k] for p in pts), m) for m, pts in mine.items()), key=lambda x: x[0])
            lines.append(f"best {name}: {best[1]} ({format_value(best[0])})")
        out[scenario] = lines
    return out


def render_fronts(table: pa.Table, objectives: list[str], choose: str) -> str:
    """The fronts as text: per scenario and method, the front's configurations (chosen marked), then the
    comparison across methods."""
    names = labels(objectives)
    fronts = method_fronts(table, objectives)
    across = cross_method(fronts, objectives)
    parts = [(f"Pareto fronts on {', '.join(names)} (selection part, on each method's selection seed, where all its "
              f"configurations ran; in brackets the mean over every seed a configuration ran on; lower is better); "
              f"chosen by {choose or 'scalar: lowest objective'}. Reported: report part, mean over the seeds each "
              f"configuration ran on.")]
    cols = ["scenario", "method", "trial_id", *names, "rank", "seeds", *REPORTED, "chosen"]
    rows = []
    for f in fronts:
        for t in f.front + [t for t in f.tried if t.chosen and not t.on_front]:
            mark = ("yes: " + t.chosen_by if t.chosen_by else "yes") + ("" if t.on_front else " (off the front)")
            rows.append([f"{f.scenario} (seed {f.selection_seed})", f.method, t.trial_id,
                         *[_with_mean(v, m, t.seeds) for v, m in zip(t.values, t.means or t.values, strict=True)],
                         str(t.rank), str(t.seeds), *[format_value(t.reported.get(m, math.nan)) for m in REPORTED],
                         mark if t.chosen else ""])
    parts.append(render_table(cols, rows))
    for scenario, lines in across.items():
        parts.append(f"{scenario}: " + "; ".join(lines))
    return "\n".join(parts)


def _with_mean(value: float, mean: float, seeds: int) -> str:
    """The selection seed's value, and its mean over the seeds when the configuration ran on several."""
    return format_value(value) + (f" (mean {format_value(mean)})" if seeds > 1 else "")
