"""Keeping secrets out of everything camu-orch prints or logs: credentials embedded in URIs
(``scheme://user:password@host``) and the values of the secret environment variables it forwards."""

from __future__ import annotations

import logging
import os
import re
import traceback
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


# ----------------------------------------------------------------------------- logging
# The loggers that can print a tracking URI, a request URL or an exception quoting one.
REDACTED_LOGGERS = ("", "mlflow", "ray", "orchestrator", "camu")
_MARK = "_camu_redacting"


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: its formatted message (a URI can be split over the format and its
    arguments) and the text of its exception. A clean record keeps its msg and args untouched."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken format is logging's to report; redact what is there
        message = None
    if message is None:
        record.msg = redact(str(record.msg))
    elif redact(message) != message:
        record.msg, record.args = redact(message), ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    return record


class RedactingFilter(logging.Filter):
    """Redacts every record a handler emits (for records not made by the record factory, e.g.
    ``logging.makeLogRecord`` from a queue or socket)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_redacting_filter() -> None:
    """Redact every log record of this process, whoever logs it (camu-orch, MLflow, Ray, any library).

    A ``logging.Filter`` on a logger does not see records propagated from its children, and handlers
    can be added later, so the record factory is wrapped: every record created anywhere is redacted
    when it is made. The filter is also put on the handlers that exist now on the root, mlflow, ray,
    orchestrator and camu loggers. Idempotent; cheap enough to call at every process start."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, _MARK, False):
        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(factory(*args, **kwargs))

        setattr(redacting_factory, _MARK, True)
        logging.setLogRecordFactory(redacting_factory)
    for name in REDACTED_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
    last_resort = logging.lastResort
    if last_resort is not None and not any(isinstance(f, RedactingFilter) for f in last_resort.filters):
        last_resort.addFilter(RedactingFilter())
