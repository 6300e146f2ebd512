"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`, token
authentication on), a real MLflow tracking server, and `camu-orch submit --address --wait` through
the Ray Jobs API; the job's MLflow record is then read back from the server."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.record.identity import experiment_name, registered_model_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    temp_dir = f"/tmp/camu-ray-{uuid.uuid4().hex[:6]}"  # short: Ray's unix sockets live under it
    token = secrets.token_hex(16)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, mlflow_port = _port(), _port(), _port()
    ray = str(BIN / "ray")
    token_file = tmp / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    # the nodes start as the shipped launcher starts them (token mode, the token from a mode-600 file);
    # camu-orch, the client, holds the token in its environment
    nodes = {**{k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}, **_launcher_node_env(token_file)}
    try:
        yield from _started(ray, env, nodes, gcs, dash, mlflow_port, temp_dir, tmp, token)
    finally:
        subprocess.run(["pkill", "-f", temp_dir], check=False)
        time.sleep(2)
        subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(f"{temp_dir}-n2", ignore_errors=True)


def _node_ports() -> list[str]:
    """Two nodes on one machine must not share the per-node agent ports (nor collide with other Rays)."""
    return [f"--dashboard-agent-listen-port={_port()}", f"--dashboard-agent-grpc-port={_port()}",
            f"--metrics-export-port={_port()}", f"--runtime-env-agent-port={_port()}",
            f"--node-manager-port={_port()}", f"--object-manager-port={_port()}"]


def _launcher_node_env(token_file: Path) -> dict[str, str]:
    """The environment cluster/launcher/onprem.yaml starts the head and the workers with (checked to be
    token authentication, the dashboard on loopback), pointed at this test's token file."""
    config = yaml.safe_load((ROOT / "cluster" / "launcher" / "onprem.yaml").read_text())
    found = {}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        command = next(c for c in config[key] if "ray start" in c)
        found = dict(w.split("=", 1) for w in shlex.split(command.split("ray start")[0]))
        assert found.get("RAY_AUTH_MODE") == "token" and "RAY_AUTH_TOKEN_PATH" in found, command
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head
    return {"RAY_AUTH_MODE": found["RAY_AUTH_MODE"], "RAY_AUTH_TOKEN_PATH": str(token_file)}


def _started(ray, env, nodes, gcs, dash, mlflow_port, temp_dir, tmp, token):
    subprocess.run([ray, "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                    "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}", "--include-dashboard=true",
                    f"--ray-client-server-port={_port()}", *_node_ports()],
                   env=nodes, check=True, capture_output=True, timeout=120)
    # its own temp dir: on one machine, nodes sharing one would also share (and garbage-collect)
    # each other's unpacked working_dir
    subprocess.run([ray, "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2", "--num-gpus=0",
                    f"--temp-dir={temp_dir}-n2", '--resources={"second_node": 1}', *_node_ports()], env=nodes,
                   check=True, capture_output=True, timeout=120)
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}", "--artifacts-destination", str(tmp / "artifacts"),
         "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{dash}/api/version")
        _wait_http(f"http://127.0.0.1:{mlflow_port}/health")
        yield {"address": f"http://127.0.0.1:{dash}", "mlflow": f"http://127.0.0.1:{mlflow_port}", "env": env,
               "tmp": tmp, "token": token, "temp_dir": temp_dir}
    finally:
        server.terminate()


def _cli(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "camu-orch"), *args], check=False, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_submit_through_jobs_api_to_two_node_cluster(cluster):
    env = {**cluster["env"], "MLFLOW_TRACKING_URI": cluster["mlflow"]}
    tmp = cluster["tmp"]
    overrides = ["tracking.experiment=cluster-e2e", "scenarios=[{name: class3, kind: classes, classes: [3]}]",
                 "original.recipe.epochs=3", "sweep.num_samples=1", f"storage.path={tmp / 'storage'}",
                 f"storage.cache_dir={tmp / 'cache'}", "storage.shared=true"]
    sets = [a for o in overrides for a in ("--set", o)]

    refused = _cli(["submit", "jobs/quickstart.yaml", "--address", cluster["address"], *sets],
                   {**env, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"})
    assert refused.returncode == 2 and "cluster cannot reach" in refused.stderr + refused.stdout

    no_token = _cli(["list", "--address", cluster["address"]], {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
                    | {"HOME": str(tmp), "RAY_AUTH_MODE": "disabled"})
    assert no_token.returncode != 0  # the cluster demands its token
    # the probe `submit --address` makes (no credentials at all) is refused too, so submit goes ahead
    assert requests.get(f"{cluster['address']}/api/version", timeout=10).status_code == 401

    start, start_epoch = time.perf_counter(), time.time()
    done = _cli(["submit", "jobs/quickstart.yaml", "--address", cluster["address"], "--wait", *sets], env)
    wall = time.perf_counter() - start
    out = done.stdout + done.stderr
    Path("/tmp/camu_cluster_job.log").write_text(out)
    assert done.returncode == 0, out[-4000:]
    assert cluster["token"] not in out
    submission = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("submitted "))
    assert "SUCCEEDED" in done.stdout and "[4/5] camu on class3" in done.stdout
    assert "checking that the cluster can run camu-orch" in done.stdout  # the preflight job ran and passed
    assert "without a token" not in out and "--allow-unauthenticated" not in out  # a token cluster passes the probe
    status = _cli(["status", submission, "--address", cluster["address"]], env)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    listed = _cli(["list", "--address", cluster["address"]], env)
    assert submission in listed.stdout
    client = MlflowClient(cluster["mlflow"], registry_uri=cluster["mlflow"])  # not a registry an earlier test set
    exp = client.get_experiment_by_name(experiment_name("cluster-e2e", "owner"))
    first_trial = min(r.info.start_time for r in client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial'"))
    first_train = min(r.info.start_time for r in client.search_runs([exp.experiment_id], "tags.`camu.role` = 'original'"))
    print(f"submit-to-end wall {wall:.1f}s; submit to first Train run {first_train / 1000 - start_epoch:.1f}s; "
          f"submit to first CaMU trial {first_trial / 1000 - start_epoch:.1f}s")
    jobs = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'job'")
    assert len(jobs) == 1 and jobs[0].info.status == "FINISHED"
    assert "MLFLOW_TRACKING" not in str(jobs[0].data.params)  # no credentials or env in params
    trials = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial'")
    assert sorted((t.data.tags["camu.method"], t.data.tags["camu.trial_id"]) for t in trials
                  if t.data.tags["camu.trial_id"].startswith("preset")) == [
        ("camu", "preset"), ("camu", "preset-official-cifar"), ("finetune", "preset")]
    assert len(trials) == 5  # and one sweep trial each
    assert all(t.info.status == "FINISHED" for t in trials)
    arts = {a.path for a in client.list_artifacts(jobs[0].info.run_id, "eval")}
    assert "eval/summary.parquet" in arts  # uploaded through the server's artifact proxy
    assert client.get_model_version_by_alias(registered_model_name("camu-quickstart", "owner", "class3", "camu"), "candidate")


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(pid: str) -> list[str]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _second_node_runs_a_trial(temp_dir: str) -> bool:
    """Is a trial running on the second node (a child of its raylet): a single-worker trial in its Tune trial's
    own process (``ImplicitFunc``, Tune's actor for a function trainable), or a Train worker?"""
    raylets = [p.name for p in Path("/proc").glob("[0-9]*") if "raylet" in _cmdline(p.name)
               and f"{temp_dir}-n2" in _cmdline(p.name)]
    return any(any(name in _cmdline(k) for name in ("ImplicitFunc", "RayTrainWorker"))
               for r in raylets for k in _descendants(r))


def test_a_node_lost_mid_sweep_costs_only_the_trials_that_ran_there(cluster):
    """Kill every process of the second node while a sweep trial trains there: the trial is retried on the
    head node, the job finishes, and no MLflow run is duplicated or left RUNNING. (Last in this module:
    the cluster has one node afterwards.)"""
    env = {**cluster["env"], "MLFLOW_TRACKING_URI": cluster["mlflow"]}
    tmp = cluster["tmp"]
    overrides = ["tracking.experiment=cluster-node-loss", "scenarios=[{name: class3, kind: classes, classes: [3]}]",
                 "original.recipe.epochs=3", f"storage.path={tmp / 'storage'}", f"storage.cache_dir={tmp / 'cache'}",
                 "storage.shared=true", "methods=[{name: finetune, params: {epochs: 8, batch_size: 32}}]",
                 "sweep={search: random, num_samples: 4, max_concurrent_trials: 2, max_failures: 2}",
                 "resources={num_workers: 1, cpus_per_worker: 2, worker_max_failures: 0}"]
    sets = [a for o in overrides for a in ("--set", o)]
    job = subprocess.Popen([str(BIN / "camu-orch"), "submit", "jobs/quickstart.yaml", "--address", cluster["address"],
                            "--wait", "--no-check", *sets], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(cluster["mlflow"], registry_uri=cluster["mlflow"])  # not a registry an earlier test set
    killed_at, deadline = None, time.time() + 420
    while killed_at is None and time.time() < deadline and job.poll() is None:
        exp = client.get_experiment_by_name(experiment_name("cluster-node-loss", "owner"))
        sweeping = exp and client.search_runs(
            [exp.experiment_id], "tags.`camu.role` = 'trial' and attributes.status = 'RUNNING'")
        if sweeping and any(not r.data.tags["camu.trial_id"].startswith("preset") for r in sweeping) \
                and _second_node_runs_a_trial(cluster["temp_dir"]):
            subprocess.run(["pkill", "-9", "-f", f"{cluster['temp_dir']}-n2"], check=False)
            killed_at = time.time()
        time.sleep(0.5)
    out, _ = job.communicate(timeout=900)
    Path("/tmp/camu_node_loss.log").write_text(out)
    assert killed_at is not None, "no sweep trial ran on the second node:\n" + out[-3000:]
    assert job.returncode == 0, out[-4000:]
    exp = client.get_experiment_by_name(experiment_name("cluster-node-loss", "owner"))
    trials = client.search_runs([exp.experiment_id], "tags.`camu.role` = 'trial'")
    names = [t.info.run_name for t in trials]
    assert len(names) == len(set(names)) == 5, names  # the preset and 4 sweep trials, none duplicated
    assert all(t.info.status == "FINISHED" for t in trials), [(t.info.run_name, t.info.status) for t in trials]
    everything = client.search_runs([exp.experiment_id], "")
    assert not [r.info.run_name for r in everything if r.info.status == "RUNNING"]
    print(f"node lost {killed_at - min(t.info.start_time for t in trials) / 1000:.0f}s into the trials; "
          f"job finished {max(t.info.end_time for t in trials) / 1000 - killed_at:.0f}s after the loss")
