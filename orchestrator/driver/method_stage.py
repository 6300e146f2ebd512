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
from typing import Any

from camu.methods import METHODS, MethodParams
from orchestrator.driver.choice import best_candidate, choose
from orchestrator.driver.context import JobRun, References
from orchestrator.driver.sweep import run_sweep, run_trial
from orchestrator.job.presets import (
    PRESET_TRIAL,
    base_params,
    other_presets,
    preset_name,
    search_space,
    setting,
    with_values,
)
from orchestrator.job.space import SearchSpace
from orchestrator.job.spec import MethodSpec, ScenarioSpec
from orchestrator.progress import PROGRESS, say, stage
from orchestrator.record import summary
from orchestrator.record.run_identity import Tag, content_hash, trial_folder, trial_key, trials_root
from orchestrator.tables import format_mean_std, mean_and_std
from orchestrator.worker.objective import OBJECTIVE
from orchestrator.worker.wire import SweepContext


def _context(ctx: JobRun, sc: ScenarioSpec, method: str, ref: References, child: str,
             params: MethodParams) -> SweepContext:
    return SweepContext(job=ctx.spec.name, scenario=sc.name, method=method, seed=ref.seed, tracking_uri=ctx.uri,
                        experiment_id=ctx.experiment_id, scenario_run_id=child,
                        scope_key=content_hash([ctx.parent, sc.name, method]), storage_path=ctx.storage,
                        out_root=str(trials_root(ctx.job_dir, sc.name)), resources=ctx.spec.resources,
                        base_params=params, worker=ref.worker, run_tags=ctx.run_tags,
                        keep_all_weights=ctx.spec.storage.keep_weights == "all")


def _space_max_epochs(space: SearchSpace, params: MethodParams) -> int:
    """The most epochs a trial of this space can run (ASHA's time axis)."""
    return int(space.largest("epochs", int(getattr(params, "epochs", 1))))


def compare_method(ctx: JobRun, sc: ScenarioSpec, spec: MethodSpec, refs: list[References], child: str,
                   rows: list[dict[str, Any]]) -> None:
    """Presets on every seed (the method's other known presets on the first), the sweep on the first seed
    seeded with all of them, replicates of the best candidate, and the choice."""
    cls = METHODS.get(spec.name)
    refs = [r for r in refs if spec.seeds is None or r.seed in spec.seeds]  # a method cut to fewer seeds
    if cls.reuses_oracle:
        for row in [r for r in rows if r["scenario"] == sc.name and r["method"] == "oracle"]:
            rows.append({**row, "method": spec.name, "trial_id": PRESET_TRIAL, "is_best": True})
        say(f"    {spec.name}: the cached oracle's rows (no second training)")
        return
    job = ctx.spec
    at = setting(job.model.name, job.dataset.name, sc.kind, job.original.trained_recipe)
    params = base_params(spec, at)
    space = search_space(spec)
    # the other presets are candidates of a search; a method with an empty space runs its preset alone
    extras = other_presets(spec, at) if space else []
    label = preset_name(spec, at) or "parameter defaults"
    stage(4, f"{spec.name} on {sc.name}: preset '{label}' on {len(refs)} seed(s), {len(extras)} other preset(s) and "
             f"{job.sweep.num_samples} sweep trial(s) on seed {refs[0].seed}")
    contexts = [_context(ctx, sc, spec.name, ref, child, params) for ref in refs]
    first = contexts[0]
    preset_objectives = [_run(c, params, PRESET_TRIAL, sc.name, spec.name, rows) for c in contexts]
    candidates = [(preset_objectives[0], PRESET_TRIAL, params)]
    candidates += [(_run(first, p, trial_id, sc.name, spec.name, rows), trial_id, p) for trial_id, p in extras]
    say(f"    {spec.name} presets: objective {_fmt(preset_objectives)} over seeds"
        + "".join(f"; {t} {o:.2f}" for o, t, _ in candidates[1:]))
    candidates += _sweep(ctx, sc, spec.name, first, params, space, [(p, o) for o, _, p in candidates], rows)
    chosen = PRESET_TRIAL
    best = best_candidate(candidates)
    if best is not None:
        _, trial_id, trial_params = best
        objectives = [_row(rows, sc.name, spec.name, trial_id, first.seed)["objective"]]
        objectives += [_run(c, trial_params, trial_id, sc.name, spec.name, rows) for c in contexts[1:]]
        chosen = choose(preset_objectives, trial_id, objectives)
        say(f"    {spec.name} best candidate {trial_id}: objective {_fmt(objectives)} vs preset "
            f"{_fmt(preset_objectives)}")
    summary.mark_chosen(rows, sc.name, spec.name, chosen)
    _retain(ctx, first, rows, sc.name, spec.name, chosen)
    say(f"    {spec.name}: chosen configuration {chosen}")


def _retain(ctx: JobRun, first: SweepContext, rows: list[dict[str, Any]], scenario: str, method: str,
            chosen: str) -> None:
    """``storage.keep_weights: chosen``: the chosen sweep trial's weights go to MLflow now that it is known
    (presets and replicates logged theirs), and the other sweep trials' local weights are deleted."""
    if first.keep_all_weights:
        return
    for row in rows:
        if (row["scenario"], row["method"], row["seed"]) != (scenario, method, first.seed) or \
                row["trial_id"] == PRESET_TRIAL or not row["run_id"]:
            continue
        weights = trial_folder(first.out_root, method, first.seed, row["trial_id"]) / "weights.safetensors"
        if not weights.is_file():
            continue
        if row["trial_id"] == chosen:
            ctx.tracker.log_artifact(row["run_id"], weights, "model")
        elif _is_sweep_trial(ctx, row["run_id"]):
            weights.unlink()


def _is_sweep_trial(ctx: JobRun, run_id: str) -> bool:
    return Tag.SWEEP in ctx.tracker.run(run_id).data.tags


def _run(ctx: SweepContext, params: MethodParams, trial_id: str, scenario: str, method: str,
         rows: list[dict[str, Any]]) -> float:
    """One run outside the sweep (a preset, a replicate): its row, and its objective."""
    PROGRESS.start_task(f"{method} {trial_id} on seed {ctx.seed}", getattr(params, "epochs", None))
    metrics, run_id = run_trial(ctx, params, trial_id, in_tune=False)
    rows.append(summary.trial_row(scenario, method, ctx.seed, trial_id, metrics, run_id, params.model_dump()))
    return metrics.get(OBJECTIVE, math.nan)


def _sweep(ctx: JobRun, sc: ScenarioSpec, method: str, first: SweepContext, params: MethodParams,
           space: SearchSpace, evaluated: list[tuple[MethodParams, float]],
           rows: list[dict[str, Any]]) -> list[tuple[float, str, MethodParams]]:
    """The sweep on the selection seed, told the presets' results first; returns its finished trials
    as (objective, trial id, params)."""
    job = ctx.spec
    if job.sweep.num_samples == 0 or not space.searched:
        return []
    trials = run_sweep(first, job.sweep, space, _space_max_epochs(space, params),
                       f"{job.name}-{first.scope_key}-s{first.seed}", evaluated=evaluated, tracker=ctx.tracker)
    finished = []
    for trial in trials:
        trial_id, trial_params = trial.trial_id, with_values(params, trial.config)
        run_id = ctx.tracker.find_run(ctx.experiment_id, {Tag.KEY: trial_key(first.scope_key, trial_id, first.seed)})
        row = summary.trial_row(sc.name, method, first.seed, trial_id, trial.metrics, run_id,
                                trial_params.model_dump(), failed=trial.failed)
        rows.append(row)
        if row["status"] == "finished" and math.isfinite(row["objective"]):
            finished.append((row["objective"], trial_id, trial_params))
    if not finished:
        say(f"    {method}: no sweep trial finished")
    return finished


def _row(rows: list[dict[str, Any]], scenario: str, method: str, trial_id: str, seed: int) -> dict[str, Any]:
    key = (scenario, method, trial_id, seed)
    return next(r for r in rows if (r["scenario"], r["method"], r["trial_id"], r["seed"]) == key)


def _fmt(values: list[float]) -> str:
    return format_mean_std(*mean_and_std([v for v in values if math.isfinite(v)]))
