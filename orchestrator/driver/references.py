"""What every method of a (scenario, seed) is compared against (``References``): the split saved and logged,
the retrain oracle (``orchestrator.driver.reference_models``), the original and the oracle evaluated on it,
with the per-example privacy shadows when the job asks for them (``orchestrator.driver.privacy``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import ray

from camu.scenarios import retain_indices, save_split
from orchestrator.driver.context import JobRun, References, Stage, data_config
from orchestrator.driver.privacy import privacy_stage
from orchestrator.driver.reference_models import train_stage
from orchestrator.execution.placement import wait_until_released
from orchestrator.job.spec import ScenarioSpec
from orchestrator.progress import say, stage
from orchestrator.record import summary
from orchestrator.record.run_identity import Tag
from orchestrator.worker.evaluation import evaluate_weights
from orchestrator.worker.objective import score
from orchestrator.worker.wire import WorkerConfig


def _evaluate(ctx: JobRun, worker: WorkerConfig, weights: dict[str, str]) -> dict[str, Any]:
    """Evaluate the reference models of one split in a single task on the workers' kind of node."""
    res = ctx.spec.resources
    task = ray.remote(num_cpus=res.cpus_per_worker, num_gpus=min(res.gpus_per_worker, 1.0))(evaluate_weights)
    return ray.get(task.remote(worker, weights))


def references(ctx: JobRun, sc: ScenarioSpec, seed: int, split: pa.Table, child: str, original: Stage,
               rows: list[dict[str, Any]]) -> References:
    """[3] The split (saved and logged), its oracle, and the evaluation rows of original and oracle."""
    spec, tracker = ctx.spec, ctx.tracker
    split_path = str(save_split(split, ctx.job_dir / "splits" / f"{sc.name}-seed{seed}.parquet"))
    tracker.log_artifact(child, split_path, "splits")
    stage(3, f"oracle for {sc.name}, seed {seed}")
    if spec.resources.num_workers > 0:
        # the previous stage's stopped trials may still hold (or just have created) their workers' reservations:
        # no Train run of this job runs between stages, so wait for them before asking for the oracle's
        removed = wait_until_released()
        if removed:
            say(f"    released {len(removed)} worker reservation(s) that earlier trials still held 20 s later")
    oracle = train_stage(ctx, "oracle", split_path, retain_indices(split), f"oracle {sc.name}/seed{seed}")
    tracker.set_tags(child, {Tag.oracle_run_id(seed): oracle.run_id, Tag.ORIGINAL_RUN_ID: original.run_id})
    worker = WorkerConfig(**dict(data_config(spec, ctx.cache_dir)),
                          split_path=split_path, original_weights=original.weights, initial_weights=original.initial,
                          seed=seed, scenario_kind=sc.kind, oracle_metrics={}, oracle_seconds=oracle.train_seconds,
                          objective=spec.sweep.objective, evaluation=spec.evaluation,
                          lr_scaling=spec.resources.lr_scaling, sync_batchnorm=spec.resources.sync_batchnorm,
                          checkpoint_interval_s=spec.resources.checkpoint_interval_s,
                          tracking_uri=ctx.uri,
                          plugins=list(spec.plugins))
    evaluated = _evaluate(ctx, worker, {"original": original.weights, "oracle": oracle.weights})
    if spec.evaluation.privacy is not None:
        path, found = privacy_stage(ctx, sc.name, seed, split, oracle, original, worker)
        worker = worker.model_copy(update={"privacy_path": path})
        for name in ("original", "oracle"):
            evaluated[name]["metrics"].update(found[name])
    oracle_metrics = evaluated["oracle"]["metrics"]
    for name, ref in evaluated.items():
        m = {**ref["metrics"], **score(ref["metrics"], oracle_metrics, spec.sweep.objective)}
        tracker.log_metrics(child, {f"{name}.seed{seed}.{k}": v for k, v in m.items()})
        for step, fa in enumerate(ref["curve"]):
            tracker.log_metrics(child, {f"{name}.seed{seed}.relearn_fa": fa}, step=step)
        for step, gap in ref.get("gap", []):  # step: optimizer steps (batches) of relearning
            tracker.log_metrics(child, {f"{name}.seed{seed}.relearn_gap": gap}, step=step)
        tracker.log_parquet(child, ref["samples"], f"eval/{name}-seed{seed}.parquet")
        run_id = original.run_id if name == "original" else oracle.run_id
        rows.append(summary.reference_row(sc.name, name, seed, m, run_id,
                                          oracle.train_seconds if name == "oracle" else float("nan")))
    worker = worker.model_copy(update={"oracle_metrics": oracle_metrics,
                                       "original_fa": evaluated["original"]["metrics"]["fa"]})
    return References(seed, split_path, oracle, oracle_metrics, worker)
