"""Console output of a running job: stage lines, and a live status line on a terminal (the stage,
epochs of the current training, the sweep's trials done / running / stopped / failed with the best
objective so far, elapsed time and a remaining estimate). When output is not a terminal (CI, Ray
job logs, a pipe) the live line is off and the same events print as plain lines.

The console shows camu-orch's display, not the libraries' internals: ``quiet_libraries`` turns off
Tune's experiment box and TensorBoard hint, Train local mode's per-report lines, Optuna's and MLflow's
INFO chatter (Ray's own logs stay in its session folder: ``camu-orch logs`` or the path printed at
start). User-provided text (names, paths, URIs) is never interpreted as console markup.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
NOISY_LOGGERS = ("ray.train", "ray.tune", "ray.air", "optuna", "mlflow", "alembic")


def quiet_libraries() -> None:
    """Keep Ray Train / Tune, Optuna and MLflow INFO output off the console (warnings still show)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy engine at verbose=0 prints no experiment box
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow resets its logger's level on import
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # a resumed sweep replays finished trials' last results to the searcher, which warns once per trial with
    # the whole result dict: nothing a user can act on
    logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class JobProgress:
    """What the live line shows; updated by the pipeline (stages, trainings) and the sweep callback."""

    stage_number: int = 0
    stage_text: str = ""
    task: str = ""
    epochs: tuple[int, int] | None = None   # (done, total) of the current training (or other counted task)
    unit: str = "epoch"                      # what ``epochs`` counts
    trials: dict[str, int] | None = None    # done / running / stopped / failed / total of the current sweep
    best: float = math.inf
    started: float = field(default_factory=time.monotonic)
    task_started: float = field(default_factory=time.monotonic)
    live: Live | None = None

    # ------------------------------------------------------------------ lifetime
    def begin(self) -> None:
        """Start the live line (on a terminal only)."""
        self.started = time.monotonic()
        if console.is_terminal and self.live is None and os.environ.get("CAMU_ORCH_PLAIN") != "1":
            self.live = Live(self, console=console, refresh_per_second=2, transient=True, redirect_stderr=False)
            self.live.start()

    def end(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.task, self.epochs, self.trials = "", None, None

    # ------------------------------------------------------------------ events
    def stage(self, number: int, title: str) -> None:
        self.stage_number, self.stage_text = number, title
        self.task, self.epochs, self.trials, self.best = "", None, None, math.inf
        console.print(Text.assemble((f"[{number}/5]", "bold"), " ", title))

    def start_task(self, label: str, epochs: int | None = None, unit: str = "epoch") -> None:
        """A training or a single trial starts (``epochs``: how many it will run, when known; ``unit``: what
        they are, e.g. images for a preparation)."""
        self.task, self.task_started, self.unit = label, time.monotonic(), unit
        self.epochs = (0, epochs) if epochs else None

    def epoch(self, done: int, total: int | None = None) -> None:
        total = total or (self.epochs[1] if self.epochs else None)
        if total:
            self.epochs = (min(done, total), total)

    def sweep(self, done: int, running: int, stopped: int, failed: int, total: int, best: float,
              quiet: bool = False) -> None:
        """The sweep's counts changed; off a terminal, one plain line says so (not for ``quiet`` updates)."""
        self.trials = {"done": done, "running": running, "stopped": stopped, "failed": failed, "total": total}
        self.best = min(self.best, best)
        if self.live is None and not quiet:
            say(f"    {self.task or 'sweep'} · trials: {done} done, {running} running, {stopped} stopped, {failed} "
                f"failed of {total}; best objective so far {self._best()}")

    # ------------------------------------------------------------------ the line
    def _best(self) -> str:
        return f"{self.best:.2f}" if math.isfinite(self.best) else "-"

    def remaining(self) -> float | None:
        """Seconds left in the current sweep or training, from its pace so far."""
        elapsed = time.monotonic() - self.task_started
        if self.trials:
            ended = self.trials["done"] + self.trials["stopped"] + self.trials["failed"]
            if ended:
                return elapsed / ended * max(0, self.trials["total"] - ended)
        if self.epochs and self.epochs[0]:
            return elapsed / self.epochs[0] * (self.epochs[1] - self.epochs[0])
        return None

    def line(self) -> str:
        """Most specific first (a narrow terminal cuts the end): the step, its progress, the clock."""
        parts = [f"[{self.stage_number}/5] {self.task or self.stage_text}" if self.stage_number else "starting"]
        if self.epochs:
            parts.append(f"{self.unit} {self.epochs[0]}/{self.epochs[1]}")
        if self.trials:
            t = self.trials
            parts.append(f"trials {t['done']}/{t['total']} done, {t['running']} running, {t['stopped']} stopped, "
                         f"{t['failed']} failed, best {self._best()}")
        left = self.remaining()
        parts.append(f"{_clock(time.monotonic() - self.started)} elapsed" + (f", ~{_clock(left)} left in this step"
                                                                             if left is not None else ""))
        return " · ".join(parts)

    def __rich__(self) -> Text:
        return Text(self.line(), style="cyan", no_wrap=True, overflow="ellipsis")


PROGRESS = JobProgress()


def say(message: str) -> None:
    """One progress line (printed above the live line on a terminal)."""
    console.print(message, markup=False)


def stage(number: int, title: str) -> None:
    PROGRESS.stage(number, title)
