"""Trial hooks for the fault-tolerance tests (named by CAMU_ORCH_TRIAL_HOOK, run in Ray workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fail_trials(cfg: Any, argument: str) -> None:
    """``argument`` = "trial=<substring>,times=<n>": a trial whose output folder contains the substring
    raises at its start, ``n`` times in all (counted in that folder, so retries see the count)."""
    parts = dict(item.split("=", 1) for item in argument.split(","))
    if parts["trial"] not in cfg.out_dir:
        return
    counter = Path(cfg.out_dir) / "injected_faults"
    counter.parent.mkdir(parents=True, exist_ok=True)
    done = int(counter.read_text()) if counter.exists() else 0
    if done < int(parts.get("times", 1)):
        counter.write_text(str(done + 1))
        raise RuntimeError(f"injected fault {done + 1}/{parts.get('times', 1)} (tests.hooks.fail_trials)")
