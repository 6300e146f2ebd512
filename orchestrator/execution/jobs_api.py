"""Submitting jobs to a running Ray cluster through the Ray Jobs API (plain HTTP, not Ray Client).

What travels is an allowlist, copied into a fresh folder that becomes the runtime_env ``working_dir``:
the ``camu/``, ``orchestrator/`` and ``jobs/`` source trees, ``pyproject.toml``, ``README.md``, the
project packages the job's ``plugins`` name and the job file, source files only (never data, stores,
dotfiles, keys or anything else that happens to sit in the checkout). The entrypoint is
``python -m orchestrator run JOB`` with the cluster's Python, so a node needs only the project's
dependencies, not this project's console script.

Security, in order: a cluster that answers the Jobs API without a token is refused (anyone who reaches
it can run code there); Ray's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) goes into
request headers only; MLflow credentials stay here unless ``--forward-credentials`` asks for them (the
runtime_env is readable by every token holder through the job list, and Ray 2.60 has no secret
channel for jobs); every request to the head has a deadline (CAMU_ORCH_HTTP_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from orchestrator.inputs import InputError
from orchestrator.job.spec import JobSpec, JobSpecError
from orchestrator.record.identity import OWNER_ENV, owner
from orchestrator.record.run_identity import Tag
from orchestrator.secrets import redact

# ----------------------------------------------------------------------------- what travels
UPLOAD_DIRS = ("camu", "orchestrator", "jobs")
UPLOAD_FILES = ("pyproject.toml", "README.md")
# Source files only: data, weights, databases, archives and key files never match these.
SOURCE_SUFFIXES = frozenset({".py", ".pyi", ".yaml", ".yml", ".toml", ".md", ".json", ".txt"})
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "venv", "site-packages", "mlruns", "mlartifacts", "camu_runs"})
# Names that hold secrets even with a source suffix (code files, *.py, are exempt: orchestrator/secrets.py).
SECRET_NAMES = (".env", ".env.*", "*.env", ".envrc", ".netrc", ".pypirc", "*.pem", "*.key", "id_rsa*", "id_dsa*",
                "id_ecdsa*", "id_ed25519*", "auth_token*", "*secret*", "*credential*", "kubeconfig*", "*.db", "*.db-*")
# Credentials MLflow clients read: forwarded only with --forward-credentials, never printed or logged.
MLFLOW_SECRET_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
PASSTHROUGH_VARS = ("MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")

# ----------------------------------------------------------------------------- bounds
HTTP_TIMEOUT_ENV = "CAMU_ORCH_HTTP_TIMEOUT_S"
DEFAULT_HTTP_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_FACTOR = 10  # a working_dir upload (PUT) may take this many times longer to be answered
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

LOOPBACK = ("localhost", "127.0.0.1", "::1")


class ClusterUnresponsiveError(TimeoutError):
    """The Ray head did not answer a request within CAMU_ORCH_HTTP_TIMEOUT_S (exit status 2)."""


def http_timeout_s() -> float:
    """Seconds one request to the Ray head may take: CAMU_ORCH_HTTP_TIMEOUT_S, default 30."""
    raw = os.environ.get(HTTP_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_HTTP_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:
        raise InputError(HTTP_TIMEOUT_ENV, [(f"{HTTP_TIMEOUT_ENV}: {raw!r} is not a number of seconds in (0, 3600]; "
                                              f"e.g. export {HTTP_TIMEOUT_ENV}=60, or unset it for the default "
                                              f"{DEFAULT_HTTP_TIMEOUT_S:g}")])
    return value


def unanswered(address: str, what: str, seconds: float) -> str:
    """The message for a head that did not answer in time."""
    return (f"--address: the Ray dashboard at {address} did not answer {what} within {seconds:g}s; check that the "
            f"head is up and reachable (ray status on the head; the SSH tunnel or port-forward still open), or "
            f"raise {HTTP_TIMEOUT_ENV} for a slow link")


# ----------------------------------------------------------------------------- the cluster's door
def transport_warnings(address: str) -> list[str]:
    """Warnings about how this submission travels: a token sent in clear over the network."""
    parts = urlsplit(address)
    if auth_headers() and parts.scheme == "http" and parts.hostname not in LOOPBACK:
        return [(f"the Ray auth token goes to {parts.hostname} over plain http; anyone on the network path can read "
                f"it. Use https (a TLS proxy in front of the dashboard) or an SSH tunnel to localhost")]
    return []


def _no_credentials(request: Any) -> Any:
    """A requests auth hook that adds nothing (and so keeps requests from using ~/.netrc)."""
    return request


def require_authentication(address: str, allow_unauthenticated: bool = False) -> list[str]:
    """Ask the Jobs API once, without any credentials, for its version. A cluster that answers runs
    anyone's code: refused with the fix, or (``--allow-unauthenticated``, meant for a throwaway test
    cluster on loopback) returned as a warning. An unreachable head is left to the bounded requests
    that follow, which report it."""
    import requests

    try:
        reply = requests.get(f"{address.rstrip('/')}/api/version", timeout=min(http_timeout_s(), 10.0),
                             auth=_no_credentials, allow_redirects=False)
        body = reply.json() if reply.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return []
    if not isinstance(body, dict) or "ray_version" not in body:
        return []
    if allow_unauthenticated:
        return [(f"the Ray cluster at {address} runs jobs for anyone who can reach it (no token authentication); "
                f"submitting anyway because of --allow-unauthenticated")]
    raise InputError("--address", [
        (f"--address: the Ray cluster at {address} answered the Jobs API without a token: anyone who can reach it can "
        f"run any code there. Start its head and workers with token authentication (RAY_AUTH_MODE=token plus a "
        f"token: cluster/README.md, the configs under cluster/ do it) and submit with RAY_AUTH_TOKEN or "
        f"RAY_AUTH_TOKEN_PATH; for a throwaway test cluster that listens on loopback only, pass "
        f"--allow-unauthenticated")])


def check_cluster(address: str) -> None:
    """Refuse, before sending anything, a cluster whose Ray differs from the one the job was written for
    (the entrypoint runs with the cluster's Python and packages)."""
    import ray
    import requests

    try:
        reply = requests.get(f"{address.rstrip('/')}/api/version", headers=auth_headers(), timeout=http_timeout_s())
        cluster = str(reply.json().get("ray_version", "")) if reply.ok else ""
    except (requests.RequestException, ValueError, AttributeError):
        return  # the submission itself reports an unreachable or odd endpoint
    if cluster and cluster != ray.__version__:
        raise InputError("--address", [(f"--address: the cluster at {address} runs Ray {cluster} but camu-orch needs "
                                         f"Ray {ray.__version__}; start the cluster from the project's image "
                                         f"(cluster/images/Dockerfile) or install ray=={ray.__version__} on its "
                                         f"nodes")])


def resolve_address(address: str | None) -> str | None:
    """--address, else RAY_ADDRESS; must be the dashboard's http(s) URL for the Jobs API."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and not address.startswith(("http://", "https://")):
        raise InputError("--address", [(f"--address: {address!r} is not a Jobs API address; use the dashboard URL, "
                                         f"e.g. http://HEAD:8265 (ray:// Ray Client addresses are not supported)")])
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


# ----------------------------------------------------------------------------- tracking and credentials
def remote_tracking_uri(spec: JobSpec) -> str:
    """The tracking URI the cluster will use; refuses stores that exist only on this machine."""
    uri = spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise JobSpecError("tracking.uri", [
            ("tracking.uri: no tracking server is set, and the default ./mlflow.db would exist only on this machine; "
            "export MLFLOW_TRACKING_URI=http://MLFLOW-HOST:5000 (a server the cluster can reach) and submit again")])
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        raise JobSpecError("tracking.uri", [
            (f"tracking.uri: {uri} is a store on this machine that the cluster cannot reach (and sqlite is not "
             f"safe for many writers); use an MLflow server, e.g. http://MLFLOW-HOST:5000")])
    return uri


def carries_credentials(uri: str) -> bool:
    """Whether ``uri`` embeds credentials (``scheme://user:password@host`` or ``scheme://token@host``)."""
    return "@" in urlsplit(uri).netloc


STOP_WAIT_S = 30


def job_env(spec: JobSpec, forward_credentials: bool = False) -> dict[str, str]:
    """Environment variables for the job: the tracking URI, selected Ray Train settings and, only when
    asked, the MLflow credentials of this shell. A URI with embedded credentials needs the same ask."""
    uri = remote_tracking_uri(spec)
    if carries_credentials(uri):  # refused everywhere (orchestrator.job.uris), so never forwarded either
        raise JobSpecError("tracking.uri", [
            (f"tracking.uri: {redact(uri)} embeds credentials, which would travel in the job's runtime_env where every "
            f"holder of the cluster's Ray token can read them (the job list); remove user:password@ from the URI and "
            f"set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD on the cluster nodes (cluster/README.md), or "
            f"export them here and pass --forward-credentials")])
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
           # `camu-orch stop`: Ray's job supervisor SIGKILLs the driver this long after its SIGTERM (default 3 s,
           # too short to close a sweep's runs against a remote server); the supervisor reads it from the job's env
           "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S),
           # the job runs as the cluster's user: its runs and names belong to the submitter
           OWNER_ENV: owner()}
    for name in PASSTHROUGH_VARS + (MLFLOW_SECRET_VARS if forward_credentials else ()):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def credential_warnings(spec: JobSpec, forward_credentials: bool) -> list[str]:
    """What the user should know about MLflow credentials for this submission (names only, no values)."""
    local = [n for n in MLFLOW_SECRET_VARS if os.environ.get(n)]
    if forward_credentials:
        sent = local
        if not sent:
            return []
        return [(f"--forward-credentials: {', '.join(sent)} travel in the job's runtime_env env_vars, which every "
                 f"holder of the cluster's Ray token can read through the job list (ray job list, /api/jobs/; the "
                 f"dashboard hides them from browsers only). Ray 2.60 has no secret channel for jobs: on a shared "
                 f"cluster set them on the nodes instead (cluster/README.md)")]
    if local:
        return [(f"{', '.join(local)} set here but not sent to the cluster: its nodes need their own (a Kubernetes "
                 f"Secret or the launcher's environment, cluster/README.md), or pass --forward-credentials")]
    return []


# ----------------------------------------------------------------------------- the upload
def project_root(start: Path) -> Path:
    """The folder holding pyproject.toml above ``start`` (what the upload is taken from)."""
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").is_file() and (folder / "orchestrator").is_dir():
            return folder
    raise InputError("working_dir", [(f"no camu-orch project (pyproject.toml + orchestrator/) above {start}; "
                                       f"submit from a checkout of the project")])


def _travels(name: str) -> bool:
    """Whether a file called ``name`` may be uploaded: a source file, not hidden, not a secret."""
    import fnmatch

    suffix = PurePosixPath(name).suffix
    if name.startswith(".") or suffix not in SOURCE_SUFFIXES:
        return False
    return suffix in (".py", ".pyi") or not any(fnmatch.fnmatch(name.lower(), p) for p in SECRET_NAMES)


def _source_files(root: Path, entry: str) -> Iterable[str]:
    """Relative POSIX paths of the files under ``root/entry`` that may travel; symlinks are never followed."""
    top = root / entry
    if top.is_symlink():
        return
    if top.is_file():
        if _travels(top.name):
            yield entry
        return
    for folder, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS
                         and not d.endswith(".egg-info") and not os.path.islink(os.path.join(folder, d)))
        for name in sorted(files):
            if _travels(name) and not os.path.islink(os.path.join(folder, name)):
                yield Path(folder, name).relative_to(root).as_posix()


def plugin_entries(root: Path, plugins: Iterable[str]) -> list[str]:
    """The project's top-level packages or modules that the job's plugins live in (others must be installed
    on the cluster)."""
    entries = []
    for module in plugins:
        top = module.split(".", 1)[0]
        if (root / top).is_dir():
            entries.append(top)
        elif (root / f"{top}.py").is_file():
            entries.append(f"{top}.py")
    return entries


def upload_manifest(root: Path, plugins: Iterable[str], job_relative: str, excludes: Iterable[str] = ()) -> list[str]:
    """Sorted relative paths of every file that travels: the allowlist, then ``excludes`` (gitignore
    patterns from cluster/runtime_env.yaml) taken out. Refuses a pattern that would drop a file the job
    needs (its code or the job file), such as an unanchored ``data/`` matching ``camu/data/``."""
    entries = dict.fromkeys([*UPLOAD_DIRS, *UPLOAD_FILES, *plugin_entries(root, plugins), job_relative])
    files = sorted({f for entry in entries if (root / entry).exists() for f in _source_files(root, entry)})
    if job_relative not in files:
        raise JobSpecError(job_relative, [(f"(file): {job_relative} cannot travel to the cluster (only *.yaml / "
                                           f"*.yml job files that are not hidden and not named like a secret); "
                                           f"rename it")])
    patterns = list(excludes)
    if not patterns:
        return files
    from ray._private.thirdparty.pathspec import PathSpec

    specs = [PathSpec.from_lines("gitwildmatch", [p]) for p in patterns]
    needed = {f for f in files if f.endswith(".py") or f == job_relative}
    kept = []
    for f in files:
        hit = next((i for i, spec in enumerate(specs) if spec.match_file(f)), None)
        if hit is None:
            kept.append(f)
        elif f in needed:
            raise InputError("cluster/runtime_env.yaml", [
                (f"excludes.{hit}: {patterns[hit]!r} would leave out {f}, which the job needs on the cluster; anchor "
                f"it to the project root (e.g. '/{patterns[hit].lstrip('/')}') or remove it (only camu/, "
                f"orchestrator/, jobs/ and the job's plugins travel anyway)")])
    return kept


def stage_upload(root: Path, files: Iterable[str], dest: Path) -> Path:
    """Copy ``files`` (relative to ``root``) into the empty folder ``dest``, contents only (no modes or
    times, so the same sources give the same package hash and Ray reuses the upload)."""
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target, follow_symlinks=False)
    return dest


def build_submission(spec: JobSpec, job_path: Path, overrides: list[str], staging: Path | None = None,
                     forward_credentials: bool = False) -> dict[str, Any]:
    """Arguments of ``JobSubmissionClient.submit_job`` for this job; the upload is staged into ``staging``
    (an empty folder that must live until the job is submitted; default: a temporary folder removed
    when this process exits)."""
    root = project_root(Path.cwd().resolve())
    job_path = job_path.resolve()
    try:
        relative = job_path.relative_to(root).as_posix()
    except ValueError:
        raise JobSpecError(str(job_path), [(f"(file): {job_path} is outside the project {root} that travels to the "
                                           f"cluster; copy it under {root / 'jobs'}")]) from None
    args = ["python", "-m", "orchestrator", "run", relative] + [a for o in overrides for a in ("--set", o)]
    extra = _cluster_runtime_env(root)
    env = {**extra["env_vars"], **job_env(spec, forward_credentials)}
    files = upload_manifest(root, spec.plugins, relative, extra["excludes"])
    return {
        "entrypoint": shlex.join(args),
        "submission_id": f"camu-{spec.name}-{uuid.uuid4().hex[:8]}",
        "runtime_env": {"working_dir": str(stage_upload(root, files, staging or _temporary_folder())),
                        "env_vars": env},
        "metadata": {Tag.JOB: spec.name},
    }


def _temporary_folder() -> Path:
    """A private temporary folder removed when this process exits."""
    import atexit

    folder = Path(tempfile.mkdtemp(prefix="camu-upload-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _cluster_runtime_env(root: Path) -> dict[str, Any]:
    """cluster/runtime_env.yaml: extra excludes and non-secret env vars for every submission."""
    import yaml

    path = root / "cluster" / "runtime_env.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {}
    unknown = set(data) - {"excludes", "env_vars"}
    if unknown:
        raise InputError(str(path), [f"{k}: only excludes and env_vars are merged into submissions"
                                     for k in sorted(unknown)])
    secretish = [k for k in data.get("env_vars") or {} if any(w in k.upper() for w in ("PASSWORD", "TOKEN", "SECRET"))]
    if secretish:
        raise InputError(str(path), [f"env_vars.{k}: secrets do not belong in a committed file; set it on the "
                                       f"cluster nodes (cluster/README.md)" for k in secretish])
    return {"excludes": [str(p) for p in data.get("excludes") or []],
            "env_vars": {k: str(v) for k, v in (data.get("env_vars") or {}).items()}}


# ----------------------------------------------------------------------------- talking to the head
PREFLIGHT_TIMEOUT_S = 300


def preflight(client: Any, submission: dict[str, Any], timeout_s: float = PREFLIGHT_TIMEOUT_S) -> None:
    """Before the real job, run ``python -m orchestrator doctor`` on the cluster with the same runtime_env
    (its upload is reused by the job): the cluster's ``python`` must import the project and every dependency
    at the pinned Ray version. A failure is a ``JobSpecError`` quoting the probe's last log lines."""
    import time

    probe = {**submission, "entrypoint": "python -m orchestrator doctor",
             "submission_id": submission["submission_id"].replace("camu-", "camu-preflight-", 1),
             "metadata": {Tag.PREFLIGHT: "true"}}
    probe_id = submit_with_retry(client, probe)
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        status = str(client.get_job_status(probe_id).value)
        if status in TERMINAL:
            break
        time.sleep(1)
    if status == "SUCCEEDED":
        return
    logs = client.get_job_logs(probe_id)[-1500:] if status else ""
    if status not in ("FAILED", "STOPPED"):
        client.stop_job(probe_id)
    raise InputError("--address", [
        (f"--address: the cluster cannot run camu-orch jobs (preflight {probe_id}: {status or 'no answer'} after "
         f"{timeout_s:.0f}s). The entrypoint runs `python -m orchestrator` with the `python` on the cluster nodes' "
         f"PATH, which must have the project's dependencies: start Ray from that environment (activate it before "
         f"`ray start`) or use cluster/images/Dockerfile. Skip this check with --no-check. Probe output:\n{logs}")])


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


async def follow_logs(client: Any, submission_id: str, write: Callable[[str], Any],
                      idle_s: float | None = None) -> None:
    """Pass the job's log chunks to ``write`` until the stream ends. Ray's log stream has no deadline, so
    after ``idle_s`` (default CAMU_ORCH_HTTP_TIMEOUT_S) without a chunk the head is asked, with a bounded
    request, how the job is: still running keeps following (a quiet job is fine), ended stops, and a head
    that does not answer raises ``ClusterUnresponsiveError``."""
    idle_s = idle_s or http_timeout_s()
    stream = client.tail_job_logs(submission_id).__aiter__()
    pending = asyncio.ensure_future(stream.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=idle_s)
            if not done:
                status = await asyncio.to_thread(client.get_job_status, submission_id)
                if str(getattr(status, "value", status)) in TERMINAL:
                    return
                continue
            try:
                write(pending.result())
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(stream.__anext__())
    finally:
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
        with contextlib.suppress(BaseException):
            await stream.aclose()


@functools.cache
def _bounded_client_class() -> type:
    """JobSubmissionClient with a deadline on every request (Ray's own has none: a dead head would hang
    status, logs, preflight and --wait forever)."""
    import requests
    from ray.job_submission import JobSubmissionClient

    class BoundedJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            seconds = http_timeout_s()
            read = seconds * UPLOAD_TIMEOUT_FACTOR if method.upper() == "PUT" else seconds
            kwargs.setdefault("timeout", (seconds, read))
            try:
                return super()._do_request(method, endpoint, **kwargs)
            except requests.Timeout:
                raise ClusterUnresponsiveError(unanswered(self._address, f"{method} {endpoint}", read)) from None

    return BoundedJobSubmissionClient


def check_address_overrides(address: str) -> None:
    """Ray's client sends to RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, whatever address it is given: refuse
    one that differs from ``address`` (the token and the job would go to a cluster that was not checked)."""
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(name, "").strip()
        if value:
            if value.rstrip("/") != address.rstrip("/"):
                raise InputError("--address", [
                    (f"--address: {address} was given but {name}={value} is set, and Ray's Jobs client would send "
                    f"to {value}; unset {name} or pass the same address")])
            return


def client(address: str) -> Any:
    """A Jobs API client for ``address`` with the token header and a deadline on every request."""
    check_address_overrides(address)
    return _bounded_client_class()(address, headers=auth_headers())
