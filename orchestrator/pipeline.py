"""The job pipeline on a Ray cluster (local or remote):

  [1] splits per scenario and seed (Parquet)   [2] the original model (trained once, or loaded)
  [3] the retrain oracle per split (cached)    [4] per scenario and seed: the official CaMU run and
  a Ray Tune sweep, each trial a TorchTrainer  [5] summary tables, best model registered

Every stage logs into one MLflow run tree; any failure marks the open runs FAILED (Ctrl-C: KILLED).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import torch
import yaml

from camu.scenarios import retain_indices, save_split
from camu.weights import load_weights, save_weights
from orchestrator import results
from orchestrator.cache import entry, model_key
from orchestrator.launch import fit_trainer, make_trainer
from orchestrator.lifecycle import reinstall_after_ray_init
from orchestrator.naming import content_hash, train_run_name, trial_key
from orchestrator.original import load_original_weights
from orchestrator.placement import PlacementGroupReaper
from orchestrator.progress import say, stage
from orchestrator.secrets import redact, redact_data
from orchestrator.selection import OBJECTIVE, objective
from orchestrator.spec import JobSpec, JobSpecError
from orchestrator.sweep import read_final_metrics, run_sweep, run_trial
from orchestrator.tracking import Tracker, closing_runs, default_tracking_uri, flatten, open_store
from orchestrator.uris import tracking_uri_problem
from orchestrator.validate import CheckedJob, base_camu_params
from orchestrator.workers import (
    evaluate_weights,
    new_model,
    remove_stale_checkpoint_folders,
    supervised_worker,
)


@dataclass
class JobOutcome:
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    tracking_uri: str
    summary: pa.Table
    registered: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    """What later stages need from an earlier one: weights, their MLflow run, training time."""

    weights: str
    run_id: str
    train_seconds: float


# ----------------------------------------------------------------------------- Ray and resources
def ensure_ray(spec: JobSpec, address: str | None = None) -> None:
    """Attach to a cluster (``address``, or the Ray job's own), else start a local instance sized for
    one run of the job (logical CPUs may exceed a small machine's cores)."""
    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None)
        reinstall_after_ray_init()
        return
    need = spec.resources.cpus_per_worker * max(spec.resources.num_workers, 1) * spec.sweep.max_concurrent_trials + 1
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(need)),
             num_gpus=torch.cuda.device_count(), include_dashboard=False, log_to_driver=False)
    reinstall_after_ray_init()
    logs = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    say(f"    local Ray started ({ray.cluster_resources().get('CPU', 0):g} CPUs); worker logs: {logs}")


def check_cluster_resources(spec: JobSpec) -> None:
    """Refuse (before any MLflow run exists) a job whose single run cannot be placed on the cluster."""
    total = ray.cluster_resources()
    workers = max(spec.resources.num_workers, 1)
    errors = []
    for res, per in (("CPU", spec.resources.cpus_per_worker), ("GPU", spec.resources.gpus_per_worker)):
        if per and total.get(res, 0) < per * workers:
            errors.append(f"resources: one run needs {per * workers:g} {res} ({workers} workers x {per:g}) but the "
                          f"cluster has {total.get(res, 0):g}; lower num_workers or {res.lower()}s_per_worker")
    if errors:
        raise JobSpecError("resources", errors)


def check_storage(spec: JobSpec) -> None:
    """On a multi-node cluster, checkpoints and cached models must live where every node can read them."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2 or spec.storage.shared:
        return
    errors = []
    for name, value in (("storage.path", spec.storage.path), ("storage.cache_dir", spec.storage.cache_dir)):
        if not value or "://" not in value:
            errors.append(f"{name}: {value or 'the default (a folder on the driver node)'} is node-local but the cluster "
                          f"has {len(nodes)} nodes; use shared storage (s3://..., an NFS path with storage.shared: true)")
    if errors:
        raise JobSpecError("storage", errors)


# ----------------------------------------------------------------------------- stages
def _worker_config(spec: JobSpec) -> dict[str, Any]:
    return {"dataset": {"name": spec.dataset.name, "options": _jsonable(spec.dataset.options)},
            "model": {"name": spec.model.name, "options": spec.model.options},
            "device": "cpu" if spec.device == "cpu" else "auto"}


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(options, default=str))


def _train_stage(ctx: JobRun, role: str, split_path: str | None, indices: torch.Tensor, label: str) -> Stage:
    """Train (or fetch from the cache) the original or an oracle with the job's recipe."""
    spec, tracker = ctx.spec, ctx.tracker
    recipe = spec.original.oracle_recipe.model_dump()
    base = _worker_config(spec)
    key = model_key(role, base["dataset"], base["model"], recipe, indices)
    cached = entry(ctx.cache_dir, key)
    tags = {"camu.role": role, "camu.job": spec.name, "camu.cache_key": key, "camu.method": role}
    if cached.exists():
        meta = cached.meta()
        run_id = meta.get("run_id")
        if not run_id or tracker.find_run(ctx.experiment_id, {"camu.key": f"model:{key}"}) != run_id:
            run_id = tracker.find_or_create_run(ctx.experiment_id, f"{role}-{key[:8]}", {**tags, "camu.cached": "true"},
                                                key=f"model:{key}")
            tracker.end(run_id)
        say(f"    {label}: reused from cache {key} (trained in {meta['train_seconds']:.1f}s)")
        return Stage(str(cached.weights), run_id, float(meta["train_seconds"]))
    run_id = tracker.find_or_create_run(ctx.experiment_id, f"{role}-{key[:8]}", tags, key=f"model:{key}")
    ctx.runs.append(run_id)
    tracker.log_params(run_id, {"recipe": recipe, "dataset": base["dataset"], "model": base["model"],
                                "resources": spec.resources.model_dump()})
    config = {**base, "recipe": recipe, "split_path": split_path, "tracking_uri": ctx.uri, "run_id": run_id,
              "out_dir": str(cached.folder)}
    fit_trainer(make_trainer(supervised_worker, config, spec.resources, train_run_name(spec.name, role, key[:12]),
                             ctx.storage), spec.resources)
    seconds = json.loads((cached.folder / "train.json").read_text())["train_seconds"]
    tracker.log_artifact(run_id, cached.weights, "model")
    cached.write_meta({"run_id": run_id, "train_seconds": seconds, "role": role, "recipe": recipe})
    tracker.end(run_id)
    ctx.runs.remove(run_id)
    say(f"    {label}: trained in {seconds:.1f}s")
    return Stage(str(cached.weights), run_id, seconds)


def _load_original(ctx: JobRun) -> Stage:
    """``original.uri``: a local weights file or an MLflow URI (only its safetensors / weights-only state
    dict is read, never a pickle), checked to fit the model, stored as safetensors in the cache."""
    uri = ctx.spec.original.uri
    folder = Path(ctx.cache_dir) / f"loaded-{content_hash(uri)}"
    model = load_original_weights(ctx.tracker, uri, new_model(_worker_config(ctx.spec), ctx.data, 0), folder)
    weights = save_weights(model, folder / "weights.safetensors")
    run_id = ctx.tracker.find_or_create_run(ctx.experiment_id, "original-loaded",
                                            {"camu.role": "original", "camu.source_uri": redact(uri)},
                                            key=f"loaded:{content_hash(uri)}")
    ctx.tracker.end(run_id)
    say(f"    original: loaded from {redact(uri)}")
    return Stage(str(weights), run_id, float("nan"))


def _evaluate(ctx: JobRun, weights: dict[str, str], split_path: str, seed: int) -> dict[str, Any]:
    """Evaluate the reference models of one split in a single task on the workers' kind of node."""
    res = ctx.spec.resources
    task = ray.remote(num_cpus=res.cpus_per_worker, num_gpus=min(res.gpus_per_worker, 1.0))(evaluate_weights)
    return ray.get(task.remote(_worker_config(ctx.spec), weights, split_path, seed))


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

    @property
    def data(self):
        return self.checked.data


def _scenario(ctx: JobRun, index: int, original: Stage, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Stages 3-4 for one scenario: oracle, references, official CaMU and the sweep, for every seed."""
    spec, tracker = ctx.spec, ctx.tracker
    sc = spec.scenarios[index]
    child = tracker.find_or_create_run(ctx.experiment_id, sc.name,
                                       {"camu.role": "scenario", "camu.scenario": sc.name, "camu.job": spec.name},
                                       key=f"{ctx.parent}:{sc.name}", parent=ctx.parent)
    ctx.runs.append(child)
    tracker.log_params(child, {"scenario": {"name": sc.name, "kind": sc.kind, **_jsonable(sc.options)},
                               "seeds": spec.seeds})
    base_params = base_camu_params(spec, sc)
    for seed in spec.seeds:
        split = ctx.checked.splits[(sc.name, seed)]
        split_path = str(save_split(split, ctx.job_dir / "splits" / f"{sc.name}-seed{seed}.parquet"))
        tracker.log_artifact(child, split_path, "splits")
        stage(3, f"oracle for {sc.name}, seed {seed}")
        oracle = _train_stage(ctx, "oracle", split_path, retain_indices(split), f"oracle {sc.name}/seed{seed}")
        tracker.set_tags(child, {f"camu.oracle_run_id.seed{seed}": oracle.run_id,
                                 "camu.original_run_id": original.run_id})
        refs = _evaluate(ctx, {"original": original.weights, "oracle": oracle.weights}, split_path, seed)
        oracle_metrics = refs["oracle"]["metrics"]
        for name, ref in refs.items():
            m = dict(ref["metrics"])
            m["avg_gap"], m[OBJECTIVE] = objective(m, oracle_metrics, spec.sweep.objective.ra_max_drop,
                                                   spec.sweep.objective.ta_retained_max_drop,
                                                   spec.sweep.objective.penalty)
            tracker.log_metrics(child, {f"{name}.seed{seed}.{k}": v for k, v in m.items()})
            tracker.log_parquet(child, ref["samples"], f"eval/{name}-seed{seed}.parquet")
            run_id = original.run_id if name == "original" else oracle.run_id
            rows.append(results.reference_row(sc.name, name, seed, m, run_id,
                                              oracle.train_seconds if name == "oracle" else float("nan")))
        static = {"job": spec.name, "scenario": sc.name, "seed": seed, "tracking_uri": ctx.uri,
                  "experiment_id": ctx.experiment_id, "scenario_run_id": child,
                  "scope_key": content_hash([ctx.parent, sc.name, seed]), "storage_path": ctx.storage,
                  "out_root": str(ctx.job_dir / "trials" / f"{sc.name}-seed{seed}"),
                  "resources": spec.resources.model_dump(), "base_params": base_params,
                  "worker": {**_worker_config(spec), "split_path": split_path, "original_weights": original.weights,
                             "seed": seed, "oracle_metrics": oracle_metrics, "oracle_seconds": oracle.train_seconds,
                             "objective": spec.sweep.objective.model_dump(), "lr_scaling": spec.resources.lr_scaling,
                             "tracking_uri": ctx.uri, "fault": _fault_injection()}}
        stage(4, f"CaMU on {sc.name}, seed {seed}: official configuration, then {spec.sweep.num_samples} sweep trial(s)")
        official, official_run = run_trial(static, base_params, "official", "camu-official", in_tune=False)
        rows.append(results.trial_row(sc.name, "camu-official", seed, "official", official, official_run, base_params))
        say(f"    official: avg gap {official.get('avg_gap', float('nan')):.2f} "
            f"(RA {official.get('ra', float('nan')):.1f}, FA {official.get('fa', float('nan')):.1f})")
        max_epochs = max([base_params["epochs"]] + _space_max(spec.sweep.space.get("epochs")))
        grid = run_sweep(static, spec.sweep, max_epochs, f"{spec.name}-{static['scope_key']}")
        for res in grid:
            trial_id = res.metrics.get("trial_id") if res.metrics else None
            trial_id = trial_id or Path(res.path).name
            run_id = tracker.find_run(ctx.experiment_id, {"camu.key": trial_key(static["scope_key"], trial_id)})
            params = {**base_params, **(res.config or {})}
            metrics = res.metrics if (res.metrics or {}).get("final") else read_final_metrics(f"{static['out_root']}/{trial_id}")
            rows.append(results.trial_row(sc.name, "camu", seed, trial_id, metrics, run_id, params,
                                          failed=res.error is not None))
    registered = _register_best(ctx, sc.name, child, rows)
    table = results.to_table([r for r in rows if r["scenario"] == sc.name])
    tracker.log_parquet(child, table, "eval/summary.parquet")
    tracker.end(child)
    ctx.runs.remove(child)
    return registered


def _fault_injection() -> dict[str, Any] | None:
    """Parse CAMU_ORCH_FAULT_INJECTION="trial=<substring>,times=<n>" (fault-tolerance tests only)."""
    raw = os.environ.get("CAMU_ORCH_FAULT_INJECTION")
    if not raw:
        return None
    parts = dict(item.split("=", 1) for item in raw.split(","))
    return {"trial": parts["trial"], "times": int(parts.get("times", 1))}


def _space_max(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [int(max(next(iter(value.values()))))]
    return [int(value)]


def _register_best(ctx: JobRun, scenario: str, child: str, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Mark the best sweep trial per (scenario, seed); log the scenario's best as an MLflow PyTorch
    model in its trial run and register it (alias 'candidate')."""
    best_overall = results.mark_best(rows, scenario)
    if best_overall is None:
        say(f"    {scenario}: no sweep trial finished; nothing registered")
        return {}
    spec = ctx.spec
    seed_dir = ctx.job_dir / "trials" / f"{scenario}-seed{best_overall['seed']}"
    weights = seed_dir / best_overall["trial_id"] / "weights.safetensors"
    model = load_weights(new_model(_worker_config(spec), ctx.data, 0), weights)
    example = ctx.data.test.fetch(torch.arange(2), torch.device("cpu")).numpy()
    name = f"{spec.tracking.registered_model or 'camu-' + spec.name}-{scenario}"
    uri, version = ctx.tracker.log_and_register_model(
        best_overall["run_id"], results.LogitsOnly(model.eval()), example, weights, name,
        {"camu.scenario": scenario, "camu.trial_id": best_overall["trial_id"], "camu.job": spec.name})
    ctx.tracker.set_tags(child, {"camu.best_trial_id": best_overall["trial_id"], "camu.best_run_id": best_overall["run_id"],
                                 "camu.registered_model": f"{name}/{version}"})
    ctx.tracker.set_tags(best_overall["run_id"], {"camu.is_best": "true"})
    ctx.tracker.log_metrics(child, {"best.avg_gap": best_overall["avg_gap"], "best.objective": best_overall["objective"]})
    say(f"    {scenario}: best trial {best_overall['trial_id']} (avg gap {best_overall['avg_gap']:.2f}) registered as "
        f"{name} v{version}")
    return {scenario: f"models:/{name}/{version}"}


# ----------------------------------------------------------------------------- the job
def resume_job(ident: str, tracking_uri: str | None = None, address: str | None = None,
               workdir: str | Path | None = None) -> JobOutcome:
    """Continue an interrupted job (by name, newest first, or parent run id): the same job file (as
    recorded in its parent run) and the same submission, so finished stages are reused (model cache,
    finished trials), unfinished Tune trials continue from their last Train checkpoint, and the MLflow
    run tree is continued rather than duplicated."""
    from orchestrator.validate import check_job

    tracker = open_store(tracking_uri or default_tracking_uri(workdir))
    parent = results.find_job_run(tracker, ident)
    submission = parent.data.tags.get("camu.submission")
    if not submission:
        raise LookupError(f"run {parent.info.run_id} is not a camu-orch job run")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            job_file = tracker.download(parent.info.run_id, "job.yaml", tmp)
        except Exception as err:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise LookupError(f"run {parent.info.run_id} has no job.yaml artifact ({str(err)[:200]}), so its job "
                              f"cannot be resumed; submit the job file again") from None
        checked = check_job(job_file, check_data=True, local=address is None)
    # the recorded job.yaml has its credentials redacted: the store is the one being resumed from
    checked.spec.tracking.uri = tracker.uri
    say(f"resuming job {checked.spec.name} (submission {submission}, parent run {parent.info.run_id}, "
        f"was {parent.info.status})")
    return run_job(checked, address=address, submission=submission, workdir=workdir)


def run_job(checked: CheckedJob, address: str | None = None, submission: str | None = None,
            workdir: str | Path | None = None) -> JobOutcome:
    """Run a validated job end to end and return where its record lives."""
    spec = checked.spec
    workdir = Path(workdir or os.getcwd()).resolve()
    uri = spec.tracking.uri or default_tracking_uri(workdir)
    problem = tracking_uri_problem(uri)
    if problem:  # MLFLOW_TRACKING_URI is checked here (a job file's tracking.uri already was)
        raise JobSpecError("MLFLOW_TRACKING_URI", [f"MLFLOW_TRACKING_URI: {problem}"])
    tracker = Tracker(uri)
    tracker.ping()  # an unreachable store fails before Ray starts or anything trains
    ensure_ray(spec, address)
    check_cluster_resources(spec)
    check_storage(spec)
    exp_name = spec.tracking.experiment or spec.name
    experiment_id = tracker.experiment(exp_name)
    spec_hash = content_hash(spec.model_dump(mode="json"))
    submission = submission or uuid.uuid4().hex[:8]
    storage = str(Path(spec.storage.path or workdir / "camu_runs").expanduser().resolve()) \
        if "://" not in (spec.storage.path or "") else spec.storage.path
    cache_dir = str(Path(spec.storage.cache_dir or workdir / ".camu-cache").expanduser().resolve())
    parent = tracker.find_or_create_run(experiment_id, spec.name,
                                        {"camu.role": "job", "camu.job": spec.name, "camu.submission": submission,
                                         "camu.spec_hash": spec_hash}, key=f"job:{spec.name}:{submission}")
    job_dir = Path(storage if "://" not in storage else cache_dir) / spec.name / submission
    ctx = JobRun(spec, checked, tracker, uri, experiment_id, exp_name, parent, storage, cache_dir, job_dir, [parent])
    registered: dict[str, str] = {}
    with closing_runs(tracker, ctx.runs), PlacementGroupReaper():
        job_dir.mkdir(parents=True, exist_ok=True)
        tracker.log_params(parent, flatten(redact_data(spec.model_dump(mode="json"))))
        tracker.log_text(parent, yaml.safe_dump(redact_data(checked.raw), sort_keys=False), "job.yaml")
        stage(1, f"splits: {len(checked.splits)} (scenario, seed) pair(s)")
        stage(2, "original model")
        original = _load_original(ctx) if spec.original.uri else _train_stage(
            ctx, "original", None, torch.arange(len(ctx.data.train)), "original")
        tracker.set_tags(parent, {"camu.original_run_id": original.run_id})
        rows: list[dict[str, Any]] = []
        for index in range(len(spec.scenarios)):
            registered.update(_scenario(ctx, index, original, rows))
        stage(5, "summary")
        remove_stale_checkpoint_folders()
        summary = results.to_table(rows)
        tracker.log_parquet(parent, summary, "eval/summary.parquet")
        for sc, model_uri in registered.items():
            tracker.set_tags(parent, {f"camu.registered.{sc}": model_uri})
    return JobOutcome(experiment_id, exp_name, parent, uri, summary, registered)
