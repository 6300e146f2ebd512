"""No password or token anywhere a job leaves a trace: a real job against a password-protected MLflow
server (basic auth, no access by default), then every param, tag and artifact of every run, the job's
output, the Ray session logs and every file the job wrote are searched for the secrets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent
PASSWORD = "alice-Pa55word-7f3c1e"
RAY_TOKEN = "ray-token-9b2d4a6c8e0f"
ADMIN_PASSWORD = "admin-Pa55word-long-enough"

JOB = {
    "name": "secretive",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 1, "batch_size": 64}},
    "scenarios": [{"name": "class3", "kind": "classes", "classes": [3]}],
    "methods": [{"name": "finetune", "params": {"epochs": 1}, "sweep": {"space": {"lr": {"loguniform": [1e-3, 1e-1]}}}}],
    "sweep": {"search": "random", "num_samples": 1},
    "resources": {"num_workers": 0},
    "tracking": {"experiment": "secretive"},
    "device": "cpu",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def auth_server(tmp_path):
    pytest.importorskip("flask_wtf")  # MLflow's basic-auth app needs it (the dev extra installs it)
    port = _free_port()
    (tmp_path / "auth").mkdir()
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{tmp_path / 'auth' / 'basic_auth.db'}"
                   f"\nadmin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
                   f"authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key-for-flask"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen([str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                               "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "served-artifacts"), "--workers", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if server.poll() is not None:
            raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    created = requests.post(f"{uri}/api/2.0/mlflow/users/create", json={"username": "alice", "password": PASSWORD},
                            auth=("admin", ADMIN_PASSWORD), timeout=30)
    assert created.ok, created.text
    assert requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10).status_code == 401
    try:
        yield uri
    finally:
        os.killpg(server.pid, 9)
        log.close()


def _grep(root: Path, secrets: tuple[str, ...]) -> list[str]:
    """Files under ``root`` whose bytes contain a secret."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {s[:5]}..." for s in secrets if s.encode() in data]
    return found


def test_no_password_or_token_in_any_trace_of_a_job(auth_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestrator.record.identity import experiment_name

    work = tmp_path / "work"
    work.mkdir()
    (work / "job.yaml").write_text(yaml.safe_dump(JOB))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
           "MLFLOW_TRACKING_URI": auth_server, "MLFLOW_TRACKING_USERNAME": "alice",
           "MLFLOW_TRACKING_PASSWORD": PASSWORD, "RAY_AUTH_TOKEN": RAY_TOKEN}
    env.pop("RAY_ADDRESS", None)
    started = time.time()
    job = subprocess.run([str(BIN / "camu-orch"), "submit", "job.yaml"], check=False, cwd=work, env=env, capture_output=True,
                         text=True, timeout=900)
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    secrets = (PASSWORD, RAY_TOKEN)
    output = job.stdout + job.stderr
    assert not [s for s in secrets if s in output]

    os.environ.update({"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": PASSWORD})
    try:
        client = MlflowClient(auth_server)
        exp = client.get_experiment_by_name(experiment_name("secretive", "owner", "alice"))
        assert exp is not None
        runs = client.search_runs([exp.experiment_id], "", max_results=1000)
        assert len(runs) >= 5  # job, scenario, original, oracle, preset and sweep trials
        for run in runs:
            text = repr(run.data.params) + repr(run.data.tags) + repr(run.info)
            assert not [s for s in secrets if s in text], run.info.run_name
            downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl" / run.info.run_id)))
            assert not _grep(downloaded, secrets), run.info.run_name
        models = client.search_logged_models(experiment_ids=[exp.experiment_id])
        assert not [s for s in secrets if s in repr(models)]
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME")
        os.environ.pop("MLFLOW_TRACKING_PASSWORD")
    assert not _grep(work, secrets)  # the store-side files, Ray storage, model cache, report
    sessions = [p for p in Path("/tmp/ray").glob("session_2*") if p.stat().st_mtime >= started - 1]
    assert sessions  # the job's own Ray instance left its logs
    for session in sessions:
        assert not _grep(session / "logs", secrets)
