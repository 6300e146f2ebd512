"""Deterministic names and keys: content hashes of specs, run names, storage paths.
Never timestamps or random values, so that a restarted stage finds its runs and checkpoints again."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of JSON-serialisable ``obj``."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def trial_run_name(scenario: str, method: str, seed: int, trial: str) -> str:
    """MLflow run name of a trial: ``<scenario>/<method>/seed<k>/<trial>`` (trial ``preset`` for a preset)."""
    return f"{scenario}/{method}/seed{seed}/{trial}"


def train_run_name(job: str, stage: str, key: str) -> str:
    """Ray Train run name: (storage_path, name) is how Train V2 finds a run's checkpoints again."""
    return f"{job}-{stage}-{key}"


def trial_key(scope_key: str, trial_id: str) -> str:
    """The ``camu.key`` tag of a trial's MLflow run: how a restarted or resumed trial finds its run again."""
    return f"{scope_key}:{trial_id}"
