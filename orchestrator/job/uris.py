"""Classifying the URIs a user gives: where the original model's weights come from, and which
MLflow tracking store to use. Pure string checks (no MLflow import), so that a bad URI is refused
by `camu-orch validate` before anything is contacted or created."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from orchestrator.inputs import InputProblem

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
RUN_ID = re.compile(r"[0-9a-f]{32}")
# models:/<name>/<version>, models:/<name>/latest, models:/<name>@<alias>, models:/m-<logged model id>
MODELS_URI = re.compile(r"models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.\- ]*)"
                        r"(?:/(?P<version>\d+|latest)|@(?P<alias>[\w-]+))?")
RUNS_URI = re.compile(r"runs:/(?P<run>[0-9a-f]{32})(?:/(?P<path>[^?#]*))?")
SERVER_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


@dataclass(frozen=True)
class ModelSource:
    """Where ``original.uri`` points: a local weights file, a run's artifact, or a registered model."""

    kind: Literal["file", "runs", "models", "mlflow-artifacts"]
    location: str  # the path for "file", the URI otherwise


class UriError(InputProblem):
    """A URI that cannot be used; the message says why and how to fix it (the caller names the field)."""


def model_source(uri: str) -> ModelSource:
    """Classify a model URI by scheme; anything that is not a local weights file, ``runs:/``,
    ``models:/`` or ``mlflow-artifacts:/`` is refused (so an odd URI is never handed to a loader)."""
    uri = uri.strip()
    if not uri:
        raise UriError("empty; give a weights file (.safetensors or a .pt state dict), runs:/RUN_ID/PATH "
                       "or models:/NAME/VERSION, or remove the key to train the original")
    if any(c in uri for c in "\n\r\0"):
        raise UriError("contains control characters; give a single path or URI")
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:  # a path (or a Windows drive letter)
        path = unquote(urlsplit(uri).path) if scheme == "file" else uri
        return ModelSource("file", path)
    if scheme == "models":
        if not MODELS_URI.fullmatch(uri):
            raise UriError(f"{uri!r} is not a registered-model URI; use models:/NAME/VERSION, "
                           f"models:/NAME@ALIAS or models:/NAME/latest (no query string)")
        return ModelSource("models", uri)
    if scheme == "runs":
        match = RUNS_URI.fullmatch(uri)
        if not match:
            raise UriError(f"{uri!r} is not a run artifact URI; use runs:/RUN_ID/PATH with the 32-hex run id, "
                           f"e.g. runs:/<id>/model/weights.safetensors")
        return ModelSource("runs", uri)
    if scheme == "mlflow-artifacts":
        return ModelSource("mlflow-artifacts", uri)
    raise UriError(f"scheme {scheme!r} is not supported; give a local weights file, runs:/RUN_ID/PATH, "
                   f"models:/NAME/VERSION or mlflow-artifacts:/PATH (copy other storage to a local file first)")


def local_weights_problem(path: str) -> str | None:
    """Why a local weights path cannot be used (missing, a folder, an unknown suffix), or None."""
    p = Path(path).expanduser()
    if not p.exists():
        return f"{path} does not exist; give a weights file (.safetensors or a .pt state dict)"
    if not p.is_file():
        return f"{path} is a folder; give the weights file inside it (e.g. {path.rstrip('/')}/weights.safetensors)"
    if p.suffix.lower() not in WEIGHT_SUFFIXES:
        return f"{path} is not a weights file ({'/'.join(WEIGHT_SUFFIXES)})"
    return None


def tracking_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be an MLflow tracking store for camu-orch, or None.

    Accepted: ``sqlite:///PATH`` whose folder exists, ``http(s)://HOST[:PORT]``, SQL databases
    (``postgresql://``, ``mysql://``, ``mssql://`` with an optional ``+driver``) and ``databricks``.
    Refused: file stores (MLflow 3.7+ refuses them), in-memory sqlite, unknown schemes.
    """
    from orchestrator.secrets import redact

    shown = redact(uri)
    if not uri.strip():
        return "empty; give sqlite:///path/mlflow.db or http://HOST:5000"
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    base = scheme.split("+", 1)[0]
    if scheme in ("", "file") or len(scheme) == 1:
        name = Path(parts.path or uri).name or "mlflow"
        return (f"{shown} is a file store, which MLflow 3.7+ refuses; use sqlite:///{name}.db "
                f"(a file in an existing folder) or an MLflow server http://HOST:5000")
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri in ("sqlite:///", "sqlite:///:memory:"):
            return f"{shown} is not a sqlite file; use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        db = Path(uri[len("sqlite:///"):]).expanduser()
        if db.is_dir():
            return f"{db} is a folder; name the database file, e.g. sqlite:///{db / 'mlflow.db'}"
        if not db.parent.is_dir():
            return f"folder {db.parent} does not exist; create it or point the sqlite file elsewhere"
        return None
    if (base in SERVER_SCHEMES and (parts.username or parts.password)) or parts.password:
        where = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
                 if base in SERVER_SCHEMES else "give the password through the database client's own way instead "
                                                "(PGPASSWORD or ~/.pgpass for postgresql)")
        return (f"{shown} carries credentials, which would travel wherever the URI goes (the trial configuration "
                f"Ray stores, the job's environment); remove user:password@ from it and {where}")
    if base in SERVER_SCHEMES:
        return None if parts.hostname else f"{shown} has no host; use http://HOST:PORT"
    if base in DATABASE_SCHEMES:
        return None if parts.hostname else f"{shown} has no database host"
    if scheme == "databricks":
        return None
    return (f"scheme {scheme!r} of {shown} is not an MLflow tracking store; use sqlite:///path.db, "
            f"http(s)://HOST:PORT, postgresql://... or databricks")
