"""The worker loop of one unlearning trial, any registered method: unlearn through ``camu``'s shared loop,
report per-epoch metrics (with the cheap objective early stopping reads) and checkpoints, then on rank 0
evaluate against the oracle, save the weights, log everything and write ``final.json`` last. It runs as a
Ray Train worker, or inside a Tune trial's own process (``resources.num_workers`` 0 or 1: nothing to distribute)."""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from camu import METHODS, forget_indices, load_split, retain_indices, run_method
from camu.data import ImageData
from camu.evaluation import evaluation_sets
from camu.methods import MethodParams, UnlearnContext
from camu.runtime import Shard
from camu.weights import load_weights, save_weights
from orchestrator.record.run_identity import Tag
from orchestrator.record.tracking import Tracker
from orchestrator.worker.evaluation import assess, non_finite_parameters, quick_metrics
from orchestrator.worker.finals import FINAL_FILE, write_final
from orchestrator.worker.loading import load_data, new_model, worker_device
from orchestrator.worker.objective import OBJECTIVE, objective, objective_values
from orchestrator.worker.reporting import (
    QUICK_SHARE,
    REPORT_STEP,
    Channel,
    CheckpointClock,
    QuickBudget,
    Timings,
    remove_stale_checkpoint_folders,
)
from orchestrator.worker.wire import TrialConfig, WorkerConfig


def scaled_params(method: str, params: MethodParams, lr_scaling: str, world_size: int) -> MethodParams:
    """Learning rates for the data-parallel group (the method's ``lr_fields``); the global batch stays. The
    driver validated ``params``; a scaled rate is a positive float like the one it replaces."""
    if lr_scaling == "linear" and world_size > 1:
        fields = [f for f in METHODS.get(method).lr_fields if f in type(params).model_fields]
        return params.model_copy(update={f: getattr(params, f) * world_size for f in fields})
    return params


# Called with the TrialConfig at the start of every trial, after the job's plugins are imported: a plugin
# may append to it (the fault-tolerance tests inject failures this way). Nothing from the environment or
# the record can add to it; only code the job's author listed under ``plugins:``.
TRIAL_START_HOOKS: list[Callable[[TrialConfig], None]] = []


def unlearn_worker(loop_config: dict[str, TrialConfig]) -> None:
    """One unlearning trial of any registered method: unlearn, report per-epoch metrics, then (rank 0)
    evaluate against the oracle. Where the time went is logged as ``time.*`` metrics (worker start,
    data load, unlearning, per-epoch reporting, final evaluation, MLflow logging)."""
    cfg = loop_config["config"]
    timings = Timings()
    timings.seconds["worker_start"] = max(0.0, time.time() - cfg.launched_at) if cfg.launched_at else 0.0
    # the trial's folder: where an in-process attempt of this trial left its checkpoint, if one did
    channel = Channel(via_tune=cfg.report_to == "tune", resume_dir=cfg.out_dir)
    for module in cfg.worker.plugins:  # the job's own methods register themselves in this process too
        importlib.import_module(module)
    for hook in TRIAL_START_HOOKS:
        hook(cfg)
    remove_stale_checkpoint_folders()
    wcfg = cfg.worker
    device = worker_device(wcfg, train_worker=not channel.via_tune)
    with timings("data_load"):
        data = load_data(wcfg, device)
        split = load_split(wcfg.split_path)
        forget, retain = forget_indices(split), retain_indices(split)
        original = load_weights(new_model(wcfg, data, 0), wcfg.original_weights)
        initial = (load_weights(new_model(wcfg, data, 0), wcfg.initial_weights)
                   if wcfg.initial_weights else None)
    shard = Shard.current()
    params = scaled_params(cfg.method, cfg.params, wcfg.lr_scaling, shard.world_size)
    tracker = Tracker.shared(wcfg.tracking_uri) if shard.is_main else None
    if tracker is not None:
        with timings("logging"):
            tracker.log_params(cfg.run_id, {**_data_parallel_params(cfg.method, params, wcfg, shard),
                                            "data.augmented": data.augmented,
                                            "precision": wcfg.precision if device.type == "cuda" else "fp32"})
    sets = evaluation_sets(forget, retain, len(data.test), wcfg.seed, wcfg.evaluation.selection_fraction)
    oracle, obj = wcfg.oracle_metrics, wcfg.objective
    sel_oracle = {k[4:]: v for k, v in oracle.items() if k.startswith("sel_")} or oracle

    clock = CheckpointClock(wcfg.checkpoint_interval_s)

    budget, last_objective = QuickBudget(QUICK_SHARE), [float("nan")]

    def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any], model: torch.nn.Module) -> None:
        report = dict(metrics)
        if shard.is_main and budget.due(state.get("unlearn_seconds", 0.0)):
            start = time.perf_counter()
            with timings("epoch_reports.quick_metrics"):
                quick = quick_metrics(model, data, sets, device)
            budget.charge(time.perf_counter() - start)
            report.update({f"epoch_{k}": v for k, v in quick.items()})
            # the cheap objective early stopping reads: selection part, no MIA
            _, last_objective[0] = objective(quick, sel_oracle, obj.ra_max_drop, 1e9, obj.penalty, ("ra", "fa", "ta"))
        if shard.is_main:
            report[OBJECTIVE] = last_objective[0]
            with timings("epoch_reports.logging"):
                tracker.log_metrics(cfg.run_id, report, step=epoch)
        due = clock.due()  # only rank 0 attaches the state (Channel.report)
        with timings("epoch_reports.checkpoint" if due else "epoch_reports.report"):
            channel.report({"epoch": epoch, REPORT_STEP: epoch + 1, **report}, state if due else None)

    resume_state = channel.resume_state()
    if resume_state is not None and tracker is not None:
        # a worker-group restart (Train FailureConfig) or a resumed job continues from its last checkpoint
        tracker.set_tags(cfg.run_id, {Tag.RESTORED_FROM_EPOCH: int(resume_state["epoch"])})
    ctx = UnlearnContext(original, data, forget, retain, device, seed=wcfg.seed, shard=shard, on_epoch=on_epoch,
                         resume_state=resume_state, initial=initial, sync_batchnorm=wcfg.sync_batchnorm)
    if cfg.started_at:  # the trial's start (its driver's first line) to its unlearning, all of it outside the method
        timings.seconds["to_unlearn"] = max(0.0, time.time() - cfg.started_at)
    result = run_method(cfg.method, params, ctx)
    timings.seconds.update(unlearn=result.seconds, epoch_reports=result.report_seconds)
    final = _final(cfg, tracker, result, data, split, device, timings) if shard.is_main else {}
    channel.finished()  # final.json is written: no attempt of this trial will continue it (before the report,
    # which does not return when Tune ends the trial there)
    channel.report({"epoch": result.epochs, REPORT_STEP: result.epochs + 1, "final": 1.0, **final}, None)


def _data_parallel_params(method: str, params: MethodParams, wcfg: WorkerConfig, shard: Shard) -> dict[str, Any]:
    values = params.model_dump()
    batch = values.get("batch_size")
    return {"data_parallel.world_size": shard.world_size, "data_parallel.global_batch": batch,
            "data_parallel.per_worker_batch": batch // shard.world_size if batch else None,
            "data_parallel.lr_scaling": wcfg.lr_scaling, "data_parallel.sync_batchnorm": wcfg.sync_batchnorm,
            **{f"data_parallel.effective_{f}": values[f] for f in METHODS.get(method).lr_fields if f in values}}


def _final(cfg: TrialConfig, tracker: Tracker, result: Any, data: ImageData, split: Any, device: torch.device,
           timings: Timings) -> dict[str, float]:
    """Rank 0 after unlearning: the full evaluation against the oracle, weights, metrics and tables. A model
    whose weights went non-finite is still evaluated (it predicts one class), but marked: metric
    ``diverged`` = 1 and tag ``camu.diverged``, so that its FA of 0 or 100 is not read as forgetting."""
    wcfg = cfg.worker
    broken = non_finite_parameters(result.model)
    if broken:
        logging.getLogger(__name__).warning(
            "%s diverged: %d parameter tensor(s) hold NaN or inf (%s); its metrics are those of a broken model",
            cfg.method, len(broken), ", ".join(broken[:3]))
        tracker.set_tags(cfg.run_id, {Tag.DIVERGED: "true"})
    with timings("evaluation"):
        final, samples, curve, gap = assess(result.model, data, split, device, wcfg, result.members,
                                            wcfg.oracle_metrics)
    final["diverged"] = float(bool(broken))
    final["unlearn_seconds"] = result.seconds
    final["rte"] = wcfg.oracle_seconds / result.seconds if result.seconds > 0 else float("nan")
    final.update(objective_values(final, wcfg.oracle_metrics))
    out = Path(cfg.out_dir)
    staged = save_weights(result.model, out / f".weights-{os.getpid()}.safetensors.tmp")
    os.replace(staged, out / "weights.safetensors")  # a re-run trial never leaves a torn weights file
    with timings("logging"):
        for step, fa in enumerate(curve):
            tracker.log_metrics(cfg.run_id, {"relearn_fa": fa}, step=step)
        for step, value in gap:  # step: optimizer steps (batches) of relearning
            tracker.log_metrics(cfg.run_id, {"relearn_gap": value}, step=step)
        if cfg.log_weights:  # else kept in out_dir until the choice (orchestrator.driver.retention)
            tracker.log_artifact(cfg.run_id, out / "weights.safetensors", "model")
        tracker.log_parquet(cfg.run_id, samples, "eval/samples.parquet")
    final.update(timings.metrics())
    tracker.log_metrics(cfg.run_id, final, step=result.epochs)
    # last, atomically: final.json marks the trial finished only once everything above is logged
    write_final(out / FINAL_FILE, final)
    return final
