"""How a job process ends when it is told to stop.

`camu-orch stop` (Ray stops a job with SIGTERM), schedulers and Ctrl-C all interrupt the main thread
with ``KeyboardInterrupt``, so that ``tracking.closing_runs`` marks the open MLflow runs KILLED (not
FAILED) and the process then leaves without waiting on Ray's background threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

_state: dict[str, object] = {"stopping": False, "signal": signal.SIGINT, "installed": False}


def stopping() -> bool:
    """True once the process was told to stop (a later error is part of stopping, not a failure)."""
    return bool(_state["stopping"])


def exit_code() -> int:
    """The conventional status of a process ended by the signal it received: 128 + signal number."""
    return 128 + int(_state["signal"])


def interrupt_on_sigterm() -> None:
    """SIGTERM and SIGINT raise ``KeyboardInterrupt`` in the main thread (once; a second signal is
    ignored while the runs are being closed). Call ``reinstall_after_ray_init`` once Ray is up: its core
    worker replaces the SIGTERM handler with one that dumps a stack and aborts the process."""
    _state["installed"] = True

    def handler(signum: int, frame: object) -> None:
        if _state["stopping"]:
            return
        _state["stopping"] = True
        _state["signal"] = signum
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def reinstall_after_ray_init() -> None:
    """Put the handlers back after ``ray.init`` (a no-op unless ``interrupt_on_sigterm`` was called)."""
    if _state["installed"]:
        interrupt_on_sigterm()


def exit_now(code: int) -> None:
    """Leave at once after an interrupted job: output flushed, Ray disconnected, no interpreter
    teardown racing Ray's native threads (which can abort the process with a core dump)."""
    with contextlib.suppress(Exception):  # leaving anyway
        import ray

        if ray.is_initialized():
            ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
