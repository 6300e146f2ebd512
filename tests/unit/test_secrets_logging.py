"""One redaction for every log line of a camu-orch process: records of MLflow's, Ray's and our own loggers
(and handlers added later) never print ``user:password@`` or a secret variable's value."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from orchestrator.secrets import install_redacting_filter, redact_record

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2secret"
URI = f"http://alice:{SECRET}@mlflow.example:5000"

PROBE = f"""
import logging, sys
import mlflow, ray  # both install their own handlers on import
from orchestrator.secrets import install_redacting_filter
if sys.argv[1] == "on":
    install_redacting_filter()
    install_redacting_filter()  # idempotent
late = logging.StreamHandler(sys.stderr)  # a handler added after the install
logging.getLogger("camu.late").addHandler(late)
logging.getLogger("mlflow.tracking._tracking_service.client").warning("cannot reach %s", "{URI}")
logging.getLogger("mlflow").warning("store " + "{URI}")
logging.getLogger("ray.train").error("upload to %s://%s@%s failed", "http", "alice:{SECRET}", "mlflow.example")
logging.getLogger("ray").warning("uri=%(uri)s", {{"uri": "{URI}"}})
logging.getLogger("orchestrator.record.tracking").warning("plain %s", "{URI}")
logging.getLogger("camu.late").warning("late %s", "{URI}")
try:
    raise RuntimeError("API request to {URI}/api/2.0/mlflow/runs/create failed")
except RuntimeError:
    logging.getLogger("mlflow.utils.rest_utils").exception("request failed")
logging.getLogger("ray.tune").warning("MLFLOW_TRACKING_PASSWORD is %s", "env-secret-value")
print("done", file=sys.stderr)
"""


def _run(mode: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_PASSWORD": "env-secret-value",
           "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE, mode], check=False, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_mlflow_ray_and_our_loggers_print_redacted():
    out = _run("on")
    assert "done" in out
    assert SECRET not in out and "env-secret-value" not in out, out
    assert out.count("http://***@mlflow.example:5000") >= 6, out  # each line still says where
    assert "Traceback" in out and "RuntimeError" in out  # the exception is kept, redacted


def test_without_the_filter_the_secret_would_be_printed():
    """The probe above is a real check: the same lines, unfiltered, leak."""
    out = _run("off")
    assert SECRET in out and "env-secret-value" in out


def test_record_redaction_keeps_clean_records_lazy():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "epoch %d of %s", (3, "job"), None)
    redact_record(record)
    assert record.args == (3, "job") and record.getMessage() == "epoch 3 of job"
    leaked = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s", (URI,), None)
    assert SECRET not in redact_record(leaked).getMessage()


def test_the_cli_installs_it_before_any_command(monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    saved = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)  # as in a fresh process
    try:
        assert CliRunner().invoke(app, ["version"]).exit_code == 0
        record = logging.getLogRecordFactory()("mlflow", logging.WARNING, __file__, 1, "to %s", (URI,), None)
    finally:
        logging.setLogRecordFactory(saved)
    assert SECRET not in record.getMessage()
    install_redacting_filter()
