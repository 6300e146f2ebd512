"""The commands that talk to a Ray cluster through its Jobs API (the dashboard at ``--address`` or
RAY_ADDRESS): submitting a job file there (``submit_remote``, what ``submit --address`` does: the checks, the
preflight job, the upload), following a submission's logs until it ends, and ``status``, ``logs``, ``stop`` and
``list`` for the jobs submitted. Nothing here runs a job in this process; that is ``commands.local``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.commands.options import AddressOption, fail
from orchestrator.progress import console, err_console
from orchestrator.record.run_identity import Tag


def submit_remote(job: Path, address: str, overrides: list[str], wait: bool, check: bool = True,
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
            fail(f"--address: could not submit to {address}: {err}")
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


def _cluster(address: str | None) -> tuple[str, Any]:
    from orchestrator.execution import jobs_api as remote

    resolved = remote.resolve_address(address)
    if not resolved:
        fail("--address: no cluster; pass --address http://HEAD:8265 or set RAY_ADDRESS")
    return resolved, remote.client(resolved)


def status(submission_id: str, address: AddressOption = None) -> None:
    """Status of a submitted job. Example: camu-orch status camu-quickstart-1a2b3c4d"""
    _, client = _cluster(address)
    info = client.get_job_info(submission_id)
    typer.echo(f"{submission_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))


def logs(submission_id: str, address: AddressOption = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the job ends")] = False) -> None:
    """Logs of a submitted job. Example: camu-orch logs camu-quickstart-1a2b3c4d --follow"""
    resolved, client = _cluster(address)
    if follow:
        raise typer.Exit(_follow(resolved, submission_id))
    sys.stdout.write(client.get_job_logs(submission_id))


def stop(submission_id: str, address: AddressOption = None) -> None:
    """Stop a submitted job (its open MLflow runs are marked KILLED).

    Example: camu-orch stop camu-quickstart-1a2b3c4d"""
    _, client = _cluster(address)
    stopped = client.stop_job(submission_id)
    typer.echo(f"{submission_id}: {'stop requested' if stopped else 'already finished'}")


def list_jobs(address: AddressOption = None) -> None:
    """Jobs submitted to the cluster by camu-orch. Example: camu-orch list"""
    _, client = _cluster(address)
    for job in sorted(client.list_jobs(), key=lambda j: j.start_time or 0):
        if (job.metadata or {}).get(Tag.JOB) or (job.submission_id or "").startswith("camu-"):
            typer.echo(f"{job.submission_id:<40} {job.status.value:<10} {(job.metadata or {}).get(Tag.JOB, '')}")
