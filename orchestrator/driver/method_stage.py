"""[4] One method on one scenario, with the same budget as every other method:

1. its preset (trial ``preset``) on every seed;
2. a sweep of ``sweep.num_samples`` trials over its space on the first seed, seeded with the preset's
   result (the selection seed);
3. the rule of ``sweep.choose`` picks a member of the Pareto front of everything tried on the first seed
   (``orchestrator.driver.choice``; by default the lowest scalar objective, the preset included);
4. the pick is re-run on the other seeds (replicates); a pick that fails on one is dropped and the rule
   picks again. The chosen configuration's rows (one per seed) are marked ``is_best``; every row gets its
   Pareto rank (``pareto_rank``, ``is_pareto``) and the chosen ones the rule (``chosen_by``).

``retrain`` reuses the cached oracle: its rows are the oracle's, never a second training.
"""

from __future__ import annotations

import math
from typing import Any

from camu.methods import METHODS, MethodParams
from orchestrator.driver.choice import MAX_REPICKS, Choice, Tried, finished_everywhere, pick
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
from orchestrator.worker.objective import OBJECTIVE, with_objective_values
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
    oracle = first.worker.oracle_metrics
    preset_runs = [_run(c, params, PRESET_TRIAL, sc.name, spec.name, rows) for c in contexts]
    tried: dict[str, tuple[MethodParams, dict[str, float]]] = {PRESET_TRIAL: (params, preset_runs[0])}
    for trial_id, p in extras:
        tried[trial_id] = (p, _run(first, p, trial_id, sc.name, spec.name, rows))
    say(f"    {spec.name} presets: objective {_fmt([m.get(OBJECTIVE, math.nan) for m in preset_runs])} over seeds"
        + "".join(f"; {t} {m.get(OBJECTIVE, math.nan):.2f}" for t, (_, m) in list(tried.items())[1:]))
    tried.update(_sweep(ctx, sc, spec.name, first, params, space, list(tried.values()), rows))
    entries = [Tried(t, with_objective_values(m, oracle)) for t, (_, m) in tried.items()]
    choice, excluded = pick(entries, job.sweep.choose, job.sweep.objectives), set()
    while choice.trial_id not in (None, PRESET_TRIAL):
        trial_id, trial_params = choice.trial_id, tried[choice.trial_id][0]
        runs = [tried[trial_id][1]] + [_run(c, trial_params, trial_id, sc.name, spec.name, rows) for c in contexts[1:]]
        objectives = [m.get(OBJECTIVE, math.nan) for m in runs]
        say(f"    {spec.name} picked {trial_id} ({choice.rule}): objective {_fmt(objectives)} over seeds vs preset "
            f"{_fmt([m.get(OBJECTIVE, math.nan) for m in preset_runs])}")
        if finished_everywhere(runs):
            break
        excluded.add(trial_id)
        if len(excluded) > MAX_REPICKS:
            say(f"    {spec.name}: {len(excluded)} picks failed or diverged on a replicate seed; the preset stays")
            choice = Choice(PRESET_TRIAL, "preset: every pick failed on a replicate seed", None, choice.ranks)
            break
        say(f"    {spec.name}: {trial_id} failed or diverged on a replicate seed; the rule picks again without it")
        choice = pick(entries, job.sweep.choose, job.sweep.objectives, frozenset(excluded))
    chosen = choice.trial_id or PRESET_TRIAL
    if choice.within_limits is False:
        say(f"    {spec.name}: no configuration on the front is within the limits of {choice.rule}; chose the one "
            f"closest to them")
    summary.mark_chosen(rows, sc.name, spec.name, chosen)
    _record_front(ctx, rows, sc.name, spec.name, choice, chosen)
    _retain(ctx, first, rows, sc.name, spec.name, chosen)
    front = sorted(t for t in choice.ranks if choice.on_front(t))
    say(f"    {spec.name}: chosen configuration {chosen} ({choice.rule}); Pareto front of {len(tried)} tried: "
        f"{', '.join(front) or 'none'}")


def _record_front(ctx: JobRun, rows: list[dict[str, Any]], scenario: str, method: str, choice: Choice,
                  chosen: str) -> None:
    """Each configuration's Pareto rank on its rows and runs (metric ``pareto_rank``, tag ``camu.is_pareto``),
    and the rule that chose the chosen one (``chosen_by``, tag ``camu.chosen_by``)."""
    rule = choice.rule + (" (no configuration within the limits: the closest)" if choice.within_limits is False
                          else "")
    for row in rows:
        if (row["scenario"], row["method"]) != (scenario, method) or row["trial_id"] not in choice.ranks:
            continue
        rank = choice.ranks[row["trial_id"]]
        row["pareto_rank"], row["is_pareto"] = float(rank), rank == 1
        row["chosen_by"] = rule if row["trial_id"] == chosen else ""
        if row["run_id"]:
            ctx.tracker.log_metrics(row["run_id"], {"pareto_rank": float(rank)})
            tags = {Tag.IS_PARETO: str(rank == 1).lower()}
            if row["trial_id"] == chosen:
                tags[Tag.CHOSEN_BY] = rule
            ctx.tracker.set_tags(row["run_id"], tags)


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
         rows: list[dict[str, Any]]) -> dict[str, float]:
    """One run outside the sweep (a preset, a replicate): its row, and its final metrics ({} unfinished)."""
    PROGRESS.start_task(f"{method} {trial_id} on seed {ctx.seed}", getattr(params, "epochs", None))
    metrics, run_id = run_trial(ctx, params, trial_id, in_tune=False)
    metrics = with_objective_values(metrics, ctx.worker.oracle_metrics)
    rows.append(summary.trial_row(scenario, method, ctx.seed, trial_id, metrics, run_id, params.model_dump()))
    return metrics


def _sweep(ctx: JobRun, sc: ScenarioSpec, method: str, first: SweepContext, params: MethodParams,
           space: SearchSpace, evaluated: list[tuple[MethodParams, dict[str, float]]],
           rows: list[dict[str, Any]]) -> dict[str, tuple[MethodParams, dict[str, float]]]:
    """The sweep on the selection seed, told the presets' results first; returns its finished trials
    as trial id -> (params, final metrics)."""
    job = ctx.spec
    if job.sweep.num_samples == 0 or not space.searched:
        return {}
    trials = run_sweep(first, job.sweep, space, _space_max_epochs(space, params),
                       f"{job.name}-{first.scope_key}-s{first.seed}", evaluated=evaluated, tracker=ctx.tracker)
    found: dict[str, tuple[MethodParams, dict[str, float]]] = {}
    for trial in trials:
        trial_id, trial_params = trial.trial_id, with_values(params, trial.config)
        run_id = ctx.tracker.find_run(ctx.experiment_id, {Tag.KEY: trial_key(first.scope_key, trial_id, first.seed)})
        finished = bool(trial.metrics.get("final")) and not trial.failed
        metrics = with_objective_values(trial.metrics, first.worker.oracle_metrics) if finished else {}
        row = summary.trial_row(sc.name, method, first.seed, trial_id, metrics, run_id,
                                trial_params.model_dump(), failed=trial.failed)
        rows.append(row)
        found[trial_id] = (trial_params, metrics)  # unfinished: {} (never on the front)
    if not any(m for _, m in found.values()):
        say(f"    {method}: no sweep trial finished")
    return found


def _fmt(values: list[float]) -> str:
    return format_mean_std(*mean_and_std([v for v in values if math.isfinite(v)]))
