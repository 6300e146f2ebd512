"""Fault tolerance, tested rather than assumed: a Train worker killed mid-trial, and the whole job
driver (with its local Ray) killed mid-sweep then `camu-orch resume`d."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.record.identity import experiment_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BIN = Path(sys.executable).parent

JOB = {
    "name": "faulty",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "original": {"recipe": {"epochs": 3, "batch_size": 64}},
    "scenarios": [{"name": "half", "kind": "random", "fraction": 0.5}],
    "methods": [{"name": "camu", "params": {"epochs": 12}, "sweep": {"space": {"lr_out": {"loguniform": [3e-4, 3e-3]}}}}],
    "sweep": {"search": "random", "num_samples": 3, "max_concurrent_trials": 1},
    "resources": {"num_workers": 2, "cpus_per_worker": 1, "worker_max_failures": 2,
                  "checkpoint_interval_s": 0},  # a checkpoint every epoch: the kill lands after one
    "tracking": {"experiment": "faults"},
    "device": "cpu",
}


def _start(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run camu-orch in its own process group; output goes to a file (a pipe nobody reads would fill
    up and block the job)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled", **(extra_env or {})}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(cwd / f"{args[0]}-{time.time_ns()}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(BIN / "camu-orch"), *args], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.log_path = Path(log.name)
    return proc


def _output(proc: subprocess.Popen, timeout: float) -> str:
    """Wait for ``proc`` and return everything it printed."""
    proc.wait(timeout=timeout)
    return proc.log_path.read_text()


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended (rc {proc.returncode}) before {what}:\n"
                                 + proc.log_path.read_text()[-3000:])
        time.sleep(0.5)
    raise TimeoutError(what)


def _store_ready(proc: subprocess.Popen) -> bool:
    """The job created its MLflow store (stage [1] printed): polling it earlier would race the job's
    schema creation."""
    return "[1/5]" in proc.log_path.read_text()


def _trial_runs(work: Path) -> list:
    db = work / "mlflow.db"
    if not db.exists():
        return []
    try:
        client = MlflowClient(f"sqlite:///{db}")
        exp = client.get_experiment_by_name(experiment_name("faults", "owner"))
        return client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial'") if exp else []
    except Exception:  # noqa: BLE001 - the store may be mid-creation
        return []


def _train_workers(cwd_marker: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], check=False, capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "RayTrainWorker" in line]


def test_killed_train_worker_restarts_from_checkpoint(tmp_path):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**JOB, "sweep": {**JOB["sweep"], "num_samples": 1}}))
    proc = _start(["submit", "job.yaml"], tmp_path)
    try:
        official = lambda: list((tmp_path / "camu_runs").glob("faulty-half-camu-s0-*-preset/checkpoint_*"))
        _wait_for(lambda: len(official()) >= 2 and _train_workers(""), 300, "official trial checkpoints", proc)
        victim = _train_workers("")[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        out = _output(proc, 600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    print(f"worker killed; job finished {time.time() - killed_at:.1f}s later")
    runs = {r.info.run_name: r for r in _trial_runs(tmp_path)}
    off = runs["half/camu/seed0/preset"]
    assert off.info.status == "FINISHED"
    assert int(off.data.tags["camu.restored_from_epoch"]) >= 0  # continued from a checkpoint, not from scratch
    assert len(runs) == 3  # 2 presets + 1 sweep trial: the restart did not duplicate runs
    history = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(off.info.run_id, "loss_rep")
    assert max(m.step for m in history) == 11


def test_killed_driver_then_resume_finishes_without_duplicates(tmp_path):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB))
    proc = _start(["submit", "job.yaml"], tmp_path)
    try:
        done_trials = lambda: [r for r in _trial_runs(tmp_path)
                               if not r.data.tags.get("camu.trial_id", "preset").startswith("preset")
                               and r.info.status == "FINISHED"]
        _wait_for(lambda: _store_ready(proc) and len(done_trials()) >= 1, 400, "a finished sweep trial", proc)
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray die together, like a lost login node
        proc.wait()
    before = {r.info.run_name: r.info.status for r in _trial_runs(tmp_path)}
    assert "RUNNING" in before.values() or len(before) < 4  # it really was interrupted mid-sweep
    finished_before = {n for n, s in before.items() if s == "FINISHED"}
    # the driver is gone: the first look at the record closes what it left open, and says the job did not finish
    looked = _start(["results", "faulty"], tmp_path)
    said = _output(looked, 120)
    assert looked.returncode == 2 and "did not finish" in said, said[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment_name("faults", "owner"))
    left = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id], "")}
    assert "RUNNING" not in left.values() and left["faulty"] == "FAILED", left
    start = time.time()
    resumed = _start(["resume", "faulty"], tmp_path)
    out = _output(resumed, 900)
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming job faulty" in out
    print(f"resume took {time.time() - start:.1f}s")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment_name("faults", "owner"))
    jobs = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'job'")
    assert len(jobs) == 1 and jobs[0].info.status == "FINISHED"
    everything = client.search_runs([exp.experiment_id], "")
    assert not [r.info.run_name for r in everything if r.info.status == "RUNNING"]
    trials = _trial_runs(tmp_path)
    names = [r.info.run_name for r in trials]
    assert len(names) == len(set(names)) == 5  # 2 presets + 3 trials, none duplicated
    assert finished_before <= set(names)
    local = client.download_artifacts(jobs[0].info.run_id, "eval/summary.parquet", str(tmp_path))
    rows = pq.read_table(local).to_pylist()
    assert sorted(r["method"] for r in rows) == ["camu"] * 5 + ["oracle", "original"]
    assert all(r["status"] == "finished" for r in rows)


def test_sigterm_marks_open_runs_killed_and_exits_cleanly(tmp_path):
    """`camu-orch stop` and schedulers send SIGTERM: every open run (the running trial included) ends
    KILLED, the process exits 143 without a native crash, and nothing is left RUNNING."""
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB))
    proc = _start(["submit", "job.yaml"], tmp_path)
    try:
        running_trial = lambda: [r for r in _trial_runs(tmp_path)
                                 if not r.data.tags.get("camu.trial_id", "preset").startswith("preset")
                                 and r.info.status == "RUNNING"]
        _wait_for(lambda: _store_ready(proc) and running_trial(), 400, "a running sweep trial", proc)
        time.sleep(1)
        os.kill(proc.pid, signal.SIGTERM)
        stopped_at = time.time()
        out = _output(proc, 120)
        print(f"stop-to-closed: the job exited with its runs closed {time.time() - stopped_at:.1f}s after SIGTERM")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, out[-3000:]
    for crash in ("core dumped", "Aborted", "Fatal Python error", "terminate called"):
        assert crash not in out, out[-3000:]
    assert "open MLflow runs were marked KILLED" in out
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment_name("faults", "owner"))
    statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id], "")}
    assert "RUNNING" not in statuses.values() and "FAILED" not in statuses.values(), statuses
    assert statuses["faulty"] == "KILLED"
    assert any(s == "KILLED" for n, s in statuses.items() if n.startswith("half/camu/seed0/")), statuses


def test_mlflow_outage_mid_job_fails_then_resume_finishes(tmp_path):
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"

    def serve() -> subprocess.Popen:
        proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                                 "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for(lambda: _healthy(), 90, "mlflow server")
        return proc

    def _healthy() -> bool:
        try:
            return requests.get(f"{uri}/health", timeout=2).ok
        except requests.RequestException:
            return False

    job = {**JOB, "tracking": {"experiment": "faults", "uri": uri},
           "resources": {**JOB["resources"], "worker_max_failures": 0},
           "sweep": {**JOB["sweep"], "num_samples": 2, "max_failures": 0}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    server = serve()
    client = MlflowClient(uri)

    def sweep_started() -> bool:
        try:
            exp = client.get_experiment_by_name(experiment_name("faults", "owner"))
            return bool(exp and client.search_runs([exp.experiment_id], "tags.`camu.method` = 'camu'"))
        except Exception:  # noqa: BLE001
            return False

    # MLflow's client retries a lost server for minutes by default; a short schedule keeps the test short
    # (what is tested is what the job does once the client gives up, not MLflow's retry schedule)
    quick_giveup = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
    proc = _start(["submit", "job.yaml"], tmp_path, quick_giveup)
    try:
        _wait_for(sweep_started, 400, "a sweep trial run", proc)
        os.killpg(server.pid, signal.SIGKILL)  # the tracking server disappears mid-sweep
        down_at = time.time()
        out = _output(proc, 900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    print(f"MLflow down: the job gave up {time.time() - down_at:.1f}s later")
    assert proc.returncode != 0
    assert list((tmp_path / ".camu-cache").rglob("weights.safetensors"))  # trained models kept
    server = serve()
    try:
        resumed = _start(["resume", "faulty", "--tracking-uri", uri], tmp_path)
        out = _output(resumed, 900)
        assert resumed.returncode == 0, out[-3000:]
        exp = client.get_experiment_by_name(experiment_name("faults", "owner"))
        jobs = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'job'")
        assert len(jobs) == 1 and jobs[0].info.status == "FINISHED"
        everything = client.search_runs([exp.experiment_id], "")
        assert not [r.info.run_name for r in everything if r.info.status == "RUNNING"]
        names = [r.info.run_name for r in everything if r.data.tags.get("camu.role") == "trial"]
        assert len(names) == len(set(names)) == 4  # 2 presets + 2 trials
    finally:
        os.killpg(server.pid, signal.SIGKILL)
