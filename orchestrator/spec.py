"""The job file as a typed spec. ``load_job`` parses YAML and validates it in two passes:
the pydantic schema (types, unknown keys) and the registry pass (names and per-entry options,
see ``orchestrator.validate``). Every error is collected and reported at once, before Ray starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from camu.training import TrainRecipe

ALLOWED_SPACE_KINDS = ("uniform", "loguniform", "randint", "choice", "grid")


class JobSpecError(ValueError):
    """A job file that cannot run; ``errors`` lists every problem as 'field: what and how to fix'."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path, self.errors = path, errors
        super().__init__(f"{path}: {len(errors)} problem(s)\n" + "\n".join(f"  - {e}" for e in errors))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NamedOptions(BaseModel):
    """``name`` plus that registry entry's options, flat (checked against the entry in pass two)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OriginalSpec(Strict):
    """Where the model to unlearn comes from: trained by the job (``recipe``) or loaded (``uri``)."""

    recipe: TrainRecipe | None = None
    uri: str | None = Field(None, description="local weights file (.safetensors / .pt state dict) or models:/ URI")

    @model_validator(mode="after")
    def _one_source(self) -> OriginalSpec:
        if self.uri is None and self.recipe is None:
            self.recipe = TrainRecipe()
        return self

    @property
    def oracle_recipe(self) -> TrainRecipe:
        """The oracle is retrained with the original's recipe (the official one for a loaded model)."""
        return self.recipe or TrainRecipe()


class ScenarioSpec(BaseModel):
    """A named forgetting scenario: ``kind`` plus that kind's options."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="letters, digits, _ . - (used in run names)")
    kind: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CamuSpec(Strict):
    """The base CaMU configuration trials start from: the official preset, then ``params`` overrides."""

    preset: Literal["official", "none"] = "official"
    params: dict[str, Any] = Field(default_factory=dict)


class ObjectiveSpec(Strict):
    """Sweep objective: the average gap to the oracle over (RA, FA, TA, MIA), lower is better, with
    floors so that a collapsed model never wins."""

    ra_max_drop: float = Field(10.0, ge=0, description="RA may be at most this many points below the oracle's")
    ta_retained_max_drop: float = Field(10.0, ge=0, description="likewise for test accuracy on retained classes")
    penalty: float = Field(100.0, gt=0, description="added to the gap of a trial below a floor")


class SweepSpec(Strict):
    search: Literal["random", "grid", "optuna"] = "random"
    num_samples: int = Field(4, ge=1, le=10000, description="trials per scenario and seed (per grid point for grid)")
    max_concurrent_trials: int = Field(1, ge=1)
    seed: int = 0
    space: dict[str, Any] = Field(default_factory=dict, description="CaMU parameter -> {uniform|loguniform|randint: [lo, hi]} | {choice|grid: [...]} | constant")
    scheduler: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: int = Field(2, ge=2)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    max_failures: int = Field(1, ge=0, description="Tune retries of a failed trial before it is recorded as failed")

    @field_validator("space")
    @classmethod
    def _space_shape(cls, space: dict[str, Any]) -> dict[str, Any]:
        for key, value in space.items():
            if isinstance(value, dict):
                if len(value) != 1 or next(iter(value)) not in ALLOWED_SPACE_KINDS:
                    raise ValueError(f"space.{key}: use exactly one of {ALLOWED_SPACE_KINDS}, e.g. {{loguniform: [1e-4, 1e-2]}}")
                kind, arg = next(iter(value.items()))
                if kind in ("uniform", "loguniform", "randint") and (not isinstance(arg, list) or len(arg) != 2 or arg[0] >= arg[1]):
                    raise ValueError(f"space.{key}.{kind}: give [low, high] with low < high")
                if kind in ("choice", "grid") and (not isinstance(arg, list) or not arg):
                    raise ValueError(f"space.{key}.{kind}: give a non-empty list of values")
                if kind == "loguniform" and arg[0] <= 0:
                    raise ValueError(f"space.{key}.loguniform: the low bound must be > 0")
        return space

    @model_validator(mode="after")
    def _grid_only_with_grid(self) -> SweepSpec:
        grids = [k for k, v in self.space.items() if isinstance(v, dict) and "grid" in v]
        if grids and self.search != "grid":
            raise ValueError(f"space.{grids[0]}: 'grid' needs search: grid (or use 'choice' with {self.search})")
        return self


class ResourcesSpec(Strict):
    num_workers: int = Field(1, ge=0, le=1024, description="Train workers per run (0 = in-process local mode)")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0, description="fractions only with num_workers: 1")
    worker_max_failures: int = Field(2, ge=-1, description="restarts of a crashed worker group from its last "
                                                             "checkpoint before the run fails (-1: unlimited)")
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="the global batch is fixed, so no scaling is needed; linear multiplies lrs by num_workers")

    @model_validator(mode="after")
    def _fractional_gpus(self) -> ResourcesSpec:
        if self.num_workers > 1 and 0 < self.gpus_per_worker < 1:
            raise ValueError("gpus_per_worker: a fraction of a GPU works only with num_workers: 1 "
                             "(two DDP ranks on one GPU make NCCL fail); use whole GPUs")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError("gpus_per_worker: above 1 it must be a whole number")
        return self

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


class TrackingSpec(Strict):
    experiment: str | None = Field(None, description="MLflow experiment (default: the job name)")
    uri: str | None = Field(None, description="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    registered_model: str | None = Field(None, description="registry name of the best model (default camu-<job name>)")


class StorageSpec(Strict):
    path: str | None = Field(None, description="Tune/Train storage (shared FS or s3://... on multi-node); default ./camu_runs")
    cache_dir: str | None = Field(None, description="content-addressed cache of original/oracle models; default ./.camu-cache")
    shared: bool = Field(False, description="true when path and cache_dir are on a filesystem every node mounts (NFS); "
                                            "required for local paths on a multi-node cluster")


class JobSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="letters, digits, _ . -")
    dataset: NamedOptions
    model: NamedOptions
    original: OriginalSpec = Field(default_factory=OriginalSpec)
    scenarios: list[ScenarioSpec] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    camu: CamuSpec = Field(default_factory=CamuSpec)
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _unique_scenarios(self) -> JobSpec:
        names = [s.name for s in self.scenarios]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"scenarios: names {dup} are used twice; give each scenario its own name")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: list each seed once")
        return self


def _format_pydantic(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        elif e["type"] == "missing":
            msg = "required; add it"
        out.append(f"{loc}: {msg}")
    return out


def parse_job(raw: Any, source: str = "<job>") -> JobSpec:
    """Schema pass only: the mapping -> ``JobSpec`` or ``JobSpecError`` with every problem."""
    if not isinstance(raw, dict):
        raise JobSpecError(source, ["(top level): the job file must be a YAML mapping (key: value lines)"])
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as err:
        raise JobSpecError(source, _format_pydantic(err)) from None


def apply_overrides(raw: Any, overrides: list[str], source: str = "<job>") -> Any:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars/lists) to the raw job mapping."""
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise JobSpecError(source, ["(top level): the job file must be a YAML mapping"])
    errors = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            errors.append(f"--set {item}: use KEY=VALUE, e.g. --set dataset.root=/data/mnist")
            continue
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                errors.append(f"--set {item}: {part} is not a mapping")
                break
            node = nxt
        else:
            node[parts[-1]] = yaml.safe_load(value)
    if errors:
        raise JobSpecError(source, errors)
    return raw


def read_yaml(path: str | Path) -> Any:
    """Read a job file as plain data (safe_load: job files are data, never code)."""
    path = Path(path)
    if not path.exists():
        raise JobSpecError(str(path), [f"(file): {path} does not exist"])
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise JobSpecError(str(path), [f"(syntax): {err}"]) from None
