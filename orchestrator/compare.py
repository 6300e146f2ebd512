"""[4] One method on one scenario, with the same budget as every other method:

1. its preset (trial ``preset``) on every seed;
2. a sweep of ``sweep.num_samples`` trials over its space on the first seed, seeded with the preset's
   result (the selection seed);
3. the best sweep trial on the first seed is re-run on the other seeds (replicates);
4. the chosen configuration is the one of {preset, best trial} with the lower mean objective over the
   seeds; its rows (one per seed) are marked ``is_best``.

``retrain`` reuses the cached oracle: its rows are the oracle's, never a second training.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from camu.methods import METHODS
from orchestrator import results
from orchestrator.methods import PRESET_TRIAL, base_params, preset_name, search_space
from orchestrator.naming import content_hash
from orchestrator.progress import say, stage
from orchestrator.selection import OBJECTIVE
from orchestrator.spec import MethodSpec, ScenarioSpec
from orchestrator.stages import JobRun, References
from orchestrator.sweep import read_final_metrics, run_sweep, run_trial
from orchestrator.trial import SweepContext


def _context(ctx: JobRun, sc: ScenarioSpec, method: str, ref: References, child: str,
             params: dict[str, Any]) -> SweepContext:
    return SweepContext(job=ctx.spec.name, scenario=sc.name, method=method, seed=ref.seed, tracking_uri=ctx.uri,
                        experiment_id=ctx.experiment_id, scenario_run_id=child,
                        scope_key=content_hash([ctx.parent, sc.name, method]), storage_path=ctx.storage,
                        out_root=str(ctx.job_dir / "trials" / sc.name), resources=ctx.spec.resources,
                        base_params=params, worker=ref.worker)


def _space_max_epochs(space: dict[str, Any], params: dict[str, Any]) -> int:
    value = space.get("epochs")
    searched = [int(max(next(iter(value.values()))))] if isinstance(value, dict) else []
    return max([int(params.get("epochs", 1))] + searched)


def compare_method(ctx: JobRun, sc: ScenarioSpec, spec: MethodSpec, refs: list[References], child: str,
                   rows: list[dict[str, Any]]) -> None:
    """Presets on every seed, the sweep on the first, replicates of its best, and the choice."""
    cls = METHODS.get(spec.name)
    if cls.reuses_oracle:
        for row in [r for r in rows if r["scenario"] == sc.name and r["method"] == "oracle"]:
            rows.append({**row, "method": spec.name, "trial_id": PRESET_TRIAL, "is_best": True})
        say(f"    {spec.name}: the cached oracle's rows (no second training)")
        return
    job = ctx.spec
    params = base_params(spec, job.dataset.name, sc.kind)
    label = preset_name(spec, job.dataset.name, sc.kind) or "parameter defaults"
    stage(4, f"{spec.name} on {sc.name}: preset '{label}' on {len(refs)} seed(s), then {job.sweep.num_samples} "
             f"sweep trial(s) on seed {refs[0].seed}")
    contexts = [_context(ctx, sc, spec.name, ref, child, params) for ref in refs]
    first = contexts[0]
    preset_objectives = []
    for c in contexts:
        metrics, run_id = run_trial(c, params, PRESET_TRIAL, in_tune=False)
        rows.append(results.trial_row(sc.name, spec.name, c.seed, PRESET_TRIAL, metrics, run_id, params))
        preset_objectives.append(metrics.get(OBJECTIVE, math.nan))
    say(f"    {spec.name} preset: objective {_fmt(preset_objectives)} over seeds")
    space = search_space(spec)
    best = _sweep(ctx, sc, spec.name, first, params, space, preset_objectives[0], rows)
    chosen = PRESET_TRIAL
    if best is not None:
        trial_id, trial_params = best
        objectives = [_row(rows, sc.name, spec.name, trial_id, first.seed)["objective"]]
        for c in contexts[1:]:
            metrics, run_id = run_trial(c, trial_params, trial_id, in_tune=False)
            rows.append(results.trial_row(sc.name, spec.name, c.seed, trial_id, metrics, run_id, trial_params))
            objectives.append(metrics.get(OBJECTIVE, math.nan))
        if _mean(objectives) < _mean(preset_objectives):
            chosen = trial_id
        say(f"    {spec.name} best trial {trial_id}: objective {_fmt(objectives)} vs preset {_fmt(preset_objectives)}")
    results.mark_chosen(rows, sc.name, spec.name, chosen)
    say(f"    {spec.name}: chosen configuration {chosen}")


def _sweep(ctx: JobRun, sc: ScenarioSpec, method: str, first: SweepContext, params: dict[str, Any],
           space: dict[str, Any], preset_objective: float, rows: list[dict[str, Any]]) -> tuple[str, dict] | None:
    """The sweep on the selection seed; returns (trial id, params) of its best finished trial."""
    job = ctx.spec
    if job.sweep.num_samples == 0 or not any(isinstance(v, dict) for v in space.values()):
        return None
    grid = run_sweep(first, job.sweep, space, _space_max_epochs(space, params),
                     f"{job.name}-{first.scope_key}-s{first.seed}", evaluated=[(params, preset_objective)])
    candidates = []
    for res in grid:
        trial_id = (res.metrics or {}).get("trial_id") or Path(res.path).name
        out_dir = f"{first.out_root}/{method}/seed{first.seed}/{trial_id}"
        metrics = res.metrics if (res.metrics or {}).get("final") else read_final_metrics(out_dir)
        trial_params = {**params, **(res.config or {})}
        run_id = ctx.tracker.find_run(ctx.experiment_id, {"camu.key": f"{first.scope_key}:{trial_id}@{first.seed}"})
        row = results.trial_row(sc.name, method, first.seed, trial_id, metrics, run_id, trial_params,
                                failed=res.error is not None)
        rows.append(row)
        if row["status"] == "finished" and math.isfinite(row["objective"]):
            candidates.append((row["objective"], trial_id, trial_params))
    if not candidates:
        say(f"    {method}: no sweep trial finished")
        return None
    _, trial_id, trial_params = min(candidates, key=lambda c: c[0])
    return trial_id, trial_params


def _row(rows: list[dict[str, Any]], scenario: str, method: str, trial_id: str, seed: int) -> dict[str, Any]:
    return next(r for r in rows if (r["scenario"], r["method"], r["trial_id"], r["seed"]) == (scenario, method, trial_id, seed))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if len(finite) == len(values) and finite else math.inf


def _fmt(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(finite):.2f} +- {statistics.stdev(finite) if len(finite) > 1 else 0:.2f}"
