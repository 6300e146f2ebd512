"""Everything MLflow: the only module of the project that imports ``mlflow``.

Runs are addressed by explicit ids through ``MlflowClient`` (never the fluent ``start_run`` global
state), so that the driver, Tune trial drivers and rank-0 Train workers can all log into the same
run tree from different processes. Calls are retried with backoff (sqlite "database is locked",
a tracking server briefly away).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import JobFailedError
from orchestrator.inputs import InputError
from orchestrator.record.run_identity import Tag
from orchestrator.secrets import redact

log = logging.getLogger(__name__)
# progress bars on stderr would garble `camu-orch results --format json` piped into other tools
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow's HTTP client alone retries 7 times with doubling waits (minutes per call) before our own
# backoff even starts; bound it so that a tracking server that stays down fails the job in minutes
# (resumable with `camu-orch resume`) instead of hanging it. Users can still override both.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
T = TypeVar("T")
PARENT_TAG = "mlflow.parentRunId"
RETRIES = 6
SEARCH_PAGE = 1000  # runs per page of a search (MLflow's default page size)


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a sqlite store in the working directory (MLflow 3's default,
    made absolute so that Ray worker processes in other directories find the same store)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(workdir or os.getcwd()).resolve() / 'mlflow.db'}"


def local_artifact_root(uri: str) -> str | None:
    """For a local sqlite store, artifacts go beside it in ./mlartifacts; servers manage their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    return None


def open_store(uri: str | None) -> Tracker:
    """The tracking store a read-only command (results, resume) reads: ``uri``, else the default. It must
    already exist: reading never creates a store (a sqlite file named by mistake is not made)."""
    from orchestrator.job.uris import tracking_uri_problem

    uri = uri or default_tracking_uri()
    problem = tracking_uri_problem(uri)
    if problem:

        raise InputError("--tracking-uri", [f"--tracking-uri: {problem}"])
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser()
        if not db.is_file():
            raise LookupError(f"no MLflow store at {db}; run a job here first, or pass --tracking-uri (or set "
                              f"MLFLOW_TRACKING_URI) to the store that holds the job")
    tracker = Tracker(uri)
    tracker.ping()
    return tracker


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"} with values as strings (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:6000]
    return out


class ParamChanged(JobFailedError, ValueError):
    """A param logged again with another value than the run already holds (MLflow keeps the first one):
    the job's inputs differ from those the run was started with."""

    def __init__(self, run_id: str, changed: Mapping[str, tuple[str, str]]) -> None:
        self.run_id, self.changed = run_id, dict(changed)
        listed = "; ".join(f"{k}: logged {redact(old)[:200]!r}, now {redact(new)[:200]!r}"
                           for k, (old, new) in self.changed.items())
        super().__init__(f"run {run_id} already holds other values for param(s) {listed}. A run's params cannot "
                         f"change: run it with the inputs it was started with, or submit it as a new job")


def _retry(fn: Callable[[], T], what: str) -> T:
    """Call ``fn`` with exponential backoff on transient tracking errors."""
    delay = 0.5
    for attempt in range(RETRIES):
        try:
            return fn()
        except Exception as err:
            transient = any(s in str(err).lower() for s in ("locked", "timed out", "connection", "temporar",
                                                             "503", "502", "max retries", "unavailable",
                                                             "migration"))  # two processes creating one sqlite store
            if not transient or attempt == RETRIES - 1:
                raise
            log.warning("MLflow %s failed (%s); retrying in %.1fs", what, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30)
    raise AssertionError("unreachable")


class Tracker:
    """A thin, retrying facade over ``MlflowClient`` with explicit run ids."""

    _shared: ClassVar[dict[tuple[int, str], Tracker]] = {}

    @classmethod
    def shared(cls, uri: str) -> Tracker:
        """One tracker per (process, store): a client (and its database engine) is built once per process,
        not once per trial."""
        key = (os.getpid(), uri)
        if key not in cls._shared:
            cls._shared[key] = cls(uri)
        return cls._shared[key]

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = _retry(lambda: MlflowClient(tracking_uri=uri, registry_uri=uri), "open store")

    # ------------------------------------------------------------------ experiments and runs
    def ping(self) -> None:
        """Fail fast (clear error) when the store is unreachable: a server gets one short health
        request (MLflow's own client would retry for minutes), a database one query."""
        try:
            if self.uri.startswith(("http://", "https://")):
                import requests

                requests.get(self.uri.rstrip("/") + "/health", timeout=10).raise_for_status()
            _retry(lambda: self.client.search_experiments(max_results=1), "open store")
        except Exception as err:  # noqa: BLE001
            raise ConnectionError(f"tracking.uri: cannot reach MLflow at {redact(self.uri)}: {err}") from None

    def experiment(self, name: str, owner: str | None = None) -> str:
        """Id of experiment ``name``, created (with a local artifact root for sqlite stores, tagged with its
        ``owner``) if missing. An owned experiment that another user created, or a deleted one that is not
        the caller's, is refused: a job never writes into, or brings back, someone else's experiment."""
        found = _retry(lambda: self.client.get_experiment_by_name(name), "get experiment")
        if found is not None:
            holder = found.tags.get(Tag.OWNER)
            if owner is not None and holder not in (None, owner):
                raise PermissionError(f"tracking.experiment: {name!r} belongs to {holder}, not to you ({owner}); "
                                      f"choose another tracking.experiment")
            if found.lifecycle_stage == "deleted":
                if owner is None or holder != owner:
                    raise PermissionError(
                        f"tracking.experiment: {name!r} was deleted{f' by its owner {holder}' if holder else ''}; "
                        f"restore it in the MLflow UI if it is yours to restore, or choose another tracking.experiment")
                _retry(lambda: self.client.restore_experiment(found.experiment_id), "restore experiment")
            return found.experiment_id
        tags = {Tag.OWNER: owner} if owner else None
        return _retry(lambda: self.client.create_experiment(name, artifact_location=local_artifact_root(self.uri),
                                                            tags=tags), "create experiment")

    def find_run(self, experiment_id: str, tags: Mapping[str, str]) -> str | None:
        """The newest live run carrying every tag in ``tags`` (used to continue rather than duplicate)."""
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = _retry(lambda: self.client.search_runs([experiment_id], query, max_results=1,
                                                      order_by=["attributes.start_time DESC"]), "search runs")
        return runs[0].info.run_id if runs else None

    def find_or_create_run(self, experiment_id: str, name: str, tags: Mapping[str, str], key: str,
                           parent: str | None = None) -> str:
        """The run whose ``camu.key`` tag is ``key``, or a new one (nested under ``parent``). A found run is
        marked RUNNING again so that a resumed stage shows as active."""
        existing = self.find_run(experiment_id, {Tag.KEY: key})
        if existing:
            _retry(lambda: self.client.update_run(existing, status="RUNNING"), "reopen run")
            return existing
        all_tags = {**tags, Tag.KEY: key, **({PARENT_TAG: parent} if parent else {})}
        run = _retry(lambda: self.client.create_run(experiment_id, run_name=name, tags=all_tags), "create run")
        return run.info.run_id

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        _retry(lambda: self.client.set_terminated(run_id, status=status), "end run")

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # ------------------------------------------------------------------ logging
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (flattened). One already logged with the same value is skipped (a resumed stage logs
        its params again); one logged with another value raises ``ParamChanged`` naming it, before
        anything is logged: MLflow keeps a run's first value, so the record would silently disagree with
        what ran."""
        from mlflow.entities import Param

        flat = flatten(params)
        have = _retry(lambda: self.client.get_run(run_id), "get run").data.params
        changed = {k: (have[k], v) for k, v in flat.items() if k in have and have[k] != v}
        if changed:
            raise ParamChanged(run_id, changed)
        new = [Param(k, v) for k, v in flat.items() if k not in have]
        for i in range(0, len(new), 100):
            chunk = new[i: i + 100]
            _retry(lambda chunk=chunk: self.client.log_batch(run_id, params=chunk), "log params")

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):
            chunk = items[i: i + 1000]
            _retry(lambda chunk=chunk: self.client.log_batch(run_id, metrics=chunk), "log metrics")

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(run_id, tags=items), "set tags")

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        _retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), "log artifact")

    def log_artifacts(self, run_id: str, folder: str | Path, artifact_path: str) -> None:
        """Every file in ``folder`` under ``artifact_path``."""
        _retry(lambda: self.client.log_artifacts(run_id, str(folder), artifact_path), "log artifacts")

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        _retry(lambda: self.client.log_text(run_id, text, artifact_file), "log text")

    def log_parquet(self, run_id: str, table: pa.Table, artifact_file: str) -> None:
        """Write ``table`` as Parquet and upload it as ``artifact_file`` (e.g. eval/samples.parquet)."""
        folder, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            pq.write_table(table, local)
            self.log_artifact(run_id, local, folder or None)

    def download(self, run_id: str, artifact_path: str, dest: str | Path) -> Path:
        return Path(_retry(lambda: self.client.download_artifacts(run_id, artifact_path, str(dest)), "download"))

    def download_weights(self, uri: str, dest: str | Path) -> Path:
        """Fetch the weights file behind ``runs:/...``, ``models:/...`` or ``mlflow-artifacts:/...`` into
        ``dest``, never unpickling anything: a file URI is downloaded as is; for a folder (a run's
        ``model/``, a registered model) the safetensors file inside it is chosen, else a state-dict file
        (both read later with ``camu.weights.read_state_dict``). A registered model without such a file is
        refused: its pickled form is never loaded."""
        import mlflow.artifacts

        files = _retry(lambda: self._weight_files(uri), "list artifacts")
        if files is None:  # the URI names a single file
            return Path(_retry(lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dest), tracking_uri=self.uri), "download weights"))
        if not files:
            raise LookupError(f"original.uri: {redact(uri)} holds no weights file (*.safetensors, or a state dict "
                              f"*.pt/*.pth); camu-orch never loads a pickled model. Log the weights as safetensors "
                              f"(every model camu-orch registers carries extra_files/weights.safetensors)")
        chosen = files[0]
        return Path(_retry(lambda: mlflow.artifacts.download_artifacts(
            artifact_uri=f"{uri.rstrip('/')}/{chosen}", dst_path=str(dest), tracking_uri=self.uri), "download weights"))

    def _weight_files(self, uri: str) -> list[str] | None:
        """Weight files below ``uri`` (safetensors first, at most two levels deep), or None when ``uri``
        is a file."""
        import mlflow.artifacts

        from orchestrator.job.uris import WEIGHT_SUFFIXES

        top = mlflow.artifacts.list_artifacts(artifact_uri=uri, tracking_uri=self.uri)
        if not top:
            return None if Path(uri).suffix.lower() in WEIGHT_SUFFIXES else []
        found: list[str] = []
        for entry in top:
            name = entry.path.rsplit("/", 1)[-1]
            if entry.is_dir:
                below = mlflow.artifacts.list_artifacts(artifact_uri=f"{uri.rstrip('/')}/{name}", tracking_uri=self.uri)
                found += [f"{name}/{b.path.rsplit('/', 1)[-1]}" for b in below if not b.is_dir]
            else:
                found.append(name)
        weights = [f for f in found if f.lower().endswith(WEIGHT_SUFFIXES) and not f.endswith("data/model.pth")]
        return sorted(weights, key=lambda f: (not f.endswith(".safetensors"), f))

    def run(self, run_id: str) -> Any:
        return _retry(lambda: self.client.get_run(run_id), "get run")

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every logged value of ``key``, by step (the last value logged at a step wins)."""
        history = _retry(lambda: self.client.get_metric_history(run_id, key), "metric history")
        by_step = {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}
        return sorted(by_step.items())

    def search_all(self, experiment_id: str, query: str) -> list[Any]:
        """Every run of ``experiment_id`` matching ``query``, all pages."""
        found: list[Any] = []
        token = None
        while True:
            page = _retry(lambda t=token: self.client.search_runs([experiment_id], query, max_results=1000,
                                                                 page_token=t),
                          "search runs")
            found += list(page)
            token = page.token
            if not token:
                return found

    def running_runs_of_job(self, experiment_id: str, job_run: str) -> list[str]:
        """Ids of every RUNNING run the job ``job_run`` created (tag ``camu.job_run``): one search, paged."""
        query = f"tags.`{Tag.JOB_RUN}` = '{job_run}' and attributes.status = 'RUNNING'"
        return [r.info.run_id for r in self.search_all(experiment_id, query) if r.info.run_id != job_run]

    def list_child_runs(self, experiment_id: str, parent: str) -> list[Any]:
        """Every run nested directly below ``parent``, all pages of the search (a sweep may have any number)."""
        query = f"tags.`{PARENT_TAG}` = '{parent}'"
        runs: list[Any] = []
        token = None
        while True:
            page = _retry(lambda token=token: self.client.search_runs([experiment_id], query, max_results=SEARCH_PAGE,
                                                                      page_token=token), "search children")
            runs += list(page)
            token = page.token
            if not token:
                return runs

    # ------------------------------------------------------------------ models
    def log_and_register_model(self, run_id: str, model: Any, example: Any, weights: str | Path,
                               registered_name: str, tags: Mapping[str, str]) -> tuple[str, str]:
        """Log ``model`` as an MLflow PyTorch model (pt2) in ``run_id``, with its state dict as
        ``extra_files/weights.safetensors`` (what camu-orch reads back: never the pickled or exported
        model), register it and alias the version 'candidate'; returns (model_uri, version)."""
        import mlflow
        import mlflow.pytorch

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        experiment_id = self.run(run_id).info.experiment_id
        with _quiet_mlflow(), _active_experiment(experiment_id):
            info = _retry(lambda: mlflow.pytorch.log_model(
                model, name="model", input_example=example, run_id=run_id, tags=dict(tags),
                serialization_format="pt2", registered_model_name=registered_name,
                extra_files=[str(weights)]), "log model")
        versions = self.client.search_model_versions(f"name = '{registered_name}'")
        version = max((v for v in versions if v.run_id == run_id), key=lambda v: int(v.version)).version
        self.client.set_registered_model_alias(registered_name, "candidate", version)
        for k, v in tags.items():
            self.client.set_model_version_tag(registered_name, version, k, v)
        return info.model_uri, str(version)


@contextlib.contextmanager
def _active_experiment(experiment_id: str) -> Iterator[None]:
    """Make ``experiment_id`` MLflow's active experiment for the body, then restore what was active.

    ``mlflow.<flavor>.log_model(run_id=...)`` creates its logged model in the *active* experiment, not in
    the run's (MLflow 3, mlflow/mlflow#16643): without this every registered model's logged model sat in
    experiment 0 (Default), its files under ./mlruns/0/models/ of whatever folder the driver ran in."""
    import mlflow
    from mlflow.tracking import fluent

    saved_id = fluent._active_experiment_id
    saved_env = os.environ.get("MLFLOW_EXPERIMENT_ID")
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        yield
    finally:
        fluent._active_experiment_id = saved_id
        if saved_env is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = saved_env


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's INFO logs and the registry's own stderr lines ("Successfully registered model ...") stay
    off the console: camu-orch prints what was registered itself."""
    import io

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def closing_runs(tracker: Tracker, run_ids: list[str], experiment_id: str) -> Iterator[list[str]]:
    """Ends every run in ``run_ids`` (which the body may extend; the first is the job run) as FINISHED on
    success, KILLED on Ctrl-C / SIGTERM and FAILED on any other error; on an error, every other run of the
    job still RUNNING (trials whose driver was interrupted with the job) ends the same way, found by one
    tag search so that it fits in the seconds a stop leaves. Whatever was logged stays."""
    try:
        yield run_ids
    except BaseException as err:
        status = "KILLED" if _interrupted(err) else "FAILED"
        _end_all(tracker, _with_running_runs_of_job(tracker, run_ids, experiment_id), status, check=False)
        raise
    else:
        # a trial Tune ended without telling its callbacks (a time budget) may still be RUNNING: not finished
        leftovers = [r for r in _with_running_runs_of_job(tracker, run_ids, experiment_id) if r not in run_ids]
        _end_all(tracker, leftovers, "KILLED", check=False)
        _end_all(tracker, run_ids, "FINISHED", check=False)  # the job's own runs, whatever a reader marked


def _interrupted(err: BaseException) -> bool:
    """An error caused by Ctrl-C / SIGTERM (directly, or raised while the job was being stopped)."""
    from orchestrator.lifecycle import stopping

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return stopping()


def _with_running_runs_of_job(tracker: Tracker, run_ids: list[str], experiment_id: str) -> list[str]:
    """``run_ids`` followed by the job's other RUNNING runs (ended first: the job run ends last)."""
    try:
        others = tracker.running_runs_of_job(experiment_id, run_ids[0]) if run_ids else []
    except Exception as err:  # noqa: BLE001 - best effort while already failing
        log.error("could not list the job's open runs: %s", err)
        others = []
    return list(run_ids) + [r for r in others if r not in run_ids]


def _end_all(tracker: Tracker, run_ids: list[str], status: str, check: bool = True) -> None:
    """End each run (last first); ``check``: only those still RUNNING (one read per run), else end them
    blindly, which is what a stop's few seconds allow (ending an ended run again is harmless)."""
    for run_id in reversed(run_ids):
        try:
            if not check or tracker.status(run_id) == "RUNNING":
                tracker.end(run_id, status)
        except Exception as err:  # noqa: BLE001 - best effort while already failing
            log.error("could not mark run %s %s: %s", run_id, status, err)
