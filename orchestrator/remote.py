"""Submitting jobs to a running Ray cluster through the Ray Jobs API (plain HTTP, not Ray Client).

The project directory travels as the runtime_env ``working_dir`` (data, stores, checkpoints and
caches excluded); the entrypoint is ``python -m orchestrator run JOB`` with the cluster's Python, so a
node needs only the project's dependencies (the Ray image plus requirements), not this project's
console script. Tracking settings travel as environment variables; a tracking store that only exists
on this machine is refused first.
Ray's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) goes into the request
headers only: never into job files, runtime_env, logs or MLflow.
"""

from __future__ import annotations

import os
import shlex
import uuid
from pathlib import Path
from typing import Any

from orchestrator.spec import JobSpec, JobSpecError

# Never uploaded with the code: data, local stores, run outputs, environments, VCS metadata.
EXCLUDES = [".git", ".venv", "venv", "data", "mlflow.db", "*.db", "mlartifacts", "camu_runs",
            ".camu-cache", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "*.safetensors", "*.pt", "*.pth",
            ".whl", ".gl", "*.egg-info",
            # secrets: compose .env files with passwords, tokens
            ".env", "*.env", ".env.*", "auth_token", "*.pem", "*.key"]
# Credentials MLflow clients read; forwarded to the job when set here, never printed or logged.
MLFLOW_SECRET_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
PASSTHROUGH_VARS = ("MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def transport_warnings(address: str) -> list[str]:
    """Warnings about how this submission travels: a token sent in clear over the network."""
    from urllib.parse import urlsplit

    parts = urlsplit(address)
    if auth_headers() and parts.scheme == "http" and parts.hostname not in LOOPBACK:
        return [f"the Ray auth token goes to {parts.hostname} over plain http; anyone on the network path can read "
                f"it. Use https (a TLS proxy in front of the dashboard) or an SSH tunnel to localhost"]
    return []


def check_cluster(address: str) -> None:
    """Refuse, before sending anything, a cluster whose Ray differs from the one the job was written for
    (the entrypoint runs with the cluster's Python and packages)."""
    import ray
    import requests

    try:
        reply = requests.get(f"{address.rstrip('/')}/api/version", headers=auth_headers(), timeout=10)
        cluster = str(reply.json().get("ray_version", "")) if reply.ok else ""
    except (requests.RequestException, ValueError):
        return  # the submission itself reports an unreachable or odd endpoint
    if cluster and cluster != ray.__version__:
        raise JobSpecError("--address", [f"--address: the cluster at {address} runs Ray {cluster} but camu-orch needs "
                                         f"Ray {ray.__version__}; start the cluster from the project's image "
                                         f"(cluster/images/Dockerfile) or install ray=={ray.__version__} on its nodes"])


def resolve_address(address: str | None) -> str | None:
    """--address, else RAY_ADDRESS; must be the dashboard's http(s) URL for the Jobs API."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and not address.startswith(("http://", "https://")):
        raise JobSpecError("--address", [f"--address: {address!r} is not a Jobs API address; use the dashboard URL, "
                                         f"e.g. http://HEAD:8265 (ray:// Ray Client addresses are not supported)"])
    return address


def auth_headers() -> dict[str, str]:
    """Bearer token for a cluster with Ray token authentication, when one is configured here."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token:
        candidate = Path(path).expanduser() if path else Path.home() / ".ray" / "auth_token"
        if candidate.is_file():
            token = candidate.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def remote_tracking_uri(spec: JobSpec) -> str:
    """The tracking URI the cluster will use; refuses stores that exist only on this machine."""
    uri = spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise JobSpecError("tracking.uri", [
            "tracking.uri: no tracking server is set, and the default ./mlflow.db would exist only on this machine; "
            "export MLFLOW_TRACKING_URI=http://MLFLOW-HOST:5000 (a server the cluster can reach) and submit again"])
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        raise JobSpecError("tracking.uri", [
            f"tracking.uri: {uri} is a store on this machine that the cluster cannot reach (and sqlite is not safe for "
            f"many writers); use an MLflow server, e.g. http://MLFLOW-HOST:5000"])
    return uri


def job_env(spec: JobSpec) -> dict[str, str]:
    """Environment variables for the job: tracking URI and credentials, selected Ray Train settings."""
    env = {"MLFLOW_TRACKING_URI": remote_tracking_uri(spec), "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    for name in MLFLOW_SECRET_VARS + PASSTHROUGH_VARS:
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def project_root(start: Path) -> Path:
    """The folder holding pyproject.toml above ``start`` (what travels as working_dir)."""
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").is_file() and (folder / "orchestrator").is_dir():
            return folder
    raise JobSpecError("working_dir", [f"no camu-orch project (pyproject.toml + orchestrator/) above {start}; "
                                       f"submit from a checkout of the project"])


def build_submission(spec: JobSpec, job_path: Path, overrides: list[str]) -> dict[str, Any]:
    """Arguments of ``JobSubmissionClient.submit_job`` for this job."""
    root = project_root(Path.cwd().resolve())
    job_path = job_path.resolve()
    try:
        relative = job_path.relative_to(root)
    except ValueError:
        raise JobSpecError(str(job_path), [f"(file): {job_path} is outside the project {root} that travels to the "
                                           f"cluster; copy it under {root / 'jobs'}"]) from None
    args = ["python", "-m", "orchestrator", "run", str(relative)] + [a for o in overrides for a in ("--set", o)]
    extra = _cluster_runtime_env(root)
    return {
        "entrypoint": shlex.join(args),
        "submission_id": f"camu-{spec.name}-{uuid.uuid4().hex[:8]}",
        "runtime_env": {"working_dir": str(root), "excludes": EXCLUDES + list(extra.get("excludes", [])),
                        "env_vars": {**extra.get("env_vars", {}), **job_env(spec)}},
        "metadata": {"camu.job": spec.name},
    }


def _cluster_runtime_env(root: Path) -> dict[str, Any]:
    """cluster/runtime_env.yaml: extra excludes and non-secret env vars for every submission."""
    import yaml

    path = root / "cluster" / "runtime_env.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {}
    unknown = set(data) - {"excludes", "env_vars"}
    if unknown:
        raise JobSpecError(str(path), [f"{k}: only excludes and env_vars are merged into submissions" for k in sorted(unknown)])
    secretish = [k for k in data.get("env_vars", {}) if any(w in k.upper() for w in ("PASSWORD", "TOKEN", "SECRET"))]
    if secretish:
        raise JobSpecError(str(path), [f"env_vars.{k}: secrets do not belong in a committed file; export it in the "
                                       f"submitting shell or set it on the cluster" for k in secretish])
    return {"excludes": data.get("excludes", []), "env_vars": {k: str(v) for k, v in data.get("env_vars", {}).items()}}


PREFLIGHT_TIMEOUT_S = 300


def preflight(client: Any, submission: dict[str, Any], timeout_s: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Before the real job, run ``python -m orchestrator doctor`` on the cluster with the same runtime_env
    (its upload is reused by the job): the cluster's ``python`` must import the project and every dependency
    at the pinned Ray version. A failure is a ``JobSpecError`` quoting the probe's last log lines."""
    import time

    probe = {**submission, "entrypoint": "python -m orchestrator doctor",
             "submission_id": submission["submission_id"].replace("camu-", "camu-preflight-", 1),
             "metadata": {"camu.preflight": "true"}}
    probe_id = submit_with_retry(client, probe)
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = str(client.get_job_status(probe_id).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(1)
    if status == "SUCCEEDED":
        return
    logs = client.get_job_logs(probe_id)[-1500:] if status else ""
    if status not in ("FAILED", "STOPPED"):
        client.stop_job(probe_id)
    raise JobSpecError("--address", [
        f"--address: the cluster cannot run camu-orch jobs (preflight {probe_id}: {status or 'no answer'} after "
        f"{timeout_s:.0f}s). The entrypoint runs `python -m orchestrator` with the `python` on the cluster nodes' PATH, "
        f"which must have the project's dependencies: start Ray from that environment (activate it before "
        f"`ray start`) or use cluster/images/Dockerfile. Skip this check with --no-check. Probe output:\n{logs}"])


def submit_with_retry(client: Any, submission: dict[str, Any], attempts: int = 12) -> str:
    """Submit; a freshly started head answers "no available agent" for a few seconds, so retry that."""
    import time

    for attempt in range(attempts):
        try:
            return client.submit_job(**submission)
        except RuntimeError as err:
            if "try again later" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(min(2 ** attempt, 10))
    raise AssertionError("unreachable")


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=auth_headers())
