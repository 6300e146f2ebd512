"""The job context every stage of the driver shares (``JobRun``), what a stage hands the next (``Stage``,
``References``), and what of the job reaches the workers and the model cache keys (``data_config``,
``training_key_fields``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camu.data import ImageData
from orchestrator.job.spec import JobSpec
from orchestrator.job.validate import CheckedJob
from orchestrator.record.tracking import Tracker
from orchestrator.worker.wire import DataConfig, Named, WorkerConfig


@dataclass
class JobRun:
    """State shared by the stages of one job run."""

    spec: JobSpec
    checked: CheckedJob
    tracker: Tracker
    uri: str
    experiment_id: str
    experiment_name: str
    parent: str
    storage: str
    cache_dir: str
    job_dir: Path
    runs: list[str]
    submission: str = ""  # this submission's id: in Train run names, so concurrent submissions never share them
    run_tags: dict[str, str] = field(default_factory=dict)  # on every run the job creates: job run, owner, code

    @property
    def data(self) -> ImageData:
        return self.checked.data  # type: ignore[return-value]


@dataclass
class Stage:
    """What later stages need from an earlier one: weights, their MLflow run, training time, and for a
    trained original its initialisation (methods that replay training need it)."""

    weights: str
    run_id: str
    train_seconds: float
    initial: str | None = None


@dataclass
class References:
    """One (scenario, seed): its split, oracle and the worker configuration every method run shares."""

    seed: int
    split_path: str
    oracle: Stage
    oracle_metrics: dict[str, float]
    worker: WorkerConfig


def data_config(spec: JobSpec, cache_dir: str | None = None) -> DataConfig:
    """Dataset, model, device and GPU precision of the job, as every worker receives them (the dataset's
    options as JSON would carry them: paths as strings), and the job's cache folder, where an image folder
    is decoded once for every trial (``prepared_dir``; not part of any model's cache key)."""
    return DataConfig(dataset=Named(name=spec.dataset.name,
                                    options=json.loads(json.dumps(spec.dataset.options, default=str))),
                      model=Named(name=spec.model.name, options=spec.model.options),
                      device="cpu" if spec.device == "cpu" else "auto", precision=spec.resources.precision,
                      prepared_dir=str(Path(cache_dir) / "datasets") if cache_dir else None)


def training_key_fields(spec: JobSpec, data: ImageData | None) -> dict[str, Any]:
    """What of the training regime enters a trained model's cache key besides dataset, model and indices:
    the recipe (its optimizer fields only when not the default), fp32 on GPU, and the pad-crop view of
    the fast CIFAR setting (augmented since it exists: models trained before it were not). Defaults add
    nothing, so models cached before these settings existed keep their keys."""
    keyed = spec.original.oracle_recipe.key_fields()
    if spec.resources.precision != "bf16" and spec.device != "cpu":  # on CPU both compute in fp32
        keyed["precision"] = spec.resources.precision
    view = data.train.view if data is not None else None
    if view is not None and view.augment and view.kind == "pad_crop":
        keyed["view"] = view.kind
    return keyed
