"""The reference models of a job: the original (trained once, or loaded from a URI) and the models trained with
the job's recipe on a subset (retrain oracles, privacy shadows), each trained once as a Ray Train run and
content-addressed in the cache (``orchestrator.driver.cache``)."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camu.weights import save_weights
from orchestrator.driver.cache import (
    WEIGHTS_FILE,
    CachedModel,
    CacheEntryError,
    entry,
    fetch_or_build,
    file_digest,
    key_lock,
    model_key,
    quarantine,
    replace_file,
)
from orchestrator.driver.context import JobRun, Stage, data_config, training_key_fields
from orchestrator.driver.original import load_original_weights
from orchestrator.driver.retention import remove_folder
from orchestrator.execution.trainer import fit_trainer, make_trainer
from orchestrator.progress import PROGRESS, say
from orchestrator.record.run_identity import Tag, train_run_name
from orchestrator.record.tracking import ParamChanged, Tracker, flatten
from orchestrator.secrets import redact
from orchestrator.worker.loading import new_model
from orchestrator.worker.training import supervised_worker
from orchestrator.worker.wire import TrainingConfig


def train_stage(ctx: JobRun, role: str, split_path: str | None, indices: torch.Tensor, label: str,
                explicit: bool = False) -> Stage:
    """Train (or fetch from the cache) the original, an oracle or (``explicit``: on exactly ``indices``)
    a shadow model with the job's recipe. The Train run writes into a private staging folder that is
    published into the cache once trained (``orchestrator.driver.cache.fetch_or_build``, under the key's lock:
    a second job wanting the same model waits, then reuses it). A cached entry is used only once its
    weights match the sha256 in its meta.json and the digest its MLflow training run recorded; a bad
    one is moved aside and the model trained again."""
    spec, tracker = ctx.spec, ctx.tracker
    recipe = spec.original.oracle_recipe.model_dump()
    base = data_config(spec, ctx.cache_dir)
    checked_data = ctx.checked.data if ctx.checked is not None else None
    key = model_key(role, base.dataset.model_dump(), base.model.model_dump(), training_key_fields(spec, checked_data),
                    indices)
    run_key = f"model:{key}"
    tags = {Tag.ROLE: role, Tag.JOB: spec.name, Tag.CACHE_KEY: key, Tag.METHOD: role, **ctx.run_tags}

    def disagreement(meta: dict[str, Any]) -> str | None:
        """Why a verified entry disagrees with the digests the tracking store recorded for it, or None."""
        producer = meta.get("run_id")
        recorded = {r: _recorded_digest(tracker, r)
                    for r in dict.fromkeys([producer, tracker.find_run(ctx.experiment_id, {Tag.KEY: run_key})]) if r}
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
        options = base.dataset.options
        dataset = {"name": base.dataset.name, "options": {k: v for k, v in options.items() if k != "num_workers"}}
        tracker.log_params(run_id, {"recipe": recipe, "dataset": dataset, "model": base.model.model_dump()})
        runtime: dict[str, Any] = {"resources": spec.resources.model_dump()}
        if "num_workers" in options:
            runtime["dataset"] = {"options": {"num_workers": options["num_workers"]}}
        _log_runtime_params(tracker, run_id, runtime)
        indices_path = None
        if explicit:
            np.save(staging / "indices.npy", indices.numpy().astype(np.int64))
            indices_path = str(staging / "indices.npy")
        config = TrainingConfig(**dict(base), recipe=spec.original.oracle_recipe, split_path=split_path,
                                indices_path=indices_path, tracking_uri=ctx.uri, run_id=run_id, out_dir=str(staging),
                                sync_batchnorm=spec.resources.sync_batchnorm,
                                checkpoint_interval_s=spec.resources.checkpoint_interval_s)
        PROGRESS.start_task(f"training {label}", recipe.get("epochs"))
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
        tracker.set_tags(run_id, {Tag.WEIGHTS_SHA256: meta["sha256"]})
        tracker.log_artifact(run_id, cached.weights, "model")
        tracker.end(run_id)
        ctx.runs.remove(run_id)
        say(f"    {label}: trained in {meta['train_seconds']:.1f}s")
    else:
        if tracker.find_run(ctx.experiment_id, {Tag.KEY: run_key}) != run_id:
            run_id = tracker.find_or_create_run(ctx.experiment_id, f"{role}-{key[:8]}",
                                                {**tags, Tag.CACHED: "true", Tag.WEIGHTS_SHA256: meta["sha256"]},
                                                key=run_key)
            tracker.end(run_id)
        say(f"    {label}: reused from cache {key} (trained in {meta['train_seconds']:.1f}s)")
    initial = _initial_weights(ctx, cached.folder, recipe["seed"]) if role == "original" else None
    return Stage(str(cached.weights), run_id, float(meta["train_seconds"]), initial)


def _recorded_digest(tracker: Tracker, run_id: str) -> str | None:
    """The weights digest MLflow run ``run_id`` recorded, or None (no such run in this store, or no tag)."""
    try:
        return tracker.run(run_id).data.tags.get(Tag.WEIGHTS_SHA256)
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
        tracker.set_tags(run_id, {Tag.retrained(k): new for k, (_, new) in err.changed.items()})


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




def load_original(ctx: JobRun) -> Stage:
    """``original.uri``: a local weights file or an MLflow URI (only its safetensors / weights-only state
    dict is read, never a pickle), checked to fit the model, stored as safetensors in the cache.

    The copy is keyed by the sha256 of its weights, not by the URI: ``models:/NAME@alias``,
    ``models:/NAME/latest`` or a local file name different weights over time. The job run records that
    digest, so a resumed job continues with the weights it started with (from the cache), and refuses
    to mix originals when those are gone and the URI now names other weights."""
    uri = ctx.spec.original.uri or ""
    tracker = ctx.tracker
    pinned = tracker.run(ctx.parent).data.tags.get(Tag.ORIGINAL_SHA256)
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
                                        {Tag.ROLE: "original", Tag.SOURCE_URI: redact(uri), Tag.WEIGHTS_SHA256: digest,
                                         **ctx.run_tags}, key=f"loaded:{digest[:20]}")
    tracker.end(run_id)
    tracker.set_tags(ctx.parent, {Tag.ORIGINAL_SHA256: digest})
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
