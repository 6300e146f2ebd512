"""Links into the MLflow UI that open where a comparison is read: the job's runs table in
"Model training" mode (MLflow 3 opens a fresh browser on its GenAI overview otherwise), filtered
to the best trials, the compare view of chosen runs, a run's report artifact.

The UI's address is the one the user gave (``--ui-url`` / ``CAMU_ORCH_UI_URL``), else the tracking
server's own address (a server serves its UI), else ``http://127.0.0.1:5000``, where
``mlflow ui --backend-store-uri <store>`` listens by default.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from orchestrator.record.run_identity import Tag
from orchestrator.secrets import redact

UI_URL_ENV = "CAMU_ORCH_UI_URL"
DEFAULT_UI = "http://127.0.0.1:5000"
MODE = "workflowType=machine_learning"  # the runs table, not the GenAI overview
BEST_FILTER = f"tags.`{Tag.IS_BEST}` = 'true'"


def ui_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the UI's address (None when it can)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url[:80]!r} is not an http(s) address; give one like http://127.0.0.1:5000"
    if parts.username or parts.password:
        return "must not carry credentials; log in through the browser instead"
    if parts.query or parts.fragment:
        return "give the UI's address only (no ?query or #fragment), e.g. http://mlflow.example.org:5000"
    return None


def ui_base(tracking_uri: str, ui_url: str | None = None) -> str:
    """Where the MLflow UI of ``tracking_uri`` is served (see the module docstring)."""
    chosen = ui_url or os.environ.get(UI_URL_ENV)
    if chosen:
        return chosen.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        parts = urlsplit(redact(tracking_uri))
        return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}".rstrip("/")
    return DEFAULT_UI


def serve_hint(tracking_uri: str, ui_url: str | None = None) -> str | None:
    """The command that serves the UI of a local store (None for a tracking server: it already does)."""
    if tracking_uri.startswith(("http://", "https://")):
        return None
    base = urlsplit(ui_base(tracking_uri, ui_url))
    port = f" --port {base.port}" if base.port and base.port != 5000 else ""
    host = f" --host {base.hostname}" if base.hostname not in (None, "127.0.0.1", "localhost") else ""
    return f"mlflow ui --backend-store-uri {redact(tracking_uri)}{host}{port}"


@dataclass(frozen=True)
class UiLinks:
    """Every link camu-orch prints or writes for one job."""

    base: str
    experiment_id: str

    def runs(self, search: str | None = None) -> str:
        """The experiment's runs table (model-training mode), optionally filtered by an MLflow search."""
        url = f"{self.base}/#/experiments/{self.experiment_id}/runs?{MODE}"
        return url + (f"&searchFilter={quote(search, safe='')}" if search else "")

    def job_runs(self, job: str) -> str:
        return self.runs(f"tags.`{Tag.JOB}` = '{job}'")

    def best_trials(self, job: str, scenario: str | None = None) -> str:
        where = f"{BEST_FILTER} and tags.`{Tag.JOB}` = '{job}'"
        return self.runs(where + (f" and tags.`{Tag.SCENARIO}` = '{scenario}'" if scenario else ""))

    def run(self, run_id: str) -> str:
        return f"{self.base}/#/experiments/{self.experiment_id}/runs/{run_id}?{MODE}"

    def artifact(self, run_id: str, path: str) -> str:
        return f"{self.base}/#/experiments/{self.experiment_id}/runs/{run_id}/artifacts/{quote(path)}?{MODE}"

    def compare(self, run_ids: list[str]) -> str:
        runs = quote(json.dumps(run_ids, separators=(",", ":")), safe="")
        experiments = quote(json.dumps([self.experiment_id], separators=(",", ":")), safe="")
        return f"{self.base}/#/compare-runs?runs={runs}&experiments={experiments}"


def links_for(tracking_uri: str, experiment_id: str, ui_url: str | None = None) -> UiLinks:
    return UiLinks(ui_base(tracking_uri, ui_url), experiment_id)
