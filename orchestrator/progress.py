"""Console output of a running job: stage lines and trial counts (rich, plain when not a terminal).
User-provided text (names, paths, URIs) is never interpreted as console markup."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """One progress line."""
    console.print(message, markup=False)


def stage(number: int, title: str) -> None:
    console.print(Text.assemble((f"[{number}/5]", "bold"), " ", title))
