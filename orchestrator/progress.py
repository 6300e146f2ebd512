"""Console output of a running job: stage lines and trial counts (rich, plain when not a terminal)."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """One progress line."""
    console.print(message)


def stage(number: int, title: str) -> None:
    console.print(f"[bold][{number}/5][/bold] {title}")
