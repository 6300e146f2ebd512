"""A plugin for the fault-tolerance tests: listed under a test job's ``plugins:``, it is imported in every
trial process and makes the sweep's second trial (Tune id ``..._00001``) fail at its start, every time."""

from __future__ import annotations

from typing import Any

from orchestrator.worker.unlearning import TRIAL_START_HOOKS

FAILING_TRIAL = "_00001"


def fail_second_trial(cfg: Any) -> None:
    """Raise at the start of the trial whose output folder names the second sweep trial."""
    if FAILING_TRIAL in cfg.out_dir:
        raise RuntimeError(f"injected fault in {cfg.out_dir} (tests.hooks.fail_second_trial)")


if fail_second_trial not in TRIAL_START_HOOKS:  # imported once per process, maybe twice in the test process
    TRIAL_START_HOOKS.append(fail_second_trial)
