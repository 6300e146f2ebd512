"""Keeping secrets out of everything camu-orch prints or logs: credentials embedded in URIs
(``scheme://user:password@host``) and the values of the secret environment variables it forwards."""

from __future__ import annotations

import os
import re
from typing import Any

SECRET_ENV_VARS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "RAY_AUTH_TOKEN", "AWS_SECRET_ACCESS_KEY",
                   "AWS_SESSION_TOKEN", "DATABRICKS_TOKEN", "AZURE_STORAGE_ACCESS_KEY")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s'\"]+@")
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words


def redact(text: str) -> str:
    """``text`` with every ``scheme://user:password@`` reduced to ``scheme://***@`` and the values of
    secret environment variables replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, "***")
    return text


def redact_data(data: Any) -> Any:
    """A copy of nested YAML-like ``data`` (dicts, lists, scalars) with every string redacted."""
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_data(v) for v in data]
    return redact(data) if isinstance(data, str) else data
