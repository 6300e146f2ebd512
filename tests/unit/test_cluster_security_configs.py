"""Security review fixes in cluster/: token authentication on every node of every config (and the commands
really start Ray that way), the dashboard on loopback behind a tunnel, the RayJob using the operator's
token Secret, an image build context that cannot carry secrets, and an MLflow server whose password
hashes are neither downloadable nor readable by default."""

from __future__ import annotations

import configparser
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LAUNCHERS = ["launcher/aws-gpu.yaml", "launcher/onprem.yaml"]


def _load(rel: str):
    return yaml.safe_load((CLUSTER / rel).read_text())


# ----------------------------------------------------------------------------- launcher configs
def _token_mount(cfg) -> tuple[str, str]:
    """(remote folder, local folder) of the file mount that carries the token."""
    mounts = {remote: local for remote, local in (cfg.get("file_mounts") or {}).items() if "auth" in remote}
    assert len(mounts) == 1, cfg.get("file_mounts")
    return next(iter(mounts.items()))


@pytest.mark.parametrize("rel", LAUNCHERS)
def test_launcher_starts_every_node_with_token_auth_and_a_loopback_dashboard(rel):
    cfg = _load(rel)
    remote, local = _token_mount(cfg)
    assert local.startswith("~/.ray/")  # made by the user before `ray up`, never committed
    assert "0.0.0.0" not in (CLUSTER / rel).read_text()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert all(isinstance(c, str) for c in cfg[key]), cfg[key]  # an unquoted ': ' makes a mapping
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts, key
        for command in starts:
            assert f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={remote}/auth_token ray start" in command
    head = next(c for c in cfg["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head


def _run_like_the_launcher(commands: list[str], token_dir: Path, remote: str, tmp: Path) -> tuple[int, list[str]]:
    """Run ``commands`` one by one as `ray up` does (stop at the first failure), with a fake ``ray`` that
    records how it was started, and the token folder at ``token_dir``."""
    bin_dir, log = tmp / "bin", tmp / "ray.log"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "ray"
    fake.write_text('#!/bin/sh\necho "$* | mode=${RAY_AUTH_MODE:-} token=${RAY_AUTH_TOKEN_PATH:-}" >> "$RAY_LOG"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_LOG": str(log), "RAY_HEAD_IP": "10.0.0.10"}
    env.pop("RAY_AUTH_MODE", None)
    for command in commands:
        done = subprocess.run(["bash", "-c", command.replace(remote, str(token_dir))], check=False, env=env,
                              capture_output=True, text=True, timeout=30)
        if done.returncode:
            return done.returncode, log.read_text().splitlines() if log.exists() else []
    return 0, log.read_text().splitlines()


@pytest.mark.parametrize("rel", LAUNCHERS)
@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_launcher_commands_refuse_a_missing_or_readable_token_and_start_ray_with_it(rel, key, tmp_path):
    cfg = _load(rel)
    remote, _ = _token_mount(cfg)
    token_dir = tmp_path / "auth"
    token_dir.mkdir(mode=0o700)

    code, calls = _run_like_the_launcher(cfg[key], token_dir, remote, tmp_path)  # no token yet
    assert code != 0 and not [c for c in calls if c.startswith("start")], calls

    token = token_dir / "auth_token"
    token.write_text("0" * 64)
    token.chmod(0o644)  # readable by every user of the node
    code, calls = _run_like_the_launcher(cfg[key], token_dir, remote, tmp_path)
    assert code != 0 and not [c for c in calls if c.startswith("start")], calls

    token.chmod(0o600)
    (tmp_path / "ray.log").unlink(missing_ok=True)
    code, calls = _run_like_the_launcher(cfg[key], token_dir, remote, tmp_path)
    starts = [c for c in calls if c.startswith("start")]
    assert code == 0 and len(starts) == 1, calls
    assert starts[0].endswith(f"mode=token token={token}")
    assert ("--head" in starts[0]) == (key == "head_start_ray_commands")


# ----------------------------------------------------------------------------- KubeRay
def _env(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def test_kuberay_nodes_and_rayjob_use_the_operators_token_secret():
    rc = _load("kuberay/raycluster.yaml")
    assert rc["spec"]["authOptions"]["mode"] == "token"
    # The operator stores the generated token in the Secret named like the RayCluster, key auth_token.
    expected = {"name": rc["metadata"]["name"], "key": "auth_token"}
    pods = [rc["spec"]["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in rc["spec"]["workerGroupSpecs"]]
    for pod in pods:
        env = _env(pod["containers"][0])
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == expected
    job = _load("kuberay/rayjob.yaml")
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    env = _env(submitter)
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == expected
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == expected["name"]
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert not [k for k in runtime_env.get("env_vars", {}) if "PASSWORD" in k or "TOKEN" in k]


# ----------------------------------------------------------------------------- the image's build context
def _dockerignore() -> list[tuple[re.Pattern, bool]]:
    """(regex, negated) per .dockerignore line, in order (Docker: last match wins; a pattern that matches
    a parent folder matches everything in it; ``**`` spans folders, ``*`` and ``?`` do not)."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex + r"\Z"), negated))
    return rules


def _sent_to_docker(path: str, rules) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    excluded = False
    for regex, negated in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = not negated
    return not excluded


SECRETS = [".env", "cluster/mlflow/.env", "cluster/mlflow/basic_auth.ini", "camu/.env", "orchestrator/prod.env",
           "jobs/.env.local", ".envrc", ".netrc", "camu/.netrc", "id_rsa", "camu/id_ed25519", "orchestrator/tls.key",
           "jobs/server.pem", "auth_token", "camu/auth_token", ".ray/auth_token", ".git/config", ".venv/bin/python",
           "venv/lib/x.py", "data/mnist/train.npy", "mlflow.db", "camu/mlflow.db-wal", "mlruns/0/meta.yaml",
           "mlartifacts/1/a.bin", "camu_runs/x/result.json", ".camu-cache/k/weights.safetensors",
           "camu/__pycache__/a.cpython-311.pyc", "jobs/secrets.yaml", "orchestrator/credentials.json",
           "camu/model.pt", "tests/unit/test_remote.py", "benchmarks/x.py"]


def test_the_build_context_never_carries_secrets_stores_or_data():
    rules = _dockerignore()
    sent = [p for p in SECRETS if _sent_to_docker(p, rules)]
    assert not sent, sent


def test_the_build_context_carries_everything_the_dockerfile_copies():
    dockerfile = (CLUSTER / "images" / "Dockerfile").read_text()
    rules = _dockerignore()
    sources = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            args = [a for a in line.split()[1:] if not a.startswith("--")]
            sources += args[:-1]
    assert sources and "." not in sources and "cluster" not in sources  # no catch-all, no cluster/ (its .env)
    for source in sources:
        files = [source] if (ROOT / source).is_file() else [
            p.relative_to(ROOT).as_posix() for p in (ROOT / source).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".yaml", ".toml", ".md")]
        assert files, source
        missing = [f for f in files if not _sent_to_docker(f, rules)]
        assert not missing, missing
    assert _sent_to_docker("camu/data/__init__.py", rules) and _sent_to_docker("orchestrator/secrets.py", rules)


# ----------------------------------------------------------------------------- MLflow server
def _ini(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read_string(path.read_text())
    return parser["mlflow"]


def _sqlite_path(uri: str) -> Path:
    assert uri.startswith("sqlite:///"), uri
    return Path(uri[len("sqlite:///"):])


def _mlflow_permissions():
    """mlflow/server/auth/permissions.py, loaded alone (the auth package needs the mlflow[auth] extra)."""
    import importlib.util

    import mlflow

    path = Path(mlflow.__file__).parent / "server" / "auth" / "permissions.py"
    spec = importlib.util.spec_from_file_location("mlflow_auth_permissions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_basic_auth_grants_nothing_by_default():
    ini = _ini(CLUSTER / "mlflow" / "basic_auth.ini")
    assert ini["default_permission"] == "NO_PERMISSIONS"
    permission = _mlflow_permissions().get_permission(ini["default_permission"])  # MLflow's own name for "none"
    assert not (permission.can_read or permission.can_use or permission.can_update or permission.can_manage)


def test_compose_keeps_the_auth_database_out_of_the_served_artifacts():
    compose = _load("mlflow/docker-compose.yaml")
    mlflow = compose["services"]["mlflow"]
    artifacts = Path(re.search(r"--artifacts-destination\s+(\S+)", mlflow["command"]).group(1))
    auth_db = _sqlite_path(_ini(CLUSTER / "mlflow" / "basic_auth.ini")["database_uri"])
    assert not auth_db.is_relative_to(artifacts), (auth_db, artifacts)
    volumes = {v.split(":")[1]: v.split(":")[0] for v in mlflow["volumes"]}
    holder = next(m for m in volumes if auth_db.is_relative_to(m))  # the auth database is on a mounted volume...
    assert volumes[holder] != volumes[str(artifacts)] and holder in {"/auth"}  # ...of its own
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == "/config/basic_auth.ini"


def test_single_node_server_runs_basic_auth_with_its_database_outside_the_artifacts(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mlflow"
    fake.write_text('#!/bin/sh\necho "$@" > "$MLFLOW_ROOT/args"\ncp "$MLFLOW_AUTH_CONFIG_PATH" "$MLFLOW_ROOT/seen.ini"\n')
    fake.chmod(0o755)
    root = tmp_path / "mlflow"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MLFLOW_ROOT": str(root), "HOME": str(tmp_path)}
    script = str(CLUSTER / "mlflow" / "sqlite-single-node.sh")
    refused = subprocess.run(["bash", script], check=False, env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in refused.stderr
    done = subprocess.run(["bash", script], check=False, env={**env, "MLFLOW_AUTH_ADMIN_PASSWORD": "x" * 16},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    args = (root / "args").read_text().split()
    assert "--app-name" in args and args[args.index("--app-name") + 1] == "basic-auth"
    artifacts = Path(args[args.index("--artifacts-destination") + 1])
    ini = _ini(root / "seen.ini")
    assert ini["default_permission"] == "NO_PERMISSIONS"
    auth_db = _sqlite_path(ini["database_uri"])
    assert not auth_db.is_relative_to(artifacts) and auth_db.parent == root / "auth"
    assert stat.S_IMODE((root / "auth").stat().st_mode) == 0o700
    assert "x" * 16 not in (root / "seen.ini").read_text()  # the password stays in the environment
