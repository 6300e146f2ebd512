"""The commands that read a finished (or interrupted) job back from its MLflow record: ``results`` (the
summary table in several formats, one row per trial and seed or one per method, and with ``--check`` the
job's expect: targets against what it measured, the exit code saying whether all were met) and ``report``
(the HTML comparison report, also logged to the job's parent run). They open an existing store only; none
of them starts a job or talks to a cluster.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.commands.options import TrackingOption, UiUrlOption, fail, use_ui_url
from orchestrator.progress import console
from orchestrator.record.run_identity import Tag


class By(str, Enum):
    method = "method"


class Format(str, Enum):
    table = "table"
    json = "json"
    parquet = "parquet"


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
    per (scenario, method): its chosen configuration (and its preset) as mean +- std over the seeds, then
    each method's Pareto front on the job's objectives and the rule that chose.
    With --check: the job's expect: targets against what it measured; exit 0 when all are met, 1 when
    one is missed.

    Example: camu-orch results quickstart --by method
    """
    from orchestrator.record.links import links_for
    from orchestrator.record.summary import by_method, load_summary, render_by_method, write_table
    from orchestrator.record.tracking import open_store

    use_ui_url(ui_url)
    if check and (format != Format.table or output is not None):
        fail("--check prints the targets as a table; drop --format and --output")
    if output is not None and not output.parent.is_dir():
        fail(f"--output: folder {output.parent} does not exist; create it or write elsewhere")
    if format == Format.parquet and output is None:
        fail("--format parquet: give -o FILE (Parquet is binary)")
    tracker = open_store(tracking_uri)
    run, table = load_summary(tracker, ident)
    if check:
        raise typer.Exit(_check_targets(tracker, run, table))
    render = None
    summary_table = table
    if by == By.method:
        table, render = by_method(table), render_by_method
    text = write_table(table, format.value, str(output) if output else None, render)
    if text is not None:
        sys.stdout.write(text + "\n")
    if by == By.method and format == Format.table and output is None:
        from orchestrator.record.fronts import render_fronts

        objectives = [o for o in run.data.tags.get(Tag.OBJECTIVES, "").split(",") if o]
        sys.stdout.write("\n" + render_fronts(summary_table, objectives, run.data.tags.get(Tag.CHOOSE, "")) + "\n")
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

    use_ui_url(ui_url)
    if output is not None and not output.parent.resolve().is_dir():
        fail(f"--output: folder {output.parent} does not exist; create it or write elsewhere")
    if output is not None and output.suffix.lower() not in (".html", ".htm"):
        fail(f"--output: {output.name} is not an .html file; name it e.g. report.html")
    if output is None and not JOB_NAME.fullmatch(ident) and len(ident) != 32:
        fail(f"{ident[:80]!r} is neither a job name nor a run id; give one, or -o FILE")
    outcome = build_report(open_store(tracking_uri), ident, output or Path(f"{ident}-report.html"), log=not no_log)
    console.print(f"report: {outcome.path} ({len(outcome.figures)} figures, {outcome.seconds:.1f}s)", markup=False)
    if outcome.artifact_url:
        console.print(f"in the MLflow UI: {outcome.artifact_url}", markup=False)
