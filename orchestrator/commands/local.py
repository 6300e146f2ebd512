"""The commands that take a job file and check or run it from this process: ``validate``, ``submit`` (which
runs the job here unless an address names a cluster, then hands it to ``commands.remote``), ``run`` (the
entrypoint of a Ray job, against the current cluster) and ``resume``, with the helpers that start a job here
(SIGTERM acts like Ctrl-C) and print its outcome: the summary table, where the record is, the links to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.commands.options import AddressOption, SetOption, TrackingOption, UiUrlOption, use_ui_url
from orchestrator.commands.remote import submit_remote
from orchestrator.progress import console, err_console

if TYPE_CHECKING:
    from orchestrator.driver.pipeline import JobOutcome


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

    use_ui_url(ui_url)
    address = resolve_address(address)
    if address is None:
        _run(job, None, overrides)
        return
    submit_remote(job, address, overrides or [], wait, check=not no_check,
                  allow_unauthenticated=allow_unauthenticated, forward_credentials=forward_credentials)


def run(job: Annotated[Path, typer.Argument(help="job YAML")], overrides: SetOption = None,
        ui_url: UiUrlOption = None) -> None:
    """Run a job in this process against the current Ray cluster (the entrypoint of a Ray job).

    Example: camu-orch run jobs/quickstart.yaml
    """
    use_ui_url(ui_url)
    _run(job, os.environ.get("RAY_ADDRESS"), overrides)


def _run(job: Path, address: str | None, overrides: list[str] | None = None) -> None:
    def start() -> JobOutcome:
        from orchestrator.driver.pipeline import run_job
        from orchestrator.job.validate import check_job

        return run_job(check_job(job, check_data=True, local=address is None, overrides=overrides), address=address)

    _execute(start)


def _execute(job: Callable[[], JobOutcome]) -> None:
    """Run a job-starting callable (SIGTERM acts like Ctrl-C: open runs are marked KILLED) and print
    the outcome; errors are answered by ``GuardedGroup``."""
    import time

    from orchestrator.lifecycle import interrupt_on_sigterm

    interrupt_on_sigterm()
    start = time.perf_counter()
    outcome = job()
    _print_outcome(outcome, start)


def _print_outcome(outcome: JobOutcome, start: float) -> None:
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
    use_ui_url(ui_url)

    def start() -> JobOutcome:
        from orchestrator.driver.pipeline import resume_job

        return resume_job(ident, tracking_uri=tracking_uri, address=os.environ.get("RAY_ADDRESS"),
                          accept_owner=accept_owner, allow_code_change=allow_code_change)

    _execute(start)
