"""camu-orch: the command line. Thin: parse, delegate to orchestrator modules, print, set exit codes.

Every command runs under one handler (``GuardedGroup``): expected errors (bad input, unreadable files,
unreachable services) print one redacted message and exit 2, a job that failed after it started exits
1, a bug keeps its traceback; ``--debug`` (or CAMU_ORCH_DEBUG=1) shows the traceback of every error.
User text is never rendered as console markup.

This module holds the Typer app, that handler, the global ``--debug`` option and ``main()``, and registers the
commands, whose bodies live in ``orchestrator.commands`` (one module per kind of command); it imports them,
never the reverse.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from orchestrator.commands.info import doctor, list_registry, version
from orchestrator.commands.local import resume, run, submit, validate
from orchestrator.commands.options import print_error
from orchestrator.commands.remote import list_jobs, logs, status, stop
from orchestrator.commands.results import report, results
from orchestrator.progress import err_console


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
    print_error(failure.message)
    raise typer.Exit(failure.code) from None


app = typer.Typer(cls=GuardedGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="CaMU machine unlearning on Ray (Train + Tune), tracked in MLflow.")


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of every error")] = False) -> None:
    """CaMU machine unlearning on Ray (Train + Tune), tracked in MLflow."""
    from orchestrator.progress import quiet_libraries
    from orchestrator.secrets import install_redacting_filter

    install_redacting_filter()  # before any library logs: URIs with user:password@ never reach a log line
    quiet_libraries()


# The commands, in the order ``camu-orch --help`` lists them; a command is named after its function unless
# a name is given.
app.command()(version)
app.command()(doctor)
app.command("ls")(list_registry)
app.command()(validate)
app.command()(submit)
app.command()(status)
app.command()(logs)
app.command()(stop)
app.command("list")(list_jobs)
app.command()(run)
app.command()(resume)
app.command()(results)
app.command()(report)


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
