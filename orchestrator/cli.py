"""camu-orch: the command line. Thin: parse, delegate to orchestrator modules, print, set exit codes."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestrator import __version__
from orchestrator.progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="CaMU machine unlearning on Ray (Train + Tune), tracked in MLflow.")


class Registry(str, Enum):
    datasets = "datasets"
    models = "models"
    scenarios = "scenarios"
    methods = "methods"


class Format(str, Enum):
    table = "table"
    json = "json"
    parquet = "parquet"


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the camu-orch version."""
    import camu

    typer.echo(f"camu-orch {__version__} (camu {camu.__version__})")


@app.command("ls")
def list_registry(what: Annotated[Registry, typer.Argument(help="which registry to list")]) -> None:
    """List registered datasets, models, scenarios or methods.

    Example: camu-orch ls datasets
    """
    import camu

    registry = {"datasets": camu.DATASETS, "models": camu.MODELS, "scenarios": camu.SCENARIOS,
                "methods": camu.METHODS}[what.value]
    for name, description in registry.describe().items():
        typer.echo(f"{name:<16} {description}")


SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="override a job value, e.g. --set dataset.root=/data/mnist (repeatable)")]


@app.command()
def validate(job: Annotated[Path, typer.Argument(help="job YAML")],
             overrides: SetOption = None,
             no_data: Annotated[bool, typer.Option("--no-data", help="skip loading the data and building splits")] = False,
             ) -> None:
    """Check a job file without running it: schema, registry names and options, search space,
    resources, and (unless --no-data) the data root and every scenario's split.

    Example: camu-orch validate jobs/quickstart.yaml
    """
    from orchestrator.spec import JobSpecError
    from orchestrator.validate import check_job

    try:
        checked = check_job(job, check_data=not no_data, local=False, overrides=overrides)
    except JobSpecError as err:
        _fail(str(err))
    spec = checked.spec
    typer.echo(f"{job}: ok — {len(spec.scenarios)} scenario(s) x {len(spec.seeds)} seed(s), "
               f"{spec.sweep.num_samples} trial(s) each ({spec.sweep.search}), "
               f"{max(spec.resources.num_workers, 1)} worker(s) per run")


@app.command()
def submit(job: Annotated[Path, typer.Argument(help="job YAML")],
           address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")] = None,
           overrides: SetOption = None,
           ) -> None:
    """Run a job: original, oracle, CaMU sweep per scenario, all tracked in MLflow.

    Without an address (and no RAY_ADDRESS) it runs on this machine, starting a local Ray instance.

    Example: camu-orch submit jobs/quickstart.yaml
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith("http"):
        _fail("submission to a remote cluster through the Ray Jobs API (--address http://HEAD:8265) is not "
              "available yet; run on the cluster itself with `camu-orch run JOB` or submit without --address")
    _run(job, address, overrides)


@app.command()
def run(job: Annotated[Path, typer.Argument(help="job YAML")], overrides: SetOption = None) -> None:
    """Run a job in this process against the current Ray cluster (the entrypoint of a Ray job).

    Example: camu-orch run jobs/quickstart.yaml
    """
    _run(job, os.environ.get("RAY_ADDRESS"), overrides)


def _run(job: Path, address: Optional[str], overrides: Optional[list[str]] = None) -> None:
    import time

    from orchestrator.spec import JobSpecError
    from orchestrator.tracking import redact
    from orchestrator.validate import check_job

    try:
        checked = check_job(job, check_data=True, local=address is None, overrides=overrides)
        from orchestrator.pipeline import run_job

        start = time.perf_counter()
        outcome = run_job(checked, address=address)
    except JobSpecError as err:
        _fail(str(err))
    except ConnectionError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: open MLflow runs were marked KILLED[/yellow]")
        raise typer.Exit(130)
    from orchestrator.results import render_text

    console.print(render_text(outcome.summary), markup=False)
    uri = redact(outcome.tracking_uri)
    console.print(f"\ndone in {time.perf_counter() - start:.1f}s", markup=False)
    console.print(f"MLflow experiment: {outcome.experiment_name} (id {outcome.experiment_id})", markup=False)
    console.print(f"parent run id:     {outcome.parent_run_id}", markup=False)
    for scenario, model_uri in outcome.registered.items():
        console.print(f"best model ({scenario}): {model_uri}", markup=False)
    ui = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"open {uri}"
    console.print(f"open the UI:       {ui}   then experiment '{outcome.experiment_name}'", markup=False)
    console.print(f"results:           camu-orch results {outcome.parent_run_id}", markup=False)


@app.command()
def results(ident: Annotated[str, typer.Argument(help="job name (newest run) or parent run id")],
            format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
            output: Annotated[Optional[str], typer.Option("--output", "-o", help="write to FILE")] = None,
            tracking_uri: Annotated[Optional[str], typer.Option(help="default: MLFLOW_TRACKING_URI, else ./mlflow.db")] = None,
            ) -> None:
    """Print a job's summary: one row per (scenario, method, trial).

    Example: camu-orch results quickstart --format json
    """
    from orchestrator.results import load_summary, write_table
    from orchestrator.tracking import Tracker, default_tracking_uri

    try:
        _, table = load_summary(Tracker(tracking_uri or default_tracking_uri()), ident)
        text = write_table(table, format.value, output)
    except (LookupError, ValueError) as err:
        _fail(str(err))
    if text is not None:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":  # pragma: no cover
    app()
