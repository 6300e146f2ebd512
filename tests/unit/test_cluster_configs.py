"""Every file under cluster/ parses, has the keys its tool needs, pins the project's Ray version and
commits no secret."""

import re
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml"))
RAY_PIN = re.search(r"ray\[[^\]]*\]==([\d.]+)", (ROOT / "pyproject.toml").read_text()).group(1)
SECRET = re.compile(r"(password|secret|token|api[_-]?key)\s*[:=]\s*['\"]?(?!\$\{|\$\$|\{)[A-Za-z0-9+/_\-]{8,}", re.IGNORECASE)


def test_pin_is_read():
    assert RAY_PIN == "2.60.0"
    from orchestrator import RAY_VERSION

    assert RAY_VERSION == RAY_PIN  # what `camu-orch doctor` and submit check clusters against
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"] == "camu-orch"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses_and_commits_no_secret(path):
    text = path.read_text()
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs, f"{path} is empty"
    assert not SECRET.search(text), f"{path} seems to hold a secret: {SECRET.search(text).group(0)}"


def _load(rel):
    return yaml.safe_load((CLUSTER / rel).read_text())


@pytest.mark.parametrize("rel", ["launcher/aws-gpu.yaml", "launcher/onprem.yaml"])
def test_launcher_configs(rel):
    cfg = _load(rel)
    for key in ("cluster_name", "provider", "auth", "docker", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    assert any("--shm-size" in o for o in cfg["docker"]["run_options"])
    if rel.endswith("onprem.yaml"):
        assert cfg["provider"]["type"] == "local" and cfg["provider"]["head_ip"] and cfg["provider"]["worker_ips"]
    else:
        assert cfg["head_node_type"] in cfg["available_node_types"]


def test_kuberay_cluster_and_job():
    rc = _load("kuberay/raycluster.yaml")
    assert rc["kind"] == "RayCluster" and rc["spec"]["rayVersion"] == RAY_PIN
    assert rc["spec"]["authOptions"]["mode"] == "token"
    worker = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in worker["volumes"])
    env = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]
    job = _load("kuberay/rayjob.yaml")
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("python -m orchestrator run jobs/")
    assert (ROOT / job["spec"]["entrypoint"].split()[-1]).exists()
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == rc["metadata"]["name"]


def test_mlflow_server_setup():
    compose = _load("mlflow/docker-compose.yaml")
    command = compose["services"]["mlflow"]["command"]
    for flag in ("--backend-store-uri postgresql://", "--serve-artifacts", "--app-name basic-auth", "--allowed-hosts"):
        assert flag in command
    assert "${MLFLOW_AUTH_ADMIN_PASSWORD" in compose["services"]["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"]


def test_images_pin_the_projects_ray():
    dockerfile = (CLUSTER / "images" / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(RAY_PIN)}-", dockerfile, re.MULTILINE)
    for rel in ("launcher/aws-gpu.yaml", "launcher/onprem.yaml", "kuberay/raycluster.yaml"):
        assert "camu-orch:" in (CLUSTER / rel).read_text()


def test_the_secret_check_catches_secrets():
    assert SECRET.search("MLFLOW_TRACKING_PASSWORD: hunter2hunter2")
    assert SECRET.search('token = "0123456789abcdef"')
    assert not SECRET.search("MLFLOW_AUTH_ADMIN_PASSWORD: ${MLFLOW_AUTH_ADMIN_PASSWORD:?set it}")
    assert not SECRET.search("valueFrom: {secretKeyRef: {name: ray-auth, key: token}}")
