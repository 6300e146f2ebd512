"""Is a job's driver still alive? A record that never lies about it.

A job driver that is SIGKILLed, runs out of memory or loses its node cannot close its MLflow runs; they
would stay RUNNING forever and ``results`` would report the zombie as a live job. So the driver records
where it runs (host, pid, process start time) and refreshes a heartbeat tag while it works; ``results``
and ``resume`` call ``close_if_driver_gone`` on a RUNNING job run, which marks it and every run it
left RUNNING as FAILED once the driver is provably gone: its process is not there on this host, or its
heartbeat is older than ``STALE_AFTER_S`` (a driver on another machine).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

from typing_extensions import Self

from orchestrator.progress import say
from orchestrator.record.run_identity import Tag

ENDED = "ended"  # the heartbeat of a driver that left its job
HEARTBEAT_S = float(os.environ.get("CAMU_ORCH_HEARTBEAT_S", "20"))
STALE_AFTER_S = float(os.environ.get("CAMU_ORCH_STALE_AFTER_S", "180"))


def process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), '' when unknown or gone: a pid
    reused by another process after the driver died has another start time."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one read of a tiny proc file
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def driver_tags() -> dict[str, str]:
    """Where this process runs, as tags of its job run."""
    pid = os.getpid()
    return {Tag.DRIVER: f"{socket.gethostname()}:{pid}:{process_start(pid)}", Tag.HEARTBEAT: f"{time.time():.0f}"}


def _beating(tags: dict[str, str]) -> bool:
    """A heartbeat younger than the stale limit (a driver that someone else marked ended may still run);
    a driver that left its job writes ``ended`` there."""
    beat = tags.get(Tag.HEARTBEAT, "")
    return beat.replace(".", "", 1).isdigit() and time.time() - float(beat) <= STALE_AFTER_S


def driver_state(tags: dict[str, str], now: float | None = None) -> str:
    """'alive', 'gone' or 'unknown' (no driver recorded: a job run of an older camu-orch) for a RUNNING job run."""
    now = time.time() if now is None else now
    driver = tags.get(Tag.DRIVER, "")
    host, _, rest = driver.partition(":")
    pid, _, started = rest.partition(":")
    if tags.get(Tag.HEARTBEAT) == ENDED:  # the driver left the job (its process may live on: a notebook, tests)
        return "gone"
    if host == socket.gethostname() and pid.isdigit() and started and process_start(os.getpid()):
        # on the driver's own host, where /proc answers, the process table is the truth
        return "alive" if process_start(int(pid)) == started else "gone"
    beat = tags.get(Tag.HEARTBEAT, "")
    if not beat:
        return "unknown"
    return "gone" if now - float(beat) > STALE_AFTER_S else "alive"


def close_if_driver_gone(tracker: Any, job_run: Any) -> str:
    """For a RUNNING job run of the caller's whose driver is gone: mark it and every RUNNING run of the job
    FAILED (tagged with why) and return 'gone'; otherwise return the driver's state ('alive', 'unknown',
    or 'ended' for a job run that is not RUNNING). Another owner's job is only reported, never changed."""
    from orchestrator.record.identity import owner

    if job_run.info.status != "RUNNING":
        return "alive" if driver_state(job_run.data.tags) == "alive" and _beating(job_run.data.tags) else "ended"
    state = driver_state(job_run.data.tags)
    if state != "gone" or job_run.data.tags.get(Tag.OWNER) != owner():
        return state
    run_id = job_run.info.run_id
    open_runs = tracker.running_runs_of_job(job_run.info.experiment_id, run_id)
    reason = (f"driver {job_run.data.tags.get(Tag.DRIVER, '?')} gone (no heartbeat since "
              f"{job_run.data.tags.get(Tag.HEARTBEAT, '?')}); marked FAILED at {time.time():.0f}")
    for other in [*open_runs, run_id]:
        tracker.set_tags(other, {Tag.STATUS_REASON: reason})
        tracker.end(other, "FAILED")
    job_run.info._status = "FAILED"  # what the caller shows from now on
    say(f"job run {run_id}: its driver is gone; it and {len(open_runs)} open run(s) were marked FAILED")
    return "gone"


class DriverHeartbeat:
    """Refreshes the job run's heartbeat tag every ``HEARTBEAT_S`` seconds from a daemon thread while the
    job runs (a failed refresh is retried at the next beat: the job itself never fails because of it)."""

    def __init__(self, tracker: Any, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="camu-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a failed beat: the next one tries again
                self.tracker.set_tags(self.run_id, {Tag.HEARTBEAT: f"{time.time():.0f}"})
                if not self._stop.is_set() and self.tracker.status(self.run_id) != "RUNNING":
                    self.tracker.client.update_run(self.run_id, status="RUNNING")  # wrongly declared gone

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # no beat may reopen the run after the job closed it
        with contextlib.suppress(Exception):  # the job's own outcome matters more than this mark
            self.tracker.set_tags(self.run_id, {Tag.HEARTBEAT: ENDED})
