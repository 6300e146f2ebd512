"""Errors in what the user gave camu-orch. ``InputProblem`` is their base: the CLI reports any of them as one
clear message and exits 2. ``InputError`` is a problem that is not a field of the job file (a command-line
option, an environment variable, the cluster or store it names); ``JobSpecError`` (``orchestrator.job.spec``)
is the job file's own kind; ``UriError`` a URI that cannot be used. Each lists every problem as
'field: what and how to fix'."""

from __future__ import annotations


class InputProblem(ValueError):
    """Anything wrong with the user's input (never a bug); the message says what and how to fix it."""


class InputError(InputProblem):
    """Input that cannot be used; ``source`` names where it came from, ``errors`` lists every problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source, self.errors = source, errors
        super().__init__(f"{source}: {len(errors)} problem(s)\n" + "\n".join(f"  - {e}" for e in errors))

    @property
    def path(self) -> str:
        """The source (a job file's path, for ``JobSpecError``)."""
        return self.source
