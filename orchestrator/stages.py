"""The reference models of a job: the original (trained once, or loaded) and, per split, the retrain
oracle (trained once, content-addressed in the cache), and their evaluation. What every method of a
(scenario, seed) is then compared against is gathered in ``References``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from camu.data import ImageData
from camu.scenarios import retain_indices, save_split
from camu.weights import save_weights
from orchestrator.cache import entry, model_key
from orchestrator.launch import fit_trainer, make_trainer
from orchestrator.naming import content_hash, train_run_name
from orchestrator.original import load_original_weights
from orchestrator.progress import PROGRESS, say, stage
from orchestrator.secrets import redact
from orchestrator import results
from orchestrator.selection import score
from orchestrator.spec import JobSpec, ScenarioSpec
from orchestrator.tracking import Tracker
from orchestrator.trial import Named, WorkerConfig
from orchestrator.validate import CheckedJob
from orchestrator.workers import evaluate_weights, new_model, supervised_worker


@dataclass
class JobRun:
    """State shared by the stages of one job run."""

    spec: JobSpec
    checked: CheckedJob
    tracker: Tracker
    uri: str
    experiment_id: str
    experiment_name: str
    parent: str
    storage: str
    cache_dir: str
    job_dir: Path
    runs: list[str]
    trial_hook: str | None = None

    @property
    def data(self) -> ImageData:
        return self.checked.data  # type: ignore[return-value]


@dataclass
class Stage:
    """What later stages need from an earlier one: weights, their MLflow run, training time, and for a
    trained original its initialisation (methods that replay training need it)."""

    weights: str
    run_id: str
    train_seconds: float
    initial: str | None = None


@dataclass
class References:
    """One (scenario, seed): its split, oracle and the worker configuration every method run shares."""

    seed: int
    split_path: str
    oracle: Stage
    oracle_metrics: dict[str, float]
    worker: WorkerConfig


def data_config(spec: JobSpec) -> dict[str, Any]:
    """Dataset, model and device of the job as plain data for the workers."""
    return {"dataset": {"name": spec.dataset.name, "options": json.loads(json.dumps(spec.dataset.options, default=str))},
            "model": {"name": spec.model.name, "options": spec.model.options},
            "device": "cpu" if spec.device == "cpu" else "auto"}


def train_stage(ctx: JobRun, role: str, split_path: str | None, indices: torch.Tensor, label: str,
                explicit: bool = False) -> Stage:
    """Train (or fetch from the cache) the original, an oracle or (``explicit``: on exactly ``indices``)
    a shadow model with the job's recipe."""
    spec, tracker = ctx.spec, ctx.tracker
    recipe = spec.original.oracle_recipe.model_dump()
    base = data_config(spec)
    key = model_key(role, base["dataset"], base["model"], recipe, indices)
    cached = entry(ctx.cache_dir, key)
    initial = _initial_weights(ctx, cached.folder, recipe["seed"]) if role == "original" else None
    tags = {"camu.role": role, "camu.job": spec.name, "camu.cache_key": key, "camu.method": role}
    if cached.exists():
        meta = cached.meta()
        run_id = meta.get("run_id")
        if not run_id or tracker.find_run(ctx.experiment_id, {"camu.key": f"model:{key}"}) != run_id:
            run_id = tracker.find_or_create_run(ctx.experiment_id, f"{role}-{key[:8]}", {**tags, "camu.cached": "true"},
                                                key=f"model:{key}")
            tracker.end(run_id)
        say(f"    {label}: reused from cache {key} (trained in {meta['train_seconds']:.1f}s)")
        return Stage(str(cached.weights), run_id, float(meta["train_seconds"]), initial)
    run_id = tracker.find_or_create_run(ctx.experiment_id, f"{role}-{key[:8]}", tags, key=f"model:{key}")
    ctx.runs.append(run_id)
    tracker.log_params(run_id, {"recipe": recipe, "dataset": base["dataset"], "model": base["model"],
                                "resources": spec.resources.model_dump()})
    config = {**base, "recipe": recipe, "split_path": split_path, "tracking_uri": ctx.uri, "run_id": run_id,
              "out_dir": str(cached.folder), "sync_batchnorm": spec.resources.sync_batchnorm,
              "checkpoint_interval_s": spec.resources.checkpoint_interval_s}
    PROGRESS.start_task(f"training {label}", recipe.get("epochs"))
    if explicit:
        np.save(cached.folder / "indices.npy", indices.numpy().astype(np.int64))
        config["indices_path"] = str(cached.folder / "indices.npy")
    fit_trainer(make_trainer(supervised_worker, config, spec.resources, train_run_name(spec.name, role, key[:12]),
                             ctx.storage), spec.resources)
    seconds = json.loads((cached.folder / "train.json").read_text())["train_seconds"]
    tracker.log_artifact(run_id, cached.weights, "model")
    cached.write_meta({"run_id": run_id, "train_seconds": seconds, "role": role, "recipe": recipe})
    tracker.end(run_id)
    ctx.runs.remove(run_id)
    say(f"    {label}: trained in {seconds:.1f}s")
    return Stage(str(cached.weights), run_id, seconds, initial)


def _initial_weights(ctx: JobRun, folder: Path, seed: int) -> str:
    """The original's initialisation: ``supervised_worker`` builds the model with the recipe's seed, so
    building it here with the same seed gives the same weights (kept beside the cached original)."""
    path = folder / "initial.safetensors"
    if not path.exists():
        save_weights(new_model(data_config(ctx.spec), ctx.data, seed), path)
    return str(path)


def load_original(ctx: JobRun) -> Stage:
    """``original.uri``: a local weights file or an MLflow URI (only its safetensors / weights-only state
    dict is read, never a pickle), checked to fit the model, stored as safetensors in the cache."""
    uri = ctx.spec.original.uri or ""
    folder = Path(ctx.cache_dir) / f"loaded-{content_hash(uri)}"
    model = load_original_weights(ctx.tracker, uri, new_model(data_config(ctx.spec), ctx.data, 0), folder)
    weights = save_weights(model, folder / "weights.safetensors")
    run_id = ctx.tracker.find_or_create_run(ctx.experiment_id, "original-loaded",
                                            {"camu.role": "original", "camu.source_uri": redact(uri)},
                                            key=f"loaded:{content_hash(uri)}")
    ctx.tracker.end(run_id)
    say(f"    original: loaded from {redact(uri)}")
    return Stage(str(weights), run_id, float("nan"))


def _evaluate(ctx: JobRun, worker: WorkerConfig, weights: dict[str, str]) -> dict[str, Any]:
    """Evaluate the reference models of one split in a single task on the workers' kind of node."""
    res = ctx.spec.resources
    task = ray.remote(num_cpus=res.cpus_per_worker, num_gpus=min(res.gpus_per_worker, 1.0))(evaluate_weights)
    return ray.get(task.remote(worker.model_dump(), weights))


def references(ctx: JobRun, sc: ScenarioSpec, seed: int, split: pa.Table, child: str, original: Stage,
               rows: list[dict[str, Any]]) -> References:
    """[3] The split (saved and logged), its oracle, and the evaluation rows of original and oracle."""
    spec, tracker = ctx.spec, ctx.tracker
    split_path = str(save_split(split, ctx.job_dir / "splits" / f"{sc.name}-seed{seed}.parquet"))
    tracker.log_artifact(child, split_path, "splits")
    stage(3, f"oracle for {sc.name}, seed {seed}")
    oracle = train_stage(ctx, "oracle", split_path, retain_indices(split), f"oracle {sc.name}/seed{seed}")
    tracker.set_tags(child, {f"camu.oracle_run_id.seed{seed}": oracle.run_id, "camu.original_run_id": original.run_id})
    base = data_config(spec)
    worker = WorkerConfig(dataset=Named(**base["dataset"]), model=Named(**base["model"]), device=base["device"],
                          split_path=split_path, original_weights=original.weights, initial_weights=original.initial,
                          seed=seed, scenario_kind=sc.kind, oracle_metrics={}, oracle_seconds=oracle.train_seconds,
                          objective=spec.sweep.objective, evaluation=spec.evaluation,
                          lr_scaling=spec.resources.lr_scaling, sync_batchnorm=spec.resources.sync_batchnorm,
                          checkpoint_interval_s=spec.resources.checkpoint_interval_s,
                          tracking_uri=ctx.uri, trial_hook=ctx.trial_hook,
                          plugins=list(spec.plugins))
    evaluated = _evaluate(ctx, worker, {"original": original.weights, "oracle": oracle.weights})
    if spec.evaluation.privacy is not None:
        from orchestrator.shadows import privacy_stage

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
        tracker.log_parquet(child, ref["samples"], f"eval/{name}-seed{seed}.parquet")
        run_id = original.run_id if name == "original" else oracle.run_id
        rows.append(results.reference_row(sc.name, name, seed, m, run_id,
                                          oracle.train_seconds if name == "oracle" else float("nan")))
    worker = worker.model_copy(update={"oracle_metrics": oracle_metrics,
                                       "original_fa": evaluated["original"]["metrics"]["fa"]})
    return References(seed, split_path, oracle, oracle_metrics, worker)
