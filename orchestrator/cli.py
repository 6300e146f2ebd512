"""camu-orch: the command line. Thin: parse, delegate to orchestrator modules, print, set exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
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
           address: Annotated[Optional[str], typer.Option(help="Ray dashboard URL, e.g. http://HEAD:8265 (default: RAY_ADDRESS; none: run here)")] = None,
           overrides: SetOption = None,
           wait: Annotated[bool, typer.Option("--wait", help="with --address: follow the logs until the job ends")] = False,
           ) -> None:
    """Run a job: original, oracle, CaMU sweep per scenario, all tracked in MLflow.

    Without an address (and no RAY_ADDRESS) it runs on this machine, starting a local Ray instance.
    With one, it is submitted through the Ray Jobs API and this command prints its submission id.

    Example: camu-orch submit jobs/quickstart.yaml
    """
    from orchestrator.remote import resolve_address
    from orchestrator.spec import JobSpecError

    try:
        address = resolve_address(address)
    except JobSpecError as err:
        _fail(str(err))
    if address is None:
        _run(job, None, overrides)
        return
    _submit_remote(job, address, overrides or [], wait)


def _submit_remote(job: Path, address: str, overrides: list[str], wait: bool) -> None:
    from orchestrator import remote
    from orchestrator.spec import JobSpecError
    from orchestrator.validate import check_job

    try:
        checked = check_job(job, check_data=False, local=False, overrides=overrides)
        submission = remote.build_submission(checked.spec, job, overrides)
        submission_id = remote.submit_with_retry(remote.client(address), submission)
    except JobSpecError as err:
        _fail(str(err))
    except (ConnectionError, RuntimeError) as err:
        _fail(f"--address: could not submit to {address}: {err}")
    console.print(f"submitted {submission_id} to {address}", markup=False)
    console.print(f"follow it: camu-orch logs {submission_id} --follow --address {address}", markup=False)
    if wait:
        raise typer.Exit(_follow(address, submission_id))


def _follow(address: str, submission_id: str) -> int:
    """Stream a job's logs until it ends; the exit code says how it ended."""
    import asyncio

    from orchestrator import remote

    client = remote.client(address)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())
    status = str(client.get_job_status(submission_id).value)
    console.print(f"{submission_id}: {status}", markup=False)
    return 0 if status == "SUCCEEDED" else 1


AddressOption = Annotated[Optional[str], typer.Option(help="Ray dashboard URL (default: RAY_ADDRESS)")]


def _cluster(address: Optional[str]):  # noqa: ANN202
    from orchestrator import remote
    from orchestrator.spec import JobSpecError

    try:
        resolved = remote.resolve_address(address)
    except JobSpecError as err:
        _fail(str(err))
    if not resolved:
        _fail("no cluster: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    return resolved, remote.client(resolved)


@app.command()
def status(submission_id: str, address: AddressOption = None) -> None:
    """Status of a submitted job. Example: camu-orch status camu-quickstart-1a2b3c4d"""
    _, client = _cluster(address)
    info = client.get_job_info(submission_id)
    typer.echo(f"{submission_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))


@app.command()
def logs(submission_id: str, address: AddressOption = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the job ends")] = False) -> None:
    """Logs of a submitted job. Example: camu-orch logs camu-quickstart-1a2b3c4d --follow"""
    resolved, client = _cluster(address)
    if follow:
        raise typer.Exit(_follow(resolved, submission_id))
    sys.stdout.write(client.get_job_logs(submission_id))


@app.command()
def stop(submission_id: str, address: AddressOption = None) -> None:
    """Stop a submitted job (its open MLflow runs are marked KILLED). Example: camu-orch stop camu-quickstart-1a2b3c4d"""
    _, client = _cluster(address)
    stopped = client.stop_job(submission_id)
    typer.echo(f"{submission_id}: {'stop requested' if stopped else 'already finished'}")


@app.command("list")
def list_jobs(address: AddressOption = None) -> None:
    """Jobs submitted to the cluster by camu-orch. Example: camu-orch list"""
    _, client = _cluster(address)
    for job in sorted(client.list_jobs(), key=lambda j: j.start_time or 0):
        if (job.metadata or {}).get("camu.job") or (job.submission_id or "").startswith("camu-"):
            typer.echo(f"{job.submission_id:<40} {job.status.value:<10} {(job.metadata or {}).get('camu.job', '')}")


@app.command()
def run(job: Annotated[Path, typer.Argument(help="job YAML")], overrides: SetOption = None) -> None:
    """Run a job in this process against the current Ray cluster (the entrypoint of a Ray job).

    Example: camu-orch run jobs/quickstart.yaml
    """
    _run(job, os.environ.get("RAY_ADDRESS"), overrides)


def _interrupt_on_sigterm() -> None:
    """`camu-orch stop` (Ray stops a job with SIGTERM) and schedulers end jobs with SIGTERM: treat it like
    Ctrl-C so that the open MLflow runs are marked KILLED instead of being left RUNNING."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _run(job: Path, address: Optional[str], overrides: Optional[list[str]] = None) -> None:
    def start():  # noqa: ANN202 - pipeline.JobOutcome
        from orchestrator.pipeline import run_job
        from orchestrator.validate import check_job

        return run_job(check_job(job, check_data=True, local=address is None, overrides=overrides), address=address)

    _execute(start)


def _execute(job: Callable[[], object]) -> None:
    """Run a job-starting callable: SIGTERM acts like Ctrl-C, bad input and unreachable services exit 2
    with the message, an interruption exits 130 (runs marked KILLED), success prints the outcome."""
    import time

    from orchestrator.spec import JobSpecError

    _interrupt_on_sigterm()
    start = time.perf_counter()
    try:
        outcome = job()
    except (JobSpecError, LookupError, ConnectionError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: open MLflow runs were marked KILLED[/yellow]")
        raise typer.Exit(130)
    _print_outcome(outcome, start)


def _print_outcome(outcome, start: float) -> None:  # noqa: ANN001 - pipeline.JobOutcome
    import time

    from orchestrator.results import render_text
    from orchestrator.tracking import redact

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
def resume(ident: Annotated[str, typer.Argument(help="job name (newest run) or parent run id")],
           tracking_uri: Annotated[Optional[str], typer.Option(help="default: MLFLOW_TRACKING_URI, else ./mlflow.db")] = None,
           ) -> None:
    """Continue an interrupted job: finished stages and trials are not redone, unfinished trials continue
    from their last checkpoint, and the MLflow run tree is continued, not duplicated.

    Example: camu-orch resume quickstart
    """

    def start():  # noqa: ANN202 - pipeline.JobOutcome
        from orchestrator.pipeline import resume_job

        return resume_job(ident, tracking_uri=tracking_uri, address=os.environ.get("RAY_ADDRESS"))

    _execute(start)


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
