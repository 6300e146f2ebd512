"""How a worker loop reports: epoch metrics and checkpoints through Ray Train (or Ray Tune, for a run inside
a Tune trial), when a report carries a checkpoint, the clean-up of checkpoint folders a killed process left,
where a trial's time goes (``time.*`` metrics), and how often the per-epoch objective is computed.

Rank 0 alone attaches checkpoints; every rank calls ``report`` the same number of times (it is a barrier).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch

from camu.weights import read_checkpoint_state
from orchestrator.progress import PROGRESS

# The position of a report in a trial that ran from its start: epoch e reports e + 1, the final evaluation one
# more. Early stopping counts in it rather than in Tune's training_iteration, which starts again at 1 when Tune
# retries a trial that then continues from its checkpoint (its rungs would come at the wrong epochs).
REPORT_STEP = "report_step"
QUICK_SHARE = 0.05  # the per-epoch objective may take at most this share of a trial's unlearning time


class QuickBudget:
    """Whether an epoch computes the per-epoch objective afresh: always the first time, then while the time
    spent on it stays within ``share`` of the unlearning time so far. Methods with epochs far shorter than
    an evaluation (CaMU's 2-s epochs on MNIST) would otherwise spend a fifth of a trial on it; in between,
    Tune sees the last value, so ASHA decides on an objective at most a few short epochs old."""

    def __init__(self, share: float) -> None:
        self.share, self.spent, self.cost = share, 0.0, None

    def due(self, unlearn_seconds: float) -> bool:
        return self.cost is None or self.spent + self.cost <= self.share * unlearn_seconds

    def charge(self, seconds: float) -> None:
        self.spent, self.cost = self.spent + seconds, seconds


class Channel:
    """Where a loop reports and finds its checkpoints: Ray Train (``ray.train.*``: a Train worker, or Train
    local mode outside Tune) or, for a trial run in its Tune trial's own process (``resources.num_workers`` 0
    or 1), Ray Tune itself (Train V2 refuses its own API there).

    An in-process trial keeps its checkpoint in its own folder (``resume_dir``, the trial's output folder)
    instead of handing it to Tune: Tune's folder of a sweep is fresh at every attempt of the job and never
    read back, while the trial folder is found again by the trial's id, so the same state serves Tune's
    retries of a failed trial and a resumed job (``RESUME_FILE``, replaced atomically, removed once the
    trial has finished)."""

    def __init__(self, via_tune: bool = False, resume_dir: str | Path | None = None) -> None:
        self.via_tune = via_tune
        self.api = ray.tune if via_tune else ray.train
        self.resume_file = Path(resume_dir) / RESUME_FILE if resume_dir is not None else None

    def rank(self) -> int:
        return 0 if self.via_tune else ray.train.get_context().get_world_rank()

    def resume_state(self) -> dict[str, Any] | None:
        """The state of the last checkpoint (after a worker restart, a retried trial or a resumed job): Ray's,
        else the one an in-process attempt of the same trial left in its folder."""
        ckpt = self.api.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as folder:
                return read_checkpoint_state(Path(folder) / "state.pt")
        if self.resume_file is not None and self.resume_file.is_file():
            return read_checkpoint_state(self.resume_file)
        return None

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        """All ranks report; rank 0 attaches the checkpoint (only rank 0's metrics reach Tune). The
        checkpoint is written to a temporary folder that is gone once ``report`` has copied it away, or, in
        process, to the trial's folder."""
        if "epoch" in metrics and "final" not in metrics:
            PROGRESS.epoch(int(metrics["epoch"]) + 1)  # shown live when this is the driver (Train local mode)
        if state is not None and self.via_tune and self.resume_file is not None:
            self.resume_file.parent.mkdir(parents=True, exist_ok=True)
            staged = self.resume_file.with_name(f".{RESUME_FILE}.{os.getpid()}.tmp")
            torch.save(state, staged)
            os.replace(staged, self.resume_file)  # a crash mid-write never leaves a torn checkpoint
            state = None
        if state is None or self.rank() != 0:
            self.api.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix=f"{CHECKPOINT_PREFIX}{os.getpid()}-") as folder:
            torch.save(state, Path(folder) / "state.pt")
            self.api.report(metrics, checkpoint=self.api.Checkpoint.from_directory(folder))

    def finished(self) -> None:
        """The trial is complete (its final.json written): its in-process checkpoint will not be read again."""
        if self.resume_file is not None:
            self.resume_file.unlink(missing_ok=True)


TRAIN = Channel()
CHECKPOINT_PREFIX = "camu-ckpt-"
RESUME_FILE = "resume-state.pt"  # an in-process trial's last checkpoint, in its own folder


class CheckpointClock:
    """Says when an epoch report should carry a checkpoint: once ``interval_s`` seconds have passed since
    the last one (or since training began); every epoch when the interval is 0. Writing and handing a
    checkpoint to Ray each epoch cost more than short epochs themselves."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if self.interval_s <= 0 or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False


def remove_stale_checkpoint_folders() -> int:
    """Remove this node's temporary checkpoint folders left by processes that were killed mid-report
    (Tune stopping a trial kills its workers; their ``finally`` never runs). Returns how many."""
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{CHECKPOINT_PREFIX}*-*"):
        pid = folder.name[len(CHECKPOINT_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Timings:
    """Seconds per part of a trial, logged as ``time.*`` metrics of its run (where the time goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {f"time.{k}": v for k, v in self.seconds.items()}
