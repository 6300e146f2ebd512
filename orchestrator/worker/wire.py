"""The typed configuration that crosses the Ray boundary: built and validated by the driver and sent as the
model itself (Ray pickles it; a Train loop gets it as ``train_loop_config["config"]``), so a missing or
misspelt key is an error at the sender, never a ``KeyError`` deep in a worker, and no worker re-parses a
dict."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from camu.methods import MethodParams
from camu.training import TrainRecipe
from orchestrator.job.spec import EvaluationSpec, ObjectiveSpec, ResourcesSpec


class Wire(BaseModel):
    """Unknown keys are errors; NaN is allowed (an oracle metric may be undefined, e.g. TA on a
    forgotten class in random removal)."""

    model_config = ConfigDict(extra="forbid")


class Named(Wire):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(Wire):
    """The job's data, model and compute settings: what every worker loads and builds the same way."""

    dataset: Named
    model: Named
    device: str = "auto"  # "cpu", or "auto": the worker's GPU when it has one
    precision: str = "bf16"  # on GPU: bf16 autocast or fp32 (resources.precision)
    prepared_dir: str | None = None  # where image folders are decoded once for every trial (the job's cache)


class TrainingConfig(DataConfig):
    """One supervised training run with the job's recipe: the original (all samples), an oracle (D_r of a
    split) or a privacy shadow (exactly the samples of an index file)."""

    recipe: TrainRecipe
    split_path: str | None = None  # None: every training sample (the original)
    indices_path: str | None = None  # a shadow's samples (npy of int64), instead of the split's D_r
    tracking_uri: str
    run_id: str
    out_dir: str
    sync_batchnorm: bool = True
    checkpoint_interval_s: float = 0.0


class WorkerConfig(DataConfig):
    """What every run of a (scenario, seed) needs besides data and model: split, reference models and metrics."""

    split_path: str
    original_weights: str
    initial_weights: str | None = None  # the original's initialisation (for methods that replay training)
    seed: int
    scenario_kind: str
    oracle_metrics: dict[str, float]
    oracle_seconds: float
    objective: ObjectiveSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    original_fa: float = float("nan")  # the original's FA on D_f (relearning's target)
    privacy_path: str | None = None  # the per-example fit of this split (npz: mu/sd in/out, oracle phi)
    lr_scaling: str = "none"
    sync_batchnorm: bool = True
    checkpoint_interval_s: float = 30.0  # seconds between the checkpoints a run attaches to its epoch reports
    tracking_uri: str
    plugins: list[str] = Field(default_factory=list)  # the job's plugin modules, imported before the registries


def _typed_params(value: Any) -> MethodParams:
    """A method's parameters cross as its own ``Params`` model (built once by ``presets.base_params`` or
    ``presets.with_values``), never as a dict that a worker would have to validate again."""
    if not isinstance(value, MethodParams):
        raise ValueError(  # noqa: TRY004 - pydantic turns a ValueError into its ValidationError
            f"expected a method's typed Params (orchestrator.job.presets.base_params), got {type(value).__name__}")
    return value


class TrialConfig(Wire):
    """One unlearning run: a method with concrete parameters, its MLflow run and output folder."""

    worker: WorkerConfig
    method: str
    params: SerializeAsAny[MethodParams]  # the method's own typed Params, validated once by the driver
    run_id: str
    out_dir: str
    report_to: str = "train"  # "tune": run in the Tune trial's process and report to Tune (num_workers 0 or 1)
    launched_at: float = 0.0  # wall-clock time the driver launched the run (the worker measures its start delay)
    started_at: float = 0.0  # wall-clock time the trial began (``run_trial``'s first line): time.to_unlearn
    log_weights: bool = True  # log the unlearned weights to MLflow (else only kept in out_dir; see retention)

    _params_typed = field_validator("params", mode="before")(_typed_params)


class RecordedTrial(Wire):
    """A sweep trial that an earlier attempt of this job recorded (a resumed job replays it by config)."""

    trial_id: str
    status: str  # finished | stopped | unfinished
    sampled: dict[str, Any]  # the values the search drew, as recorded (a Tune config; typed by presets.with_values)
    objective: float = float("nan")


class SweepContext(Wire):
    """Everything a Tune trial driver of one (scenario, method, seed) needs besides its sampled config."""

    job: str
    scenario: str
    method: str
    seed: int
    tracking_uri: str
    experiment_id: str
    scenario_run_id: str
    scope_key: str
    storage_path: str
    out_root: str
    resources: ResourcesSpec
    base_params: SerializeAsAny[MethodParams]  # the preset's parameters; a sampled config replaces some
    worker: WorkerConfig
    run_tags: dict[str, str] = Field(default_factory=dict)  # on every trial run: the job run, owner, code
    keep_all_weights: bool = False  # storage.keep_weights: all (log every sweep trial's weights to MLflow)
    recorded: dict[str, RecordedTrial] = Field(default_factory=dict)  # config hash -> a trial of an earlier attempt

    _params_typed = field_validator("base_params", mode="before")(_typed_params)
