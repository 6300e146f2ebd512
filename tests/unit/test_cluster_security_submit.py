"""Security review fixes on the submitting side: open clusters are refused, every request to the head has
a deadline, and only an allowlist of source files travels (camu/data/ included, secrets never)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.execution import jobs_api as remote
from orchestrator.inputs import InputError

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs" / "quickstart.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                 remote.HTTP_TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------------------------- fake heads (127.0.0.1 only)
def _jobs_api(status: int):
    """A Ray dashboard stand-in: /api/version answers ``status`` to requests without a token."""

    class Handler(BaseHTTPRequestHandler):
        seen: ClassVar[list[dict[str, str]]] = []

        def do_GET(self):
            Handler.seen.append(dict(self.headers))
            authorized = self.headers.get("Authorization") == "Bearer good-token"
            code = 200 if authorized or status == 200 else status
            body = json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}) if code == 200 else "Unauthorized"
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if code == 200 else "text/plain")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture()
def http_head(request):
    servers = []

    def start(status: int):
        handler = _jobs_api(status)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def silent_head():
    """Accepts TCP connections and never answers: a hung head."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


# ----------------------------------------------------------------------------- 1. no open clusters
def test_open_cluster_is_refused_unless_explicitly_allowed(http_head, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "good-token")  # our token must not be what makes the probe pass
    address, handler = http_head(200)
    with pytest.raises(InputError, match="answered the Jobs API without a token") as err:
        remote.require_authentication(address)
    assert "RAY_AUTH_MODE=token" in str(err.value) and "--allow-unauthenticated" in str(err.value)
    assert all("Authorization" not in h for h in handler.seen)  # the probe sent no credentials
    assert "--allow-unauthenticated" in remote.require_authentication(address, allow_unauthenticated=True)[0]


def test_token_cluster_passes_the_probe(http_head):
    address, _ = http_head(401)
    assert remote.require_authentication(address) == []
    address, _ = http_head(403)
    assert remote.require_authentication(address) == []


def test_probe_ignores_netrc_credentials(http_head, monkeypatch, tmp_path):
    """requests would send ~/.netrc credentials on its own; the probe must go without any."""
    address, handler = http_head(401)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login alice password hunter2secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert remote.require_authentication(address) == []
    assert handler.seen and all("Authorization" not in h for h in handler.seen)


def test_submit_to_an_open_cluster_exits_2_with_the_fix(http_head, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    address, _ = http_head(200)
    result = CliRunner().invoke(app, ["submit", "jobs/quickstart.yaml", "--address", address, "--no-check"])
    assert result.exit_code == 2, result.output
    assert "without a token" in result.output and "cluster/README.md" in result.output


def test_client_refuses_an_address_that_ray_would_override(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://other-head:8265")
    with pytest.raises(InputError, match="unset RAY_ADDRESS"):
        remote.client("http://head:8265")


# ----------------------------------------------------------------------------- 4. bounded requests
@pytest.mark.parametrize("command", [["status", "camu-x"], ["logs", "camu-x"], ["list"], ["stop", "camu-x"],
                                     ["logs", "camu-x", "--follow"]])
@pytest.mark.timeout(60)  # unbounded, these would hang forever
def test_a_hung_head_ends_commands_with_exit_2(silent_head, command, monkeypatch):
    monkeypatch.setenv(remote.HTTP_TIMEOUT_ENV, "1")
    start = time.monotonic()
    result = CliRunner().invoke(app, [*command, "--address", silent_head])
    assert result.exit_code == 2, result.output
    assert "did not answer" in result.output and remote.HTTP_TIMEOUT_ENV in result.output
    assert time.monotonic() - start < 30


def test_status_on_a_hung_head_through_the_real_entrypoint(silent_head):
    env = {**os.environ, remote.HTTP_TIMEOUT_ENV: "1", "PYTHONPATH": str(ROOT)}
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(name, None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "orchestrator", "status", "camu-x", "--address", silent_head], check=False,
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "did not answer GET /api/version within 1s" in done.stderr
    assert time.monotonic() - start < 90  # interpreter and Ray import included


def test_the_timeout_setting_is_checked(monkeypatch):
    monkeypatch.setenv(remote.HTTP_TIMEOUT_ENV, "soon")
    with pytest.raises(InputError, match=remote.HTTP_TIMEOUT_ENV):
        remote.http_timeout_s()
    monkeypatch.setenv(remote.HTTP_TIMEOUT_ENV, "2.5")
    assert remote.http_timeout_s() == 2.5


class QuietStream:
    """A Jobs client whose log stream sends ``chunks`` and then goes silent."""

    def __init__(self, chunks, statuses):
        self.chunks, self.statuses, self.asked = chunks, list(statuses), 0

    async def tail_job_logs(self, job_id):
        for chunk in self.chunks:
            yield chunk
        await asyncio.Event().wait()  # a stalled websocket

    def get_job_status(self, job_id):
        self.asked += 1
        status = self.statuses.pop(0)
        if isinstance(status, Exception):
            raise status
        return type("S", (), {"value": status})()


def test_follow_keeps_a_quiet_running_job_and_stops_when_it_ends():
    out = []
    stream = QuietStream(["a\n", "b\n"], ["RUNNING", "RUNNING", "SUCCEEDED"])
    asyncio.run(asyncio.wait_for(remote.follow_logs(stream, "j", out.append, idle_s=0.05), 10))
    assert out == ["a\n", "b\n"] and stream.asked == 3


def test_follow_ends_with_a_clear_error_when_the_head_stops_answering():
    dead = remote.ClusterUnresponsiveError(remote.unanswered("http://h:8265", "GET /api/jobs/j", 1))
    stream = QuietStream(["a\n"], ["RUNNING", dead])
    with pytest.raises(remote.ClusterUnresponsiveError, match="did not answer"):
        asyncio.run(asyncio.wait_for(remote.follow_logs(stream, "j", lambda c: None, idle_s=0.05), 10))


# ----------------------------------------------------------------------------- 3. upload allowlist
def _fake_project(root: Path) -> None:
    files = {
        "pyproject.toml": "[project]\nname = 'x'\n", "README.md": "# x\n",
        "camu/__init__.py": "", "camu/data/__init__.py": "VALUE = 1\n", "camu/data/x.py": "",
        "camu/data/table.json": "{}", "camu/__pycache__/y.cpython-311.pyc": "",
        "orchestrator/__init__.py": "", "orchestrator/secrets.py": "", "jobs/quick.yaml": "name: q\n",
        "myplugin/__init__.py": "", "myplugin/methods.py": "", "single_plugin.py": "",
        "unused_pkg/__init__.py": "",
        # never travel:
        ".envrc": "export X=1", ".netrc": "machine h password p", "id_rsa": "KEY", "id_rsa.pub": "PUB",
        "mlflow.db": "", "mlflow.db-wal": "", "data/train.npy": "", "data/x.py": "", "notebooks/a.ipynb": "",
        ".git/config": "", ".venv/lib/site.py": "", "camu_runs/r/result.json": "{}", "cluster/mlflow/.env": "P=1",
        "camu/.env": "P=1", "camu/secrets.yaml": "password: x", "camu/data/weights.safetensors": "",
        "orchestrator/server.pem": "", "jobs/.hidden.yaml": "", "jobs/credentials.json": "{}",
        "camu/mlruns/meta.yaml": "x: 1", "camu_orch.egg-info/PKG-INFO": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "camu" / "outside_link.py").symlink_to(root / ".envrc")
    (root / "camu" / "linked_dir").symlink_to(root / "data", target_is_directory=True)


def test_only_the_allowlist_travels(tmp_path):
    project = tmp_path / "project"
    _fake_project(project)
    files = remote.upload_manifest(project, ["myplugin.methods", "single_plugin", "numpy"], "jobs/quick.yaml")
    assert files == sorted([
        "README.md", "camu/__init__.py", "camu/data/__init__.py", "camu/data/table.json", "camu/data/x.py",
        "jobs/quick.yaml", "myplugin/__init__.py", "myplugin/methods.py",
        "orchestrator/__init__.py", "orchestrator/secrets.py", "pyproject.toml", "single_plugin.py"])
    staged = remote.stage_upload(project, files, tmp_path / "up")
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == files
    assert not any(p.is_symlink() for p in staged.rglob("*"))


def test_a_job_outside_jobs_travels_and_excludes_cannot_drop_code(tmp_path):
    project = tmp_path / "project"
    _fake_project(project)
    (project / "experiments").mkdir()
    (project / "experiments" / "mine.yaml").write_text("name: m\n")
    assert "experiments/mine.yaml" in remote.upload_manifest(project, [], "experiments/mine.yaml")
    kept = remote.upload_manifest(project, [], "jobs/quick.yaml", ["/camu/data/*.json"])
    assert "camu/data/table.json" not in kept and "camu/data/x.py" in kept
    with pytest.raises(InputError, match=r"excludes.0: 'data/' would leave out camu/data/__init__.py"):
        remote.upload_manifest(project, [], "jobs/quick.yaml", ["data/"])


def test_the_staged_package_is_the_same_for_the_same_sources(tmp_path):
    """Ray names the package by a hash of paths and contents: a resubmission reuses the upload."""
    from ray._private.runtime_env.packaging import get_uri_for_directory

    files = remote.upload_manifest(ROOT, [], "jobs/quickstart.yaml")
    first = remote.stage_upload(ROOT, files, tmp_path / "one")
    second = remote.stage_upload(ROOT, files, tmp_path / "two")
    assert get_uri_for_directory(str(first), True) == get_uri_for_directory(str(second), True)


def test_the_project_imports_from_the_upload_alone(tmp_path):
    """On a node without camu-orch installed: run from the staged folder with the editable install's finder
    removed, the packages (camu.data included) come from the copy."""
    files = remote.upload_manifest(ROOT, [], "jobs/quickstart.yaml")
    staged = remote.stage_upload(ROOT, files, tmp_path / "upload")
    probe = ("import sys\n"
             "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')\n"
             "                    and 'editable' not in getattr(f, '__name__', '')]\n"
             "sys.path[:] = [p for p in sys.path if p not in ('" + str(ROOT) + "',)]\n"
             "import camu, camu.data, orchestrator, orchestrator.cli\n"
             "print(camu.__file__); print(camu.data.__file__); print(orchestrator.cli.__file__)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    done = subprocess.run([sys.executable, "-c", probe], check=False, cwd=staged, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    paths = done.stdout.split()
    assert len(paths) == 3 and all(Path(p).resolve().is_relative_to(staged.resolve()) for p in paths), paths


class FakeJobsApi(BaseHTTPRequestHandler):
    """Enough of a token-protected Ray dashboard for one submission: version, package upload, job submit."""

    requests: ClassVar[list[tuple[str, str, str | None]]] = []
    packages: ClassVar[dict[str, bytes]] = {}
    jobs: ClassVar[list[dict]] = []

    def _reply(self, code: int, body: object = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        FakeJobsApi.requests.append((self.command, self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != "Bearer good-token":
            self._reply(401)
            return False
        return True

    def do_GET(self):
        if not self._authorized():
            return
        if self.path == "/api/version":
            self._reply(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})
        else:
            self._reply(404 if self.path.rsplit("/", 1)[-1] not in FakeJobsApi.packages else 200)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self._authorized():
            FakeJobsApi.packages[self.path.rsplit("/", 1)[-1]] = body
            self._reply(200)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self._authorized():
            FakeJobsApi.jobs.append(body)
            self._reply(200, {"job_id": body["submission_id"], "submission_id": body["submission_id"]})

    def log_message(self, *args):
        pass


def test_a_submission_uploads_exactly_the_allowlist_and_no_credentials(monkeypatch, tmp_path):
    import io
    import tempfile
    import zipfile

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cr3t-value")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "good-token")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the staged upload lives, to see it removed
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJobsApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = CliRunner().invoke(app, ["submit", "jobs/quickstart.yaml", "--address", address, "--no-check"])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    assert "submitted camu-quickstart-" in result.output
    assert "MLFLOW_TRACKING_PASSWORD set here but not sent" in result.output
    probe = FakeJobsApi.requests[0]
    assert probe[:2] == ("GET", "/api/version") and probe[2] is None  # the unauthenticated probe
    assert all(auth == "Bearer good-token" for _, _, auth in FakeJobsApi.requests[1:])
    (package,) = FakeJobsApi.packages.values()
    uploaded = sorted(n for n in zipfile.ZipFile(io.BytesIO(package)).namelist() if not n.endswith("/"))
    assert uploaded == remote.upload_manifest(ROOT, [], "jobs/quickstart.yaml")
    assert "camu/data/__init__.py" in uploaded and not [n for n in uploaded if n.startswith((".", "tests/"))]
    (job,) = FakeJobsApi.jobs
    assert job["runtime_env"]["working_dir"].startswith("gcs://") and "excludes" not in job["runtime_env"]
    assert "s3cr3t-value" not in json.dumps(job) and "good-token" not in json.dumps(job)
    assert not list(tmp_path.glob("camu-upload-*"))  # the staged copy is gone once submitted
