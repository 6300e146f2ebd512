"""Remote submission: what travels, what is refused before anything is sent, and where the token goes."""

from pathlib import Path

import pytest

from orchestrator.execution import jobs_api as remote
from orchestrator.inputs import InputError
from orchestrator.job.spec import JobSpecError
from orchestrator.job.validate import check_job

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs" / "quickstart.yaml"


@pytest.fixture()
def spec():
    return check_job(JOB, check_data=False, local=False).spec


def test_address_must_be_the_jobs_api(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert remote.resolve_address(None) is None
    assert remote.resolve_address("http://head:8265") == "http://head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "https://head:8265")
    assert remote.resolve_address(None) == "https://head:8265"
    with pytest.raises(InputError, match="not a Jobs API address"):
        remote.resolve_address("ray://head:10001")


def test_local_tracking_store_is_refused(spec, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(JobSpecError, match="export MLFLOW_TRACKING_URI"):
        remote.remote_tracking_uri(spec)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(JobSpecError, match="cluster cannot reach"):
        remote.remote_tracking_uri(spec)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert remote.remote_tracking_uri(spec) == "http://mlflow:5000"


def test_submission_carries_code_and_settings_but_no_credentials_unless_asked(spec, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cr3t-value")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok3n-value")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-token-value")
    sub = remote.build_submission(spec, JOB, ["sweep.num_samples=2"], tmp_path / "a")
    assert sub["entrypoint"] == "python -m orchestrator run jobs/quickstart.yaml --set sweep.num_samples=2"
    assert sub["submission_id"].startswith("camu-quickstart-")
    env = sub["runtime_env"]["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == "180"  # from cluster/runtime_env.yaml
    assert env["RAY_JOB_STOP_WAIT_TIME_S"] == "30"  # `camu-orch stop` leaves the driver time to close its runs
    for secret in ("s3cr3t-value", "tok3n-value", "ray-token-value"):
        assert secret not in str(sub)  # credentials stay here unless --forward-credentials
    assert env["CAMU_ORCH_OWNER"] == "alice-user"  # the submitter owns the job's runs, not the cluster's user
    assert not set(remote.MLFLOW_SECRET_VARS) & set(env)
    assert sub["runtime_env"]["working_dir"] == str(tmp_path / "a")  # the staged allowlist, not the checkout
    assert "excludes" not in sub["runtime_env"]
    assert "not sent to the cluster" in remote.credential_warnings(spec, False)[0]

    asked = remote.build_submission(spec, JOB, [], tmp_path / "b", forward_credentials=True)
    env = asked["runtime_env"]["env_vars"]
    assert env["MLFLOW_TRACKING_PASSWORD"] == "s3cr3t-value" and env["MLFLOW_TRACKING_USERNAME"] == "alice-user"
    assert "ray-token-value" not in str(asked)  # the Ray token only ever goes into request headers
    warning = remote.credential_warnings(spec, True)[0]
    assert "every holder" in warning and "job list" in warning and "s3cr3t-value" not in warning


def test_tracking_uri_with_credentials_is_never_sent(spec, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:hunter2pass@mlflow.example:5000")
    for forward in (False, True):
        with pytest.raises(JobSpecError, match="remove user:password@") as err:
            remote.build_submission(spec, JOB, [], tmp_path / f"a{forward}", forward_credentials=forward)
        assert "MLFLOW_TRACKING_PASSWORD" in str(err.value) and "hunter2pass" not in str(err.value)


def test_job_outside_the_project_is_refused(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    outside = tmp_path / "job.yaml"
    outside.write_text(JOB.read_text())
    with pytest.raises(JobSpecError, match="outside the project"):
        remote.build_submission(spec, outside, [])


def test_token_from_env_or_file(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert remote.auth_headers() == {}
    (tmp_path / "tok").write_text("abc123\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert remote.auth_headers() == {"Authorization": "Bearer abc123"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "fromenv")
    assert remote.auth_headers() == {"Authorization": "Bearer fromenv"}


def test_multi_node_cluster_refuses_node_local_storage(spec, monkeypatch):
    import ray

    from orchestrator.driver.pipeline import check_storage

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}])
    with pytest.raises(JobSpecError) as err:
        check_storage(spec)
    assert "storage.path" in str(err.value) and "storage.cache_dir" in str(err.value)
    check_storage(spec.model_copy(update={"storage": spec.storage.model_copy(update={"shared": True})}))
    s3 = spec.storage.model_copy(update={"path": "s3://bucket/runs", "cache_dir": "/mnt/shared/cache", "shared": True})
    check_storage(spec.model_copy(update={"storage": s3}))
    bad = spec.storage.model_copy(update={"path": "s3://bucket/runs", "cache_dir": "s3://bucket/cache"})
    with pytest.raises(JobSpecError, match="storage.cache_dir"):
        check_storage(spec.model_copy(update={"storage": bad}))
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": False}])
    check_storage(spec)  # one live node: local storage is fine


def test_secrets_never_land_in_git():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and "*.env" in ignored


def test_token_over_plain_http_is_warned(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken-value")
    assert "plain http" in remote.transport_warnings("http://head.example:8265")[0]
    assert remote.transport_warnings("https://head.example:8265") == []
    assert remote.transport_warnings("http://127.0.0.1:8265") == []  # an SSH tunnel to localhost
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert remote.transport_warnings("http://head.example:8265") == []  # no token, nothing to leak


class FakeJobs:
    """The part of JobSubmissionClient that preflight uses; the probe ends with ``status``."""

    def __init__(self, status: str, logs: str = "") -> None:
        self.status, self.logs, self.submitted = status, logs, []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["submission_id"]

    def get_job_status(self, job_id):
        return type("S", (), {"value": self.status})()

    def get_job_logs(self, job_id):
        return self.logs

    def stop_job(self, job_id):
        return True


def test_preflight_runs_doctor_with_the_jobs_runtime_env(spec, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    sub = remote.build_submission(spec, JOB, [], tmp_path)
    ok = FakeJobs("SUCCEEDED")
    remote.preflight(ok, sub)
    assert ok.submitted[0]["entrypoint"] == "python -m orchestrator doctor"
    assert ok.submitted[0]["runtime_env"] == sub["runtime_env"]
    broken = FakeJobs("FAILED", "ModuleNotFoundError: No module named 'torch'")
    with pytest.raises(InputError, match="No module named 'torch'") as info:
        remote.preflight(broken, sub)
    assert "activate it before `ray start`" in str(info.value)


def test_doctor_passes_here():
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0 and result.output.strip().endswith("ok"), result.output
