"""The reference models of a job: the original (trained once, or loaded) and, per split, the retrain
oracle (trained once, content-addressed in the cache), and their evaluation. What every method of a
(scenario, seed) is then compared against is gathered in ``References``."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from camu.data import ImageData
from camu.scenarios import retain_indices, save_split
from camu.weights import save_weights
from orchestrator.cache import (SHA_TAG, WEIGHTS_FILE, CachedModel, CacheEntryError, entry, fetch_or_build,
                                file_digest, key_lock, model_key, quarantine, replace_file)
from orchestrator.launch import fit_trainer, make_trainer
from orchestrator.naming import train_run_name
from orchestrator.original import load_original_weights
from orchestrator.progress import PROGRESS, say, stage
from orchestrator.retention import remove_folder
from orchestrator.secrets import redact
from orchestrator import results
from orchestrator.selection import score
from orchestrator.spec import JobSpec, ScenarioSpec
from orchestrator.tracking import ParamChanged, Tracker, flatten
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
    submission: str = ""  # this submission's id: in Train run names, so concurrent submissions never share them
    run_tags: dict[str, str] = field(default_factory=dict)  # on every run the job creates: job run, owner, code

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
    """Dataset, model, device and GPU precision of the job as plain data for the workers."""
    return {"dataset": {"name": spec.dataset.name, "options": json.loads(json.dumps(spec.dataset.options, default=str))},
            "model": {"name": spec.model.name, "options": spec.model.options},
            "device": "cpu" if spec.device == "cpu" else "auto", "precision": spec.resources.precision}


def training_key_fields(spec: JobSpec, data: ImageData | None) -> dict[str, Any]:
    """What of the training regime enters a trained model's cache key besides dataset, model and indices:
    the recipe (its optimizer fields only when not the default), fp32 on GPU, and the pad-crop view of
    the fast CIFAR setting (augmented since it exists: models trained before it were not). Defaults add
    nothing, so models cached before these settings existed keep their keys."""
    keyed = spec.original.oracle_recipe.key_fields()
    if spec.resources.precision != "bf16" and spec.device != "cpu":  # on CPU both compute in fp32
        keyed["precision"] = spec.resources.precision
    view = data.train.view if data is not None else None
    if view is not None and view.augment and view.kind == "pad_crop":
        keyed["view"] = view.kind
    return keyed


def train_stage(ctx: JobRun, role: str, split_path: str | None, indices: torch.Tensor, label: str,
                explicit: bool = False) -> Stage:
    """Train (or fetch from the cache) the original, an oracle or (``explicit``: on exactly ``indices``)
    a shadow model with the job's recipe. The Train run writes into a private staging folder that is
    published into the cache once trained (``orchestrator.cache.fetch_or_build``, under the key's lock:
    a second job wanting the same model waits, then reuses it). A cached entry is used only once its
    weights match the sha256 in its meta.json and the digest its MLflow training run recorded; a bad
    one is moved aside and the model trained again."""
    spec, tracker = ctx.spec, ctx.tracker
    recipe = spec.original.oracle_recipe.model_dump()
    base = data_config(spec)
    checked_data = ctx.checked.data if ctx.checked is not None else None
    key = model_key(role, base["dataset"], base["model"], training_key_fields(spec, checked_data), indices)
    run_key = f"model:{key}"
    tags = {"camu.role": role, "camu.job": spec.name, "camu.cache_key": key, "camu.method": role, **ctx.run_tags}

    def disagreement(meta: dict[str, Any]) -> str | None:
        """Why a verified entry disagrees with the digests the tracking store recorded for it, or None."""
        producer = meta.get("run_id")
        recorded = {r: _recorded_digest(tracker, r)
                    for r in dict.fromkeys([producer, tracker.find_run(ctx.experiment_id, {"camu.key": run_key})]) if r}
        if producer in recorded and recorded[producer] == meta["sha256"]:
            return None  # the run that trained it vouches for these weights
        bad = {r: d for r, d in recorded.items() if d and d != meta["sha256"]}
        if bad:
            run, digest = next(iter(bad.items()))
            return (f"its weights (sha256 {meta['sha256'][:16]}) are not those MLflow run {run} recorded "
                    f"(sha256 {digest[:16]})")
        return None

    def build(staging: Path) -> dict[str, Any]:
        run_id = tracker.find_or_create_run(ctx.experiment_id, f"{role}-{key[:8]}", tags, key=run_key)
        ctx.runs.append(run_id)
        dataset = {**base["dataset"], "options": {k: v for k, v in base["dataset"]["options"].items()
                                                  if k != "num_workers"}}
        tracker.log_params(run_id, {"recipe": recipe, "dataset": dataset, "model": base["model"]})
        runtime: dict[str, Any] = {"resources": spec.resources.model_dump()}
        if "num_workers" in base["dataset"]["options"]:
            runtime["dataset"] = {"options": {"num_workers": base["dataset"]["options"]["num_workers"]}}
        _log_runtime_params(tracker, run_id, runtime)
        config = {**base, "recipe": recipe, "split_path": split_path, "tracking_uri": ctx.uri, "run_id": run_id,
                  "out_dir": str(staging), "sync_batchnorm": spec.resources.sync_batchnorm,
                  "checkpoint_interval_s": spec.resources.checkpoint_interval_s}
        PROGRESS.start_task(f"training {label}", recipe.get("epochs"))
        if explicit:
            np.save(staging / "indices.npy", indices.numpy().astype(np.int64))
            config["indices_path"] = str(staging / "indices.npy")
        # the submission in the name: concurrent submissions never share a Train run's checkpoints
        train_name = train_run_name(spec.name, role, f"{key[:12]}-{ctx.submission}")
        fit_trainer(make_trainer(supervised_worker, config, spec.resources, train_name, ctx.storage), spec.resources)
        remove_folder(ctx.storage, train_name)  # trained: its checkpoints will never be read again
        seconds = json.loads((staging / "train.json").read_text())["train_seconds"]
        return {"run_id": run_id, "train_seconds": seconds, "role": role, "recipe": recipe}

    cached, meta, built = fetch_or_build(ctx.cache_dir, key, build, disagreement, on_wait=lambda: say(
        f"    {label}: another job is training the same model (cache {key}); waiting for it"))
    run_id = meta["run_id"]
    if built:
        tracker.set_tags(run_id, {SHA_TAG: meta["sha256"]})
        tracker.log_artifact(run_id, cached.weights, "model")
        tracker.end(run_id)
        ctx.runs.remove(run_id)
        say(f"    {label}: trained in {meta['train_seconds']:.1f}s")
    else:
        if tracker.find_run(ctx.experiment_id, {"camu.key": run_key}) != run_id:
            run_id = tracker.find_or_create_run(ctx.experiment_id, f"{role}-{key[:8]}",
                                                {**tags, "camu.cached": "true", SHA_TAG: meta["sha256"]}, key=run_key)
            tracker.end(run_id)
        say(f"    {label}: reused from cache {key} (trained in {meta['train_seconds']:.1f}s)")
    initial = _initial_weights(ctx, cached.folder, recipe["seed"]) if role == "original" else None
    return Stage(str(cached.weights), run_id, float(meta["train_seconds"]), initial)


def _recorded_digest(tracker: Tracker, run_id: str) -> str | None:
    """The weights digest MLflow run ``run_id`` recorded, or None (no such run in this store, or no tag)."""
    try:
        return tracker.run(run_id).data.tags.get(SHA_TAG)
    except Exception:  # noqa: BLE001 - a run of another tracking store: nothing recorded here
        return None


def _log_runtime_params(tracker: Tracker, run_id: str, params: dict[str, Any]) -> None:
    """Params that do not decide the trained weights (resources, decode workers). A cached model's run is
    found by its content key, so a later job may train it again with other resources: the run keeps the
    first values as params and records the new ones as ``camu.retrained.<param>`` tags."""
    try:
        tracker.log_params(run_id, params)
    except ParamChanged as err:
        tracker.log_params(run_id, {k: v for k, v in flatten(params).items() if k not in err.changed})
        tracker.set_tags(run_id, {f"camu.retrained.{k}": new for k, (_, new) in err.changed.items()})


def _initial_weights(ctx: JobRun, folder: Path, seed: int) -> str:
    """The original's initialisation: ``supervised_worker`` builds the model with the recipe's seed, so
    building it here with the same seed gives the same weights (kept beside the cached original). Built
    afresh every time (it is cheap and deterministic) and replaced atomically when the file on disk
    differs, so a torn or tampered copy never survives into a job."""
    path = folder / "initial.safetensors"
    staged = save_weights(new_model(data_config(ctx.spec), ctx.data, seed),
                          folder / f".initial-{uuid.uuid4().hex}.safetensors.tmp")
    try:
        same = not path.is_symlink() and path.is_file() and file_digest(path) == file_digest(staged)
    except OSError:
        same = False
    if same:
        staged.unlink()
    else:
        replace_file(staged, path)
    return str(path)


ORIGINAL_SHA_TAG = "camu.original_sha256"  # on the job run: the digest of the loaded original it started with


def load_original(ctx: JobRun) -> Stage:
    """``original.uri``: a local weights file or an MLflow URI (only its safetensors / weights-only state
    dict is read, never a pickle), checked to fit the model, stored as safetensors in the cache.

    The copy is keyed by the sha256 of its weights, not by the URI: ``models:/NAME@alias``,
    ``models:/NAME/latest`` or a local file name different weights over time. The job run records that
    digest, so a resumed job continues with the weights it started with (from the cache), and refuses
    to mix originals when those are gone and the URI now names other weights."""
    uri = ctx.spec.original.uri or ""
    tracker = ctx.tracker
    pinned = tracker.run(ctx.parent).data.tags.get(ORIGINAL_SHA_TAG)
    item, meta = _loaded_entry(ctx.cache_dir, pinned) if pinned else (None, None)
    if item is not None and meta is not None:
        digest = meta["sha256"]
        say(f"    original: the weights this job started with (sha256 {digest[:12]}), from the cache")
    else:
        Path(ctx.cache_dir).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="loaded.tmp-", dir=ctx.cache_dir))
        try:
            model = load_original_weights(tracker, uri, new_model(data_config(ctx.spec), ctx.data, 0), staging)
            staged = save_weights(model, staging / WEIGHTS_FILE)
            digest, _ = file_digest(staged)
            if pinned and digest != pinned:
                raise LookupError(f"original.uri: {redact(uri)} now names other weights (sha256 {digest[:16]}) than "
                                  f"this job started with ({pinned[:16]}), and those are no longer in the cache "
                                  f"{ctx.cache_dir}; its finished trials unlearned them, so submit the job again as a "
                                  f"new job (or point original.uri at the version it started with)")
            item, meta, _ = fetch_or_build(
                ctx.cache_dir, f"loaded-{digest[:20]}",
                lambda folder: _moved_into(staged, folder, {"role": "original", "source_uri": redact(uri),
                                                            "train_seconds": None}),
                lambda found: None if found["sha256"] == digest else "it holds other weights than its name says")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        say(f"    original: loaded from {redact(uri)} (sha256 {digest[:12]})")
    run_id = tracker.find_or_create_run(ctx.experiment_id, "original-loaded",
                                        {"camu.role": "original", "camu.source_uri": redact(uri), SHA_TAG: digest,
                                         **ctx.run_tags}, key=f"loaded:{digest[:20]}")
    tracker.end(run_id)
    tracker.set_tags(ctx.parent, {ORIGINAL_SHA_TAG: digest})
    return Stage(str(item.weights), run_id, float("nan"))


def _loaded_entry(cache_dir: str, digest: str) -> tuple[CachedModel | None, dict[str, Any] | None]:
    """The verified cache entry of a loaded original with this digest, or (None, None)."""
    item = entry(cache_dir, f"loaded-{digest[:20]}")
    with key_lock(cache_dir, item.key):
        try:
            meta = item.verified_meta()
        except CacheEntryError as err:
            quarantine(item, str(err))
            return None, None
    return (item, meta) if meta is not None and meta["sha256"] == digest else (None, None)


def _moved_into(staged: Path, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    replace_file(staged, folder / WEIGHTS_FILE)
    return meta


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
                          precision=base["precision"],
                          split_path=split_path, original_weights=original.weights, initial_weights=original.initial,
                          seed=seed, scenario_kind=sc.kind, oracle_metrics={}, oracle_seconds=oracle.train_seconds,
                          objective=spec.sweep.objective, evaluation=spec.evaluation,
                          lr_scaling=spec.resources.lr_scaling, sync_batchnorm=spec.resources.sync_batchnorm,
                          checkpoint_interval_s=spec.resources.checkpoint_interval_s,
                          tracking_uri=ctx.uri,
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
        for step, gap in ref.get("gap", []):  # step: optimizer steps (batches) of relearning
            tracker.log_metrics(child, {f"{name}.seed{seed}.relearn_gap": gap}, step=step)
        tracker.log_parquet(child, ref["samples"], f"eval/{name}-seed{seed}.parquet")
        run_id = original.run_id if name == "original" else oracle.run_id
        rows.append(results.reference_row(sc.name, name, seed, m, run_id,
                                          oracle.train_seconds if name == "oracle" else float("nan")))
    worker = worker.model_copy(update={"oracle_metrics": oracle_metrics,
                                       "original_fa": evaluated["original"]["metrics"]["fa"]})
    return References(seed, split_path, oracle, oracle_metrics, worker)
