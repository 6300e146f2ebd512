"""Run identity, in one place: every ``camu.*`` tag a job puts on its MLflow runs (``Tag``), the run names,
the keys by which a restarted stage or trial finds its run again, and where a trial's files live.
Deterministic: never timestamps or random values, so that a restarted stage finds its runs and checkpoints
again. Scripts and saved MLflow views read these names; changing one changes the record's contract."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
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


def trial_key(scope_key: str, trial_id: str, seed: int) -> str:
    """The ``camu.key`` tag of a trial's MLflow run: how a restarted or resumed trial finds its run again."""
    return f"{scope_key}:{trial_id}@{seed}"


class Tag:
    """The ``camu.*`` tags of a job's MLflow runs (and the keys of its Ray job metadata)."""

    CACHE_KEY = "camu.cache_key"
    CACHED = "camu.cached"
    CODE_HASH = "camu.code_hash"
    CODE_VERSION = "camu.code_version"
    CHOSEN_BY = "camu.chosen_by"  # on the chosen configuration's runs: the rule that chose it
    CHOOSE = "camu.choose"  # on the job run: the rule of sweep.choose, as the report words it
    CONFIG = "camu.config"
    DIVERGED = "camu.diverged"
    DRIVER = "camu.driver"
    OBJECTIVES = "camu.objectives"  # on the job run: sweep.objectives, comma-separated (empty: the scalar alone)
    IS_PARETO = "camu.is_pareto"  # "true" on the runs of a configuration on its method's Pareto front
    HEARTBEAT = "camu.heartbeat"
    IS_BEST = "camu.is_best"
    JOB = "camu.job"  # the job's name (also the Ray job metadata key of a submission)
    JOB_RUN = "camu.job_run"
    KEY = "camu.key"  # how a restarted stage or trial finds its run again (trial_key, model keys)
    METHOD = "camu.method"
    NAMESPACE = "camu.namespace"
    ORIGINAL_RUN_ID = "camu.original_run_id"
    ORIGINAL_SHA256 = "camu.original_sha256"
    OWNER = "camu.owner"
    PREFLIGHT = "camu.preflight"
    RESTORED_FROM_EPOCH = "camu.restored_from_epoch"
    ROLE = "camu.role"  # what a run is: job, scenario, original, oracle, shadow, trial
    SCENARIO = "camu.scenario"
    SEED = "camu.seed"
    SOURCE_URI = "camu.source_uri"
    SPEC_HASH = "camu.spec_hash"
    STATUS = "camu.status"
    STATUS_REASON = "camu.status_reason"
    STOPPED_EARLY = "camu.stopped_early"
    SUBMISSION = "camu.submission"
    SWEEP = "camu.sweep"
    TRIAL_ID = "camu.trial_id"
    WEIGHTS_SHA256 = "camu.weights_sha256"

    @staticmethod
    def oracle_run_id(seed: int) -> str:
        """On a scenario run: the run id of its oracle for ``seed``."""
        return f"camu.oracle_run_id.seed{seed}"

    @staticmethod
    def retrained(param: str) -> str:
        """On a cached model's run trained again: the new value of a param that changed."""
        return f"camu.retrained.{param}"

    @staticmethod
    def sweep_done(scope_key: str, seed: int) -> str:
        """On a scenario run: the sweep of (scope, seed) completed."""
        return f"camu.sweep_done.{scope_key}.s{seed}"

    @staticmethod
    def best_trial(method: str) -> str:
        """On a scenario run: the chosen trial of ``method``."""
        return f"camu.best.{method}.trial_id"

    @staticmethod
    def registered_model(method: str) -> str:
        """On a scenario run: the registered model (name/version) of ``method``'s chosen trial."""
        return f"camu.registered_model.{method}"

    @staticmethod
    def registered(key: str) -> str:
        """On the job run: a registered model's URI."""
        return f"camu.registered.{key}"


def sweep_id(scope_key: str, seed: int) -> str:
    """The ``camu.sweep`` tag value of the trials of one sweep."""
    return f"{scope_key}@{seed}"


def trials_root(job_dir: str | Path, scenario: str) -> Path:
    """The folder of a scenario's trials inside the job's folder."""
    return Path(job_dir) / "trials" / scenario


def trial_folder(trials_root: str | Path, method: str, seed: int, trial_id: str) -> Path:
    """Where a trial writes its weights and ``final.json``:
    ``<trials root of the scenario>/<method>/seed<k>/<trial>``."""
    return Path(trials_root) / method / f"seed{seed}" / trial_id
