"""What the camu-orch commands share: the option types that several commands take (``--set``, ``--address``,
``--tracking-uri``, ``--ui-url``), the check of ``--ui-url``, and the one way a command prints an expected error
and exits (``print_error``, ``fail``). It sits below every other module of ``orchestrator.commands`` and below
``orchestrator.cli`` (which prints the errors its handler catches with ``print_error``) and imports neither, so
the command modules and the app can share it without an import cycle.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from orchestrator.progress import err_console

SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="override a job value, e.g. --set dataset.root=/data/mnist (repeatable)")]
AddressOption = Annotated[str | None,
                          typer.Option(help="Ray dashboard URL, e.g. http://HEAD:8265 (default: RAY_ADDRESS)")]
TrackingOption = Annotated[str | None, typer.Option(help="default: MLFLOW_TRACKING_URI, else ./mlflow.db")]
UiUrlOption = Annotated[str | None, typer.Option(
    "--ui-url", help="where the MLflow UI is served, for the links printed and written (default: the tracking "
                     "server's address, else http://127.0.0.1:5000; env CAMU_ORCH_UI_URL)")]


def print_error(message: str) -> None:
    from rich.text import Text

    from orchestrator.secrets import redact

    err_console.print(Text.assemble(("error: ", "red"), redact(message)), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    print_error(message)
    raise typer.Exit(code)


def use_ui_url(ui_url: str | None) -> None:
    """Check ``--ui-url`` and hand it to everything that writes links (the job, its remote submission)."""
    from orchestrator.record.links import UI_URL_ENV, ui_url_problem

    if ui_url is None:
        return
    problem = ui_url_problem(ui_url)
    if problem:
        fail(f"--ui-url: {problem}")
    os.environ[UI_URL_ENV] = ui_url.rstrip("/")
