"""The job pipeline on a Ray cluster (local or remote):

  [1] splits per scenario and seed (Parquet); an image folder decoded once over the cluster (``prepare``)
  [2] the original model (trained once, or loaded)
  [3] the retrain oracle per split (cached)      [4] every method: its preset on every seed, a Ray Tune
  sweep on the first seed, replicates of the best trial, the chosen configuration (``compare``)
  [5] summary tables; each method's chosen model registered per scenario

Every stage logs into one MLflow run tree; any failure marks the open runs FAILED (Ctrl-C, SIGTERM:
KILLED).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import yaml

from camu.weights import load_weights
from orchestrator.driver.context import JobRun, data_config
from orchestrator.driver.method_stage import compare_method
from orchestrator.driver.prepare import prepare_data
from orchestrator.driver.reference_models import load_original, train_stage
from orchestrator.driver.references import references
from orchestrator.execution.cluster import check_cluster_resources, check_storage, ensure_ray
from orchestrator.execution.placement import PlacementGroupReaper
from orchestrator.inputs import InputError
from orchestrator.job.spec import JobSpec
from orchestrator.job.uris import tracking_uri_problem
from orchestrator.job.validate import CheckedJob
from orchestrator.progress import PROGRESS, quiet_libraries, say, stage
from orchestrator.record import summary
from orchestrator.record.identity import (
    code_hash,
    experiment_name,
    owner,
    registered_model_name,
    run_identity_tags,
)
from orchestrator.record.liveness import DriverHeartbeat, close_if_driver_gone, driver_tags
from orchestrator.record.run_identity import Tag, content_hash, trial_folder, trials_root
from orchestrator.record.served_model import LogitsOnly
from orchestrator.record.tracking import Tracker, closing_runs, default_tracking_uri, flatten, open_store
from orchestrator.secrets import redact_data
from orchestrator.worker.loading import new_model
from orchestrator.worker.reporting import remove_stale_checkpoint_folders


@dataclass
class JobOutcome:
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    tracking_uri: str
    summary: pa.Table
    registered: dict[str, str] = field(default_factory=dict)
    job: str = ""
    report_path: Path | None = None   # the comparison report (also logged to the parent run)
    report_url: str | None = None     # ... as the MLflow UI shows it
    report_error: str | None = None   # why there is no report (the job itself succeeded)
    stored: str = ""                  # how much the job stored, and where


def _scenario(ctx: JobRun, index: int, original: Any, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Stages 3-4 for one scenario: the references of every seed, then every method."""
    spec, tracker = ctx.spec, ctx.tracker
    sc = spec.scenarios[index]
    child = tracker.find_or_create_run(ctx.experiment_id, sc.name,
                                       {Tag.ROLE: "scenario", Tag.SCENARIO: sc.name, Tag.JOB: spec.name,
                                        **ctx.run_tags},
                                       key=f"{ctx.parent}:{sc.name}", parent=ctx.parent)
    ctx.runs.append(child)
    tracker.log_params(child, {"scenario": {"name": sc.name, "kind": sc.kind, **_jsonable(sc.options)},
                               "seeds": spec.seeds, "methods": [m.name for m in spec.methods]})
    refs = [references(ctx, sc, seed, ctx.checked.splits[(sc.name, seed)], child, original, rows)
            for seed in spec.seeds]
    methods = [m for m in spec.methods if m.runs_on(sc.name)]
    for method in methods:
        compare_method(ctx, sc, method, refs, child, rows)
    registered = {}
    for method in methods:
        registered.update(_register(ctx, sc.name, method.name, child, rows))
    tracker.log_parquet(child, summary.to_table([r for r in rows if r["scenario"] == sc.name]), "eval/summary.parquet")
    tracker.end(child)
    ctx.runs.remove(child)
    return registered


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(options, default=str))


def _register(ctx: JobRun, scenario: str, method: str, child: str, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Log the chosen configuration's model of (scenario, method), first seed, as an MLflow PyTorch model
    in its trial run and register it (alias 'candidate'). The retrain row is the oracle's: not registered."""
    chosen = summary.chosen_rows(rows, scenario, method)
    if not chosen or method == "retrain":
        if not chosen:
            say(f"    {scenario}/{method}: no finished configuration; nothing registered")
        return {}
    best = min(chosen, key=lambda r: r["seed"])
    spec = ctx.spec
    folder = trial_folder(trials_root(ctx.job_dir, scenario), method, best["seed"], best["trial_id"])
    weights = folder / "weights.safetensors"
    model = load_weights(new_model(data_config(spec), ctx.data, 0), weights)
    example = ctx.data.test.fetch(torch.arange(2), torch.device("cpu")).numpy()
    name = registered_model_name(spec.tracking.registered_model or f"camu-{spec.name}", spec.tracking.namespace,
                                 scenario, method)
    _, version = ctx.tracker.log_and_register_model(
        best["run_id"], LogitsOnly(model.eval()), example, weights, name,
        {Tag.SCENARIO: scenario, Tag.METHOD: method, Tag.TRIAL_ID: best["trial_id"], Tag.JOB: spec.name})
    ctx.tracker.set_tags(child, {Tag.best_trial(method): best["trial_id"],
                                 Tag.registered_model(method): f"{name}/{version}"})
    for row in chosen:
        ctx.tracker.set_tags(row["run_id"], {Tag.IS_BEST: "true"})
    ctx.tracker.log_metrics(child, {f"best.{method}.avg_gap": best["avg_gap"],
                                    f"best.{method}.objective": best["objective"]})
    say(f"    {scenario}/{method}: {best['trial_id']} (avg gap {best['avg_gap']:.2f}) registered as {name} v{version}")
    return {f"{scenario}/{method}": f"models:/{name}/{version}"}


# ----------------------------------------------------------------------------- the job
def resume_job(ident: str, tracking_uri: str | None = None, address: str | None = None,
               workdir: str | Path | None = None, accept_owner: str | None = None,
               allow_code_change: bool = False) -> JobOutcome:
    """Continue an interrupted job (by name among the caller's own job runs, or by parent run id): the
    same job file (as recorded in its parent run) and the same submission, so finished stages are reused
    (model cache, finished trials), unfinished trials continue from their last checkpoint, and the
    MLflow run tree is continued rather than duplicated. Nothing pickled is read: each sweep is rebuilt
    from the job spec and the MLflow record (``sweep.recorded_trials``). Another owner's job is refused
    unless ``accept_owner`` names that owner (its job file's plugins would be imported here), and so is
    a job whose code differs from this camu-orch's unless ``allow_code_change``."""
    from orchestrator.job.validate import check_job

    tracker = open_store(tracking_uri or default_tracking_uri(workdir))
    parent = summary.find_job_run(tracker, ident)
    submission = parent.data.tags.get(Tag.SUBMISSION)
    if not submission:
        raise LookupError(f"run {parent.info.run_id} is not a camu-orch job run")
    _check_resumable(tracker, parent, accept_owner, allow_code_change)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            job_file = tracker.download(parent.info.run_id, "job.yaml", tmp)
        except Exception as err:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise LookupError(f"run {parent.info.run_id} has no job.yaml artifact ({str(err)[:200]}), so its job "
                              f"cannot be resumed; submit the job file again") from None
        checked = check_job(job_file, check_data=True, local=address is None)
    say(f"resuming job {checked.spec.name} (submission {submission}, parent run {parent.info.run_id}, "
        f"was {parent.info.status})")
    # the recorded job.yaml has its credentials redacted: the store is the one being resumed from
    # the job's own experiment, whoever resumes it (its name need not be the resumer's namespace)
    experiment = (parent.info.experiment_id, tracker.client.get_experiment(parent.info.experiment_id).name)
    return run_job(checked, address=address, submission=submission, workdir=workdir, tracking_uri=tracker.uri,
                   experiment=experiment)


def _check_resumable(tracker: Tracker, parent: Any, accept_owner: str | None, allow_code_change: bool) -> None:
    """Refuse to resume another user's job, a job whose driver is still alive, or one recorded by other code."""
    tags = parent.data.tags
    recorded_owner = tags.get(Tag.OWNER, "")
    if recorded_owner != owner() and recorded_owner != accept_owner:
        raise LookupError(
            f"job run {parent.info.run_id} belongs to {recorded_owner or 'an unknown owner'}, not to you ({owner()}); "
            f"resuming it would import the plugins its job file names and read its storage. If you trust that "
            f"user's job, pass --accept-owner {recorded_owner or 'OWNER'}; otherwise submit the job file yourself")
    if close_if_driver_gone(tracker, parent) == "alive":
        raise LookupError(f"job run {parent.info.run_id} is still running (driver {tags.get(Tag.DRIVER, '?')}, "
                          f"alive); stop it first (camu-orch stop, or Ctrl-C in its terminal)")
    recorded = tags.get(Tag.CODE_HASH)
    if recorded and recorded != code_hash() and not allow_code_change:
        raise LookupError(
            f"job run {parent.info.run_id} was run by other code (camu {tags.get(Tag.CODE_VERSION, '?')}, code hash "
            f"{recorded}; this is {code_hash()}): its finished trials and the rest would not be comparable. Resume it "
            f"with the code that started it, submit it again, or pass --allow-code-change to mix them knowingly")


def _tracker_for(spec: JobSpec, workdir: Path, uri: str | None = None) -> Tracker:
    uri = uri or spec.tracking.uri or default_tracking_uri(workdir)
    problem = tracking_uri_problem(uri)
    if problem:  # MLFLOW_TRACKING_URI is checked here (a job file's tracking.uri already was)
        raise InputError("MLFLOW_TRACKING_URI", [f"MLFLOW_TRACKING_URI: {problem}"])
    tracker = Tracker(uri)
    tracker.ping()  # an unreachable store fails before Ray starts or anything trains
    return tracker


def run_job(checked: CheckedJob, address: str | None = None, submission: str | None = None,
            workdir: str | Path | None = None, tracking_uri: str | None = None,
            experiment: tuple[str, str] | None = None) -> JobOutcome:
    """Run a validated job end to end and return where its record lives (``tracking_uri``: the store a
    resumed job continues in, which its recorded, redacted job file may not name in full)."""
    spec = checked.spec
    quiet_libraries()
    workdir = Path(workdir or os.getcwd()).resolve()
    tracker = _tracker_for(spec, workdir, tracking_uri)
    ensure_ray(spec, address)
    check_cluster_resources(spec)
    check_storage(spec)
    if experiment is not None:  # a resumed job continues in the experiment that holds it
        experiment_id, exp_name = experiment
    else:
        exp_name = experiment_name(spec.tracking.experiment or spec.name, spec.tracking.namespace)
        experiment_id = tracker.experiment(exp_name, owner=None if spec.tracking.namespace == "shared" else owner())
    submission = submission or uuid.uuid4().hex[:8]
    storage, cache_dir, jobs_root = spec.storage.locations(workdir)
    identity = run_identity_tags()
    parent = tracker.find_or_create_run(experiment_id, spec.name,
                                        {Tag.ROLE: "job", Tag.JOB: spec.name, Tag.SUBMISSION: submission,
                                         Tag.SPEC_HASH: content_hash(spec.model_dump(mode="json")),
                                         Tag.NAMESPACE: spec.tracking.namespace,
                                         Tag.OBJECTIVES: ",".join(spec.sweep.objectives or []),
                                         Tag.CHOOSE: spec.sweep.choose.describe(), **identity},
                                        key=f"job:{spec.name}:{submission}")
    # a resumed job: this code, this driver (its owner stays the one who started it)
    tracker.set_tags(parent, {**{k: v for k, v in identity.items() if k != Tag.OWNER}, **driver_tags()})
    job_dir = jobs_root / spec.name / submission
    ctx = JobRun(spec, checked, tracker, tracker.uri, experiment_id, exp_name, parent, storage, cache_dir, job_dir,
                 [parent], submission=submission, run_tags={Tag.JOB_RUN: parent, **identity})
    registered: dict[str, str] = {}
    with closing_runs(tracker, ctx.runs, experiment_id), DriverHeartbeat(tracker, parent), PlacementGroupReaper(), \
            _live():
        job_dir.mkdir(parents=True, exist_ok=True)
        tracker.log_params(parent, flatten(redact_data(spec.model_dump(mode="json"))))
        tracker.log_text(parent, yaml.safe_dump(redact_data(checked.raw), sort_keys=False), "job.yaml")
        stage(1, f"splits: {len(checked.splits)} (scenario, seed) pair(s)")
        prepare_data(ctx)  # an image folder decoded once, over the cluster, before anything reads it
        stage(2, "original model")
        original = load_original(ctx) if spec.original.uri else train_stage(
            ctx, "original", None, torch.arange(len(ctx.data.train)), "original")
        tracker.set_tags(parent, {Tag.ORIGINAL_RUN_ID: original.run_id})
        rows: list[dict[str, Any]] = []
        for index in range(len(spec.scenarios)):
            registered.update(_scenario(ctx, index, original, rows))
        stage(5, "summary")
        remove_stale_checkpoint_folders()
        table = summary.to_table(rows)
        tracker.log_parquet(parent, table, "eval/summary.parquet")
        for key, model_uri in registered.items():
            tracker.set_tags(parent, {Tag.registered(key): model_uri})
        stored = _storage_used(ctx)
    outcome = JobOutcome(experiment_id, exp_name, parent, tracker.uri, table, registered, spec.name, stored=stored)
    _report(tracker, outcome, job_dir / "report.html")
    return outcome


def _storage_used(ctx: JobRun) -> str:
    """Bytes this job stored (MLflow artifacts of its runs, its job folder, its Ray folders that remain),
    logged as ``storage.*`` metrics of the job run; the one-line answer for the summary."""
    from orchestrator.driver.retention import artifact_bytes, folder_bytes, human

    try:
        return _measure_storage(ctx, artifact_bytes, folder_bytes, human)
    except Exception as err:  # noqa: BLE001 - a measurement, never a reason to fail the job
        return f"not measured ({type(err).__name__}: {str(err)[:200]})"


def _measure_storage(ctx: JobRun, artifact_bytes: Any, folder_bytes: Any, human: Any) -> str:
    runs = [ctx.parent] + [r.info.run_id for r in ctx.tracker.search_all(
        ctx.experiment_id, f"tags.`{Tag.JOB_RUN}` = '{ctx.parent}'")]
    artifacts = artifact_bytes(ctx.tracker, runs)
    job_folder = folder_bytes(ctx.job_dir)
    ray_folders = 0 if "://" in ctx.storage else sum(
        folder_bytes(f) for f in Path(ctx.storage).glob(f"{ctx.spec.name}-*") if f.is_dir())
    ctx.tracker.log_metrics(ctx.parent, {"storage.artifact_bytes": artifacts, "storage.job_folder_bytes": job_folder,
                                         "storage.ray_bytes": ray_folders})
    line = (f"{human(artifacts)} of MLflow artifacts in {len(runs)} runs, {human(job_folder)} in {ctx.job_dir}, "
            f"{human(ray_folders)} of Ray checkpoints left (weights kept: {ctx.spec.storage.keep_weights})")
    say(f"    stored: {line}")
    return line


@contextlib.contextmanager
def _live() -> Iterator[None]:
    """The live progress line for the job's stages (stopped before the summary prints)."""
    PROGRESS.begin()
    try:
        yield
    finally:
        PROGRESS.end()


def _report(tracker: Tracker, outcome: JobOutcome, path: Path) -> None:
    """The comparison report of the finished job, written beside its trials and logged to the parent
    run. The record is complete without it, so a failure here is a warning, not a failed job."""
    from orchestrator.record.report import build_report

    say("building the comparison report")
    try:
        built = build_report(tracker, outcome.parent_run_id, path)
    except Exception as err:  # noqa: BLE001 - reported to the user with the command that retries it
        outcome.report_error = f"{type(err).__name__}: {str(err)[:300]}"
        return
    outcome.report_path, outcome.report_url = built.path, built.artifact_url
