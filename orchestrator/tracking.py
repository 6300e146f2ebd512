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
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

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


def redact(uri: str) -> str:
    """Hide credentials embedded in a URI (scheme://user:password@host)."""
    return re.sub(r"//[^/@]+@", "//***@", uri)


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


def _retry(fn: Callable[[], T], what: str) -> T:
    """Call ``fn`` with exponential backoff on transient tracking errors."""
    delay = 0.5
    for attempt in range(RETRIES):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - mlflow raises many types for transport/db errors
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

    def experiment(self, name: str) -> str:
        """Id of experiment ``name``, created (with a local artifact root for sqlite stores) if missing."""
        found = _retry(lambda: self.client.get_experiment_by_name(name), "get experiment")
        if found is not None:
            if found.lifecycle_stage == "deleted":
                _retry(lambda: self.client.restore_experiment(found.experiment_id), "restore experiment")
            return found.experiment_id
        return _retry(lambda: self.client.create_experiment(name, artifact_location=local_artifact_root(self.uri)),
                      "create experiment")

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
        existing = self.find_run(experiment_id, {"camu.key": key})
        if existing:
            _retry(lambda: self.client.update_run(existing, status="RUNNING"), "reopen run")
            return existing
        all_tags = {**tags, "camu.key": key, **({PARENT_TAG: parent} if parent else {})}
        run = _retry(lambda: self.client.create_run(experiment_id, run_name=name, tags=all_tags), "create run")
        return run.info.run_id

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        _retry(lambda: self.client.set_terminated(run_id, status=status), "end run")

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    # ------------------------------------------------------------------ logging
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (flattened), skipping ones already logged with the same value (resume-safe)."""
        from mlflow.entities import Param

        flat = flatten(params)
        have = self.client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if have.get(k) != v and k not in have]
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

    def download_uri(self, uri: str, dest: str | Path) -> Path:
        """Fetch an MLflow artifact URI (runs:/..., models:/..., mlflow-artifacts:/...) into ``dest``.
        For a models:/ URI of a logged PyTorch model, its state dict is written as safetensors."""
        import mlflow
        import mlflow.artifacts

        mlflow.set_tracking_uri(self.uri)
        if uri.startswith("models:/"):
            import mlflow.pytorch
            from safetensors.torch import save_file

            module = _retry(lambda: mlflow.pytorch.load_model(uri, map_location="cpu"), "load model")
            inner = getattr(module, "model", module)
            path = Path(dest) / "weights.safetensors"
            save_file({k: v.contiguous() for k, v in inner.state_dict().items()}, str(path))
            return path
        return Path(_retry(lambda: mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)),
                           "download artifact"))

    def list_child_runs(self, experiment_id: str, parent: str) -> list[Any]:
        return _retry(lambda: self.client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'",
                                                      max_results=5000), "search children")

    # ------------------------------------------------------------------ models
    def log_and_register_model(self, run_id: str, model: Any, example: Any, registered_name: str,
                               tags: Mapping[str, str]) -> tuple[str, str]:
        """Log ``model`` as an MLflow PyTorch model in ``run_id`` and register it; returns (model_uri, version)."""
        import mlflow
        import mlflow.pytorch

        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        run = self.client.get_run(run_id)
        with _quiet_mlflow():
            info = _retry(lambda: mlflow.pytorch.log_model(
                model, name="model", input_example=example, run_id=run_id, tags=dict(tags),
                serialization_format="pt2", registered_model_name=registered_name), "log model")
        versions = self.client.search_model_versions(f"name = '{registered_name}'")
        version = max((v for v in versions if v.run_id == run.info.run_id), key=lambda v: int(v.version)).version
        self.client.set_registered_model_alias(registered_name, "candidate", version)
        for k, v in tags.items():
            self.client.set_model_version_tag(registered_name, version, k, v)
        return info.model_uri, str(version)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def closing_runs(tracker: Tracker, run_ids: list[str]) -> Iterator[list[str]]:
    """Ends every run in ``run_ids`` (which the body may extend) as FINISHED on success, KILLED on
    Ctrl-C and FAILED on any other error; whatever was logged stays."""
    try:
        yield run_ids
    except KeyboardInterrupt:
        _end_all(tracker, run_ids, "KILLED")
        raise
    except BaseException:
        _end_all(tracker, run_ids, "FAILED")
        raise
    else:
        _end_all(tracker, run_ids, "FINISHED")


def _end_all(tracker: Tracker, run_ids: list[str], status: str) -> None:
    for run_id in reversed(run_ids):
        try:
            if tracker.status(run_id) == "RUNNING":
                tracker.end(run_id, status)
        except Exception as err:  # noqa: BLE001 - best effort while already failing
            log.error("could not mark run %s %s: %s", run_id, status, err)
