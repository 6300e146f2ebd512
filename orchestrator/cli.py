"""camu-orch: the command line. Thin: parse, delegate to orchestrator modules, print, set exit codes.

Every command runs under one handler (``GuardedGroup``): expected errors (bad input, unreadable files,
unreachable services) print one redacted message and exit 2, a job that failed after it started exits
1, a bug keeps its traceback; ``--debug`` (or CAMU_ORCH_DEBUG=1) shows the traceback of every error.
User text is never rendered as console markup.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from orchestrator import __version__
from orchestrator.progress import console, err_console
from orchestrator.record.run_identity import Tag


class GuardedGroup(TyperGroup):
    """Runs every sub-command under the top-level error handler."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except KeyboardInterrupt:
            from orchestrator.lifecycle import exit_code

            err_console.print("interrupted: open MLflow runs were marked KILLED", style="yellow", markup=False)
            raise typer.Exit(exit_code()) from None
        except Exception as exc:  # noqa: BLE001 - the one place where every error is turned into an answer
            _report(exc, bool(ctx.params.get("debug")) or os.environ.get("CAMU_ORCH_DEBUG") == "1")


def _report(exc: Exception, debug: bool) -> None:
    from orchestrator.errors import classify, redacted_traceback
    from orchestrator.secrets import redact

    failure = classify(exc)
    if failure is None or debug:
        err_console.print(redacted_traceback(exc), markup=False, highlight=False, end="")
    if failure is None:
        err_console.print(f"internal error (a bug in camu-orch): {type(exc).__name__}: {redact(str(exc))[:500]}",
                          style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    _print_error(failure.message)
    raise typer.Exit(failure.code) from None


def _print_error(message: str) -> None:
    from rich.text import Text

    from orchestrator.secrets import redact

    err_console.print(Text.assemble(("error: ", "red"), redact(message)), highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    _print_error(message)
    raise typer.Exit(code)


app = typer.Typer(cls=GuardedGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="CaMU machine unlearning on Ray (Train + Tune), tracked in MLflow.")


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of every error")] = False) -> None:
    """CaMU machine unlearning on Ray (Train + Tune), tracked in MLflow."""
    from orchestrator.progress import quiet_libraries
    from orchestrator.secrets import install_redacting_filter

    install_redacting_filter()  # before any library logs: URIs with user:password@ never reach a log line
    quiet_libraries()


class Registry(str, Enum):
    datasets = "datasets"
    models = "models"
    scenarios = "scenarios"
    methods = "methods"


class By(str, Enum):
    method = "method"


class Format(str, Enum):
    table = "table"
    json = "json"
    parquet = "parquet"


@app.command()
def version() -> None:
    """Print the camu-orch version."""
    import camu

    typer.echo(f"camu-orch {__version__} (camu {camu.__version__})")


DEPENDENCIES = ("torch", "torchvision", "ray", "mlflow", "pyarrow", "pandas", "pydantic", "yaml", "numpy", "sklearn",
                "xgboost", "optuna", "safetensors", "typer", "rich")


@app.command()
def doctor() -> None:
    """Check that this Python can run camu-orch jobs: every dependency imports, Ray is the pinned version.
    Submissions run it on the cluster first (the preflight job).

    Example: python -m orchestrator doctor
    """
    import importlib

    from orchestrator import RAY_VERSION

    problems = []
    typer.echo(f"python {sys.version.split()[0]} at {sys.executable}")
    for name in DEPENDENCIES:
        try:
            module = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any import failure is the answer
            problems.append(f"{name}: cannot be imported ({type(err).__name__}: {err})")
            continue
        typer.echo(f"{name:<12} {getattr(module, '__version__', '?')}")
    import camu.methods  # noqa: F401 - the project itself (from the working directory)

    ray = sys.modules.get("ray")
    if ray is not None and ray.__version__ != RAY_VERSION:
        problems.append(f"ray: {ray.__version__} is installed but camu-orch needs {RAY_VERSION}")
    if problems:
        _fail("this Python cannot run camu-orch jobs:\n" + "\n".join(f"  - {p}" for p in problems)
              + "\ninstall the project's requirements (pip install -e .) in the environment that runs Ray")
    typer.echo("ok")


class ListFormat(str, Enum):
    table = "table"
    json = "json"


@app.command("ls")
def list_registry(what: Annotated[Registry, typer.Argument(help="which registry to list")],
                  fmt: Annotated[ListFormat, typer.Option(
                      "--format", help="table, or json (methods: every preset per model family and scenario "
                                       "kind with its values and reference source)")] = ListFormat.table,
                  ) -> None:
    """List registered datasets, models, scenarios or methods. For methods: each one's presets per model
    family (mnist: the paper's CNN; cifar: a ResNet) with their reference source, and the differences from
    the reference it keeps on purpose.

    Example: camu-orch ls methods --format json
    """
    import json

    import camu

    registry = {"datasets": camu.DATASETS, "models": camu.MODELS, "scenarios": camu.SCENARIOS,
                "methods": camu.METHODS}[what.value]
    if what is Registry.methods:
        from orchestrator.job.presets import method_catalogue

        catalogue = method_catalogue(camu.SCENARIOS.names())
        if fmt is ListFormat.json:
            typer.echo(json.dumps(catalogue, indent=2))
            return
        for entry in catalogue:
            typer.echo(f"{entry['name']}: {entry['description']}")
            for row in _distinct_presets(entry["presets"]):
                values = ", ".join(f"{k}={v}" for k, v in row["values"].items())
                typer.echo(f"    {row['preset']} [{row['family']}; {row['kinds']}]: {values}")
                typer.echo(f"        source: {row['source']}" + (f"; note: {row['note']}" if row["note"] else ""))
            for deviation in entry["deviations"]:
                typer.echo(f"    kept difference: {deviation}")
        return
    if fmt is ListFormat.json:
        typer.echo(json.dumps(registry.describe(), indent=2))
        return
    width = max(map(len, registry.names()), default=0) + 2
    for name, description in registry.describe().items():
        typer.echo(f"{name:<{width}}{description}")


def _distinct_presets(rows: list[dict]) -> list[dict]:
    """Preset rows with the scenario kinds that share the same values merged (for the table)."""
    merged: dict[tuple, dict] = {}
    for row in rows:
        key = (row["preset"], row["family"], repr(sorted(row["values"].items())), row["source"], row["note"])
        if key in merged:
            merged[key]["kinds"] += f", {row['scenario_kind']}"
        else:
            merged[key] = {**row, "kinds": row["scenario_kind"]}
    return list(merged.values())


SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="override a job value, e.g. --set dataset.root=/data/mnist (repeatable)")]
AddressOption = Annotated[str | None,
                          typer.Option(help="Ray dashboard URL, e.g. http://HEAD:8265 (default: RAY_ADDRESS)")]
TrackingOption = Annotated[str | None, typer.Option(help="default: MLFLOW_TRACKING_URI, else ./mlflow.db")]
UiUrlOption = Annotated[str | None, typer.Option(
    "--ui-url", help="where the MLflow UI is served, for the links printed and written (default: the tracking "
                     "server's address, else http://127.0.0.1:5000; env CAMU_ORCH_UI_URL)")]


def _use_ui_url(ui_url: str | None) -> None:
    """Check ``--ui-url`` and hand it to everything that writes links (the job, its remote submission)."""
    from orchestrator.record.links import UI_URL_ENV, ui_url_problem

    if ui_url is None:
        return
    problem = ui_url_problem(ui_url)
    if problem:
        _fail(f"--ui-url: {problem}")
    os.environ[UI_URL_ENV] = ui_url.rstrip("/")


@app.command()
def validate(job: Annotated[Path, typer.Argument(help="job YAML")],
             overrides: SetOption = None,
             no_data: Annotated[bool, typer.Option("--no-data",
                                                   help="skip loading the data and building splits")] = False,
             address: AddressOption = None,
             ) -> None:
    """Check a job file without running it: schema, registry names and options, search space, paths,
    resources (of this machine, unless --address / RAY_ADDRESS names a cluster) and, unless --no-data,
    the data and every scenario's split.

    Example: camu-orch validate jobs/quickstart.yaml
    """
    from orchestrator.job.validate import check_job

    remote = bool(address or os.environ.get("RAY_ADDRESS"))
    checked = check_job(job, check_data=not no_data, local=not remote, overrides=overrides)
    spec = checked.spec
    workers = spec.resources.num_workers
    typer.echo(f"{job}: ok - {len(spec.scenarios)} scenario(s) x {len(spec.seeds)} seed(s), "
               f"{len(spec.methods)} method(s) ({', '.join(m.name for m in spec.methods)}): each its preset + "
               f"{spec.sweep.num_samples} sweep trial(s) ({spec.sweep.search}), "
               + (f"{workers} worker(s) per run" if workers else "each run in one process (Train local mode)"))
    from camu.models import model_family

    family = model_family(spec.model.name)
    typer.echo(f"  presets: the {family} family's (model {spec.model.name}); list them with camu-orch ls methods")


@app.command()
def submit(job: Annotated[Path, typer.Argument(help="job YAML")],
           address: AddressOption = None,
           overrides: SetOption = None,
           wait: Annotated[bool, typer.Option("--wait",
                                              help="with --address: follow the logs until the job ends")] = False,
           no_check: Annotated[bool, typer.Option("--no-check", help="with --address: skip the preflight job that "
                                                                      "checks the cluster can run camu-orch")] = False,
           ui_url: UiUrlOption = None,
           allow_unauthenticated: Annotated[bool, typer.Option(
               "--allow-unauthenticated", help="with --address: submit even to a cluster without token "
                                               "authentication (only for a throwaway test cluster on "
                                               "loopback)")] = False,
           forward_credentials: Annotated[bool, typer.Option(
               "--forward-credentials", help="with --address: send MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN (and a "
                                             "URI with user:password@) in the job's runtime_env, readable by every "
                                             "token holder of the cluster; better: set them on the nodes")] = False,
           ) -> None:
    """Run a job: original, oracle, CaMU sweep per scenario, all tracked in MLflow.

    Without an address (and no RAY_ADDRESS) it runs on this machine, starting a local Ray instance.
    With one, it is submitted through the Ray Jobs API and this command prints its submission id.

    Example: camu-orch submit jobs/quickstart.yaml
    """
    from orchestrator.execution.jobs_api import resolve_address

    _use_ui_url(ui_url)
    address = resolve_address(address)
    if address is None:
        _run(job, None, overrides)
        return
    _submit_remote(job, address, overrides or [], wait, check=not no_check,
                   allow_unauthenticated=allow_unauthenticated, forward_credentials=forward_credentials)


def _submit_remote(job: Path, address: str, overrides: list[str], wait: bool, check: bool = True,
                   allow_unauthenticated: bool = False, forward_credentials: bool = False) -> None:
    import tempfile

    from orchestrator.execution import jobs_api as remote
    from orchestrator.job.validate import check_job

    checked = check_job(job, check_data=False, local=False, overrides=overrides)
    warnings = remote.transport_warnings(address) + remote.require_authentication(address, allow_unauthenticated)
    for warning in warnings + remote.credential_warnings(checked.spec, forward_credentials):
        err_console.print(f"warning: {warning}", style="yellow", markup=False)
    remote.check_cluster(address)
    client = remote.client(address)
    with tempfile.TemporaryDirectory(prefix="camu-upload-") as staging:  # uploaded by the first submit below
        submission = remote.build_submission(checked.spec, job, overrides, Path(staging), forward_credentials)
        if check:
            console.print("checking that the cluster can run camu-orch (preflight job; --no-check skips it)",
                          markup=False)
            remote.preflight(client, submission)
        try:
            submission_id = remote.submit_with_retry(client, submission)
        except RuntimeError as err:
            _fail(f"--address: could not submit to {address}: {err}")
    console.print(f"submitted {submission_id} to {address}", markup=False)
    console.print(f"follow it: camu-orch logs {submission_id} --follow --address {address}", markup=False)
    if wait:
        raise typer.Exit(_follow(address, submission_id))


def _follow(address: str, submission_id: str) -> int:
    """Stream a job's logs until it ends (a head that stops answering ends it with exit 2); the exit
    code says how the job ended."""
    import asyncio

    from orchestrator.execution import jobs_api as remote

    client = remote.client(address)

    def write(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    asyncio.run(remote.follow_logs(client, submission_id, write))
    status = str(client.get_job_status(submission_id).value)
    console.print(f"{submission_id}: {status}", markup=False)
    return 0 if status == "SUCCEEDED" else 1


def _cluster(address: str | None):
    from orchestrator.execution import jobs_api as remote

    resolved = remote.resolve_address(address)
    if not resolved:
        _fail("--address: no cluster; pass --address http://HEAD:8265 or set RAY_ADDRESS")
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
    """Stop a submitted job (its open MLflow runs are marked KILLED).

    Example: camu-orch stop camu-quickstart-1a2b3c4d"""
    _, client = _cluster(address)
    stopped = client.stop_job(submission_id)
    typer.echo(f"{submission_id}: {'stop requested' if stopped else 'already finished'}")


@app.command("list")
def list_jobs(address: AddressOption = None) -> None:
    """Jobs submitted to the cluster by camu-orch. Example: camu-orch list"""
    _, client = _cluster(address)
    for job in sorted(client.list_jobs(), key=lambda j: j.start_time or 0):
        if (job.metadata or {}).get(Tag.JOB) or (job.submission_id or "").startswith("camu-"):
            typer.echo(f"{job.submission_id:<40} {job.status.value:<10} {(job.metadata or {}).get(Tag.JOB, '')}")


@app.command()
def run(job: Annotated[Path, typer.Argument(help="job YAML")], overrides: SetOption = None,
        ui_url: UiUrlOption = None) -> None:
    """Run a job in this process against the current Ray cluster (the entrypoint of a Ray job).

    Example: camu-orch run jobs/quickstart.yaml
    """
    _use_ui_url(ui_url)
    _run(job, os.environ.get("RAY_ADDRESS"), overrides)


def _run(job: Path, address: str | None, overrides: list[str] | None = None) -> None:
    def start():
        from orchestrator.driver.pipeline import run_job
        from orchestrator.job.validate import check_job

        return run_job(check_job(job, check_data=True, local=address is None, overrides=overrides), address=address)

    _execute(start)


def _execute(job: Callable[[], object]) -> None:
    """Run a job-starting callable (SIGTERM acts like Ctrl-C: open runs are marked KILLED) and print
    the outcome; errors are answered by ``GuardedGroup``."""
    import time

    from orchestrator.lifecycle import interrupt_on_sigterm

    interrupt_on_sigterm()
    start = time.perf_counter()
    outcome = job()
    _print_outcome(outcome, start)


def _print_outcome(outcome, start: float) -> None:
    import time

    from orchestrator.record.links import links_for, serve_hint
    from orchestrator.record.summary import by_method, render_by_method

    console.print(render_by_method(by_method(outcome.summary)), markup=False)
    links = links_for(outcome.tracking_uri, outcome.experiment_id)
    console.print(f"\ndone in {time.perf_counter() - start:.1f}s", markup=False)
    console.print(f"MLflow experiment: {outcome.experiment_name} (id {outcome.experiment_id})", markup=False)
    console.print(f"parent run id:     {outcome.parent_run_id}", markup=False)
    if outcome.stored:
        console.print(f"stored:            {outcome.stored}", markup=False)
    for scenario, model_uri in outcome.registered.items():
        console.print(f"best model ({scenario}): {model_uri}", markup=False)
    if outcome.report_path:
        console.print(f"report:            {outcome.report_path}", markup=False)
    elif outcome.report_error:
        err_console.print(f"warning: the report could not be built ({outcome.report_error}); "
                          f"build it with: camu-orch report {outcome.parent_run_id}", style="yellow", markup=False)
    hint = serve_hint(outcome.tracking_uri)
    if hint:
        console.print(f"start the UI:      {hint}", markup=False)
    console.print(f"runs in the UI:    {links.job_runs(outcome.job)}", markup=False)
    console.print(f"best trials:       {links.best_trials(outcome.job)}", markup=False)
    if outcome.report_url:
        console.print(f"report in the UI:  {outcome.report_url}", markup=False)
    console.print(f"all trials:        camu-orch results {outcome.parent_run_id}", markup=False)


@app.command()
def resume(ident: Annotated[str, typer.Argument(help="job name (your newest job run of that name) or parent run id")],
           tracking_uri: TrackingOption = None, ui_url: UiUrlOption = None,
           accept_owner: Annotated[str | None, typer.Option(
               "--accept-owner", help="resume a job run of this other owner (its job file's plugins are imported "
                                      "here): only for a colleague's job you trust")] = None,
           allow_code_change: Annotated[bool, typer.Option(
               "--allow-code-change", help="resume with code other than the code that started the job (its finished "
                                           "and new trials then come from different code)")] = False,
           ) -> None:
    """Continue an interrupted job: finished stages and trials are not redone, unfinished trials continue
    from their last checkpoint, and the MLflow run tree is continued, not duplicated. Each sweep is rebuilt
    from the job file and the MLflow record; no saved sweep state is ever unpickled.

    Example: camu-orch resume quickstart
    """
    _use_ui_url(ui_url)

    def start():
        from orchestrator.driver.pipeline import resume_job

        return resume_job(ident, tracking_uri=tracking_uri, address=os.environ.get("RAY_ADDRESS"),
                          accept_owner=accept_owner, allow_code_change=allow_code_change)

    _execute(start)


@app.command()
def results(ident: Annotated[str, typer.Argument(help="job name (newest run) or parent run id")],
            format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
            output: Annotated[Path | None, typer.Option("--output", "-o", help="write to FILE")] = None,
            tracking_uri: TrackingOption = None,
            by: Annotated[By | None, typer.Option("--by", help="method: one row per (scenario, method), "
                                                                  "mean +- std over seeds")] = None,
            ui_url: UiUrlOption = None,
            check: Annotated[bool, typer.Option("--check", help="check the job's expect: targets: one row per "
                                                                "target (measured mean +- std, PASS/FAIL); exit 1 "
                                                                "when one is missed")] = False,
            ) -> None:
    """Print a job's summary: one row per (scenario, method, trial, seed), or with --by method one row
    per (scenario, method): its chosen configuration (and its preset) as mean +- std over the seeds.
    With --check: the job's expect: targets against what it measured; exit 0 when all are met, 1 when
    one is missed.

    Example: camu-orch results quickstart --by method
    """
    from orchestrator.record.links import links_for
    from orchestrator.record.summary import by_method, load_summary, render_by_method, write_table
    from orchestrator.record.tracking import open_store

    _use_ui_url(ui_url)
    if check and (format != Format.table or output is not None):
        _fail("--check prints the targets as a table; drop --format and --output")
    if output is not None and not output.parent.is_dir():
        _fail(f"--output: folder {output.parent} does not exist; create it or write elsewhere")
    if format == Format.parquet and output is None:
        _fail("--format parquet: give -o FILE (Parquet is binary)")
    tracker = open_store(tracking_uri)
    run, table = load_summary(tracker, ident)
    if check:
        raise typer.Exit(_check_targets(tracker, run, table))
    render = None
    if by == By.method:
        table, render = by_method(table), render_by_method
    text = write_table(table, format.value, str(output) if output else None, render)
    if text is not None:
        sys.stdout.write(text + "\n")
    if format == Format.table and output is None:  # machine-readable output stays clean
        links = links_for(tracker.uri, run.info.experiment_id)
        job = run.data.tags.get(Tag.JOB, ident)
        sys.stdout.write(f"\nbest trials in the MLflow UI: {links.best_trials(job)}\n")


def _check_targets(tracker: Any, run: Any, table: Any) -> int:
    """Print the job's expect: targets against its summary; the exit code (0 all met, 1 one missed)."""
    from orchestrator.record import expectations
    from orchestrator.record.summary import by_method

    targets = expectations.read_targets(tracker, run.info.run_id)
    job = run.data.tags.get(Tag.JOB, run.info.run_id)
    if not targets:
        sys.stdout.write(f"job {job} has no expect: targets; nothing to check\n")
        return 0
    checked = expectations.evaluate(targets, by_method(table))
    sys.stdout.write(expectations.render_check(checked) + "\n" + expectations.met_line(checked) + "\n")
    return expectations.exit_code(checked)


@app.command()
def report(ident: Annotated[str, typer.Argument(help="job name (newest run) or parent run id")],
           output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write "
                                                                            "(default: JOB-report.html)")] = None,
           tracking_uri: TrackingOption = None,
           ui_url: UiUrlOption = None,
           no_log: Annotated[bool, typer.Option("--no-log", help="only write the file; do not log it to the "
                                                                 "job's parent run")] = False,
           ) -> None:
    """Write a job's comparison report: one self-contained HTML page (tables per scenario, the forgetting /
    utility trade-off, cost vs quality, per-epoch and relearning curves, membership-score distributions,
    sweep importance), also logged to the job's parent run under report/ with PNG and SVG figures.

    Example: camu-orch report mnist_compare -o report.html
    """
    from orchestrator.record.report import build_report
    from orchestrator.record.summary import JOB_NAME
    from orchestrator.record.tracking import open_store

    _use_ui_url(ui_url)
    if output is not None and not output.parent.resolve().is_dir():
        _fail(f"--output: folder {output.parent} does not exist; create it or write elsewhere")
    if output is not None and output.suffix.lower() not in (".html", ".htm"):
        _fail(f"--output: {output.name} is not an .html file; name it e.g. report.html")
    if output is None and not JOB_NAME.fullmatch(ident) and len(ident) != 32:
        _fail(f"{ident[:80]!r} is neither a job name nor a run id; give one, or -o FILE")
    outcome = build_report(open_store(tracking_uri), ident, output or Path(f"{ident}-report.html"), log=not no_log)
    console.print(f"report: {outcome.path} ({len(outcome.figures)} figures, {outcome.seconds:.1f}s)", markup=False)
    if outcome.artifact_url:
        console.print(f"in the MLflow UI: {outcome.artifact_url}", markup=False)


def main() -> None:
    """Console-script entry point (``camu-orch``) and ``python -m orchestrator``. An interrupted job
    leaves at once once its runs are marked KILLED (see ``lifecycle.exit_now``)."""
    from orchestrator.lifecycle import exit_now, stopping

    try:
        app()
    except SystemExit as exc:
        if stopping():
            exit_now(exc.code if isinstance(exc.code, int) else 1)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
