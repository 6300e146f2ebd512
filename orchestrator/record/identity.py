"""Who runs a job and with which code: the owner that namespaces what a job creates on a shared tracker,
and the code version recorded on every run (a resume across a change that alters results is refused).

The owner is the MLflow user (``MLFLOW_TRACKING_USERNAME``, the identity a password-protected tracking
server knows), else the OS user. It is folded into experiment and registered-model names by default
(``tracking.namespace: owner``), so that two users running the same shipped job on one tracker never
reopen, alias or restore each other's runs; ``tracking.namespace: shared`` opts a team into one record.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import os
import re
import subprocess
from pathlib import Path

from orchestrator.record.run_identity import Tag

OWNER_ENV = "CAMU_ORCH_OWNER"  # set by `submit --address` on the job: the submitter, not the cluster's user
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# the packages whose source decides a job's numbers; a change in any of their files changes the hash
CODE_PACKAGES = ("camu", "orchestrator")


def owner() -> str:
    """The caller's name as a registry-safe token: the MLflow user if set, else the OS user."""
    name = os.environ.get(OWNER_ENV) or os.environ.get("MLFLOW_TRACKING_USERNAME") or _os_user()
    return _UNSAFE.sub("_", name).strip("_.-")[:40] or "unknown"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return f"uid{os.getuid()}"


def experiment_name(base: str, namespace: str, who: str | None = None) -> str:
    """The MLflow experiment a job writes to: ``base`` itself when shared, else ``base@owner``."""
    return base if namespace == "shared" else f"{base}@{who or owner()}"


def registered_model_name(prefix: str, namespace: str, scenario: str, method: str, who: str | None = None) -> str:
    """Registry name of a chosen model: ``<prefix>-<scenario>-<method>``, with ``.<owner>`` after the
    prefix unless the namespace is shared (registry names allow letters, digits, ``_ . -``)."""
    scoped = prefix if namespace == "shared" else f"{prefix}.{who or owner()}"
    return f"{scoped}-{scenario}-{method}"


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """sha256 (16 hex) over the source files of the packages that compute a job's numbers, by relative
    path and content: equal exactly when the code is the same, whether or not it is a git checkout."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+g<git sha>[.dirty]`` in a git checkout, else the package version."""
    from orchestrator import __version__

    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *CODE_PACKAGES],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}" if sha else __version__


def run_identity_tags() -> dict[str, str]:
    """Tags every run a job creates carries: its owner and the code that produced it."""
    return {Tag.OWNER: owner(), Tag.CODE_HASH: code_hash(), Tag.CODE_VERSION: code_version()}
