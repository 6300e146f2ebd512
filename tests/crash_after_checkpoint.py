"""A plugin for the in-process trial test: listed under a test job's ``plugins:``, it makes every sweep trial
that runs in its Tune trial's own process fail right after its first checkpoint, once (a marker file in the
trial's folder remembers it). Tune then retries the trial, which must continue from that checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.worker import reporting
from orchestrator.worker.unlearning import TRIAL_START_HOOKS

MARKER = "crashed-once"
_report = reporting.Channel.report


def crash_after_first_checkpoint(cfg: Any) -> None:
    """In an in-process sweep trial (not a preset) that has not crashed before: fail once a checkpoint is kept."""
    if cfg.report_to != "tune" or cfg.out_dir.endswith("preset") or (Path(cfg.out_dir) / MARKER).exists():
        reporting.Channel.report = _report
        return

    def report(self: reporting.Channel, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        _report(self, metrics, state)
        if state is not None:
            (Path(cfg.out_dir) / MARKER).write_text(str(metrics.get("epoch")))
            reporting.Channel.report = _report
            raise RuntimeError(f"injected crash after the checkpoint of epoch {metrics.get('epoch')}")

    reporting.Channel.report = report


if crash_after_first_checkpoint not in TRIAL_START_HOOKS:
    TRIAL_START_HOOKS.append(crash_after_first_checkpoint)
