"""The job file as a typed spec. ``orchestrator.job.validate.check_job`` reads the YAML
(``orchestrator.job.jobfile``) and validates it in two passes: the pydantic schema below (types, ranges,
unknown keys, URI forms) and the registry pass (names and per-entry options). Every error is collected
and reported at once, each as 'field: what and how to fix', before Ray starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from camu.relearn import RelearnParams
from camu.schema import Seed, StrictModel
from camu.training import TrainRecipe
from orchestrator.inputs import InputError
from orchestrator.job.messages import format_validation_error
from orchestrator.job.objectives import OBJECTIVE_NAMES, ChooseSpec, ObjectiveName
from orchestrator.job.space import SearchSpace
from orchestrator.job.uris import UriError, model_source, tracking_uri_problem

MAX_TRIALS = 10_000          # trials per (scenario, seed) a sweep may ask for, grids included
RAY_RESOURCE_STEP = 1e-4     # Ray schedules fractional resources in steps of 0.0001
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
"""A name used in run names and folder names: starts with a letter or digit, then letters, digits, _ . -"""
ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
                                             max_length=200)]
"""A Python module path, e.g. ``my_lab.unlearning.methods``."""
RegistryName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]


class JobSpecError(InputError):
    """A job file that cannot run; ``errors`` lists every problem as 'field: what and how to fix'."""


Strict = StrictModel


class NamedOptions(BaseModel):
    """``name`` plus that registry entry's options, flat (checked against the entry in pass two)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=100)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OriginalSpec(Strict):
    """Where the model to unlearn comes from: trained by the job (``recipe``) or loaded (``uri``)."""

    recipe: TrainRecipe | None = None
    uri: str | None = Field(None, description="local weights file (.safetensors / .pt state dict), "
                                              "runs:/RUN_ID/PATH or models:/NAME/VERSION")

    @field_validator("uri")
    @classmethod
    def _known_source(cls, uri: str | None) -> str | None:
        if uri is not None:
            try:
                model_source(uri)
            except UriError as err:
                raise ValueError(str(err)) from None
        return uri

    @model_validator(mode="after")
    def _one_source(self) -> OriginalSpec:
        if self.uri is None and self.recipe is None:
            self.recipe = TrainRecipe()
        return self

    @property
    def oracle_recipe(self) -> TrainRecipe:
        """The oracle is retrained with the original's recipe (the official one for a loaded model)."""
        return self.recipe or TrainRecipe()

    @property
    def trained_recipe(self) -> dict[str, Any] | None:
        """How the job trains the original, as the presets read it (``camu.methods.Setting.recipe``);
        None for a loaded original."""
        return None if self.uri else self.oracle_recipe.model_dump()


class ScenarioSpec(BaseModel):
    """A named forgetting scenario: ``kind`` plus that kind's options."""

    model_config = ConfigDict(extra="allow")
    name: Name = Field(description="letters, digits, _ . - (used in run names)")
    kind: str = Field(min_length=1, max_length=100)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class MethodSweepSpec(Strict):
    """A method's own search space (default: the method's documented space; ``{}``: no search, the
    preset alone)."""

    space: dict[str, Any] | None = Field(None, description="parameter -> {uniform|loguniform|randint: [lo, hi]} | "
                                                           "{choice|grid: [...]} | constant")

    @field_validator("space")
    @classmethod
    def _space_shape(cls, space: dict[str, Any] | None) -> dict[str, Any] | None:
        problems = SearchSpace.shape_problems(space)
        if problems:
            raise ValueError("\n".join(f"space.{p}" for p in problems))
        return space

    def search_space(self) -> SearchSpace | None:
        """The job's space for this method as a ``SearchSpace`` (None: the method's documented space)."""
        return None if self.space is None else SearchSpace.parse(self.space)


class MethodSpec(Strict):
    """One unlearning method of the job: a registry name, the preset trials start from (a named published
    configuration; default: the method's first; ``none``: its parameter defaults), overrides of its
    parameters, and its search space."""

    name: str = Field(min_length=1, max_length=64, description="a registered method (camu-orch ls methods)")
    preset: str | None = Field(None, min_length=1, max_length=64, description="named published configuration, or none")
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the method's parameters")
    sweep: MethodSweepSpec = Field(default_factory=MethodSweepSpec)
    scenarios: list[str] | None = Field(None, min_length=1, description="the scenarios (names) it runs on; default all")
    seeds: list[Seed] | None = Field(None, min_length=1, max_length=100,
                                     description="the job's seeds it runs on (default all): a heavy baseline may "
                                                 "run on fewer when the job must fit a time budget; its sweep runs on "
                                                 "the first of them")

    def runs_on(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios


class ObjectiveSpec(Strict):
    """Sweep objective: the average gap to the oracle over (RA, FA, TA, MIA), lower is better, with
    floors so that a collapsed model never wins."""

    ra_max_drop: float = Field(10.0, ge=0, le=100, description="RA may be at most this many points below the oracle's")
    ta_retained_max_drop: float = Field(10.0, ge=0, le=100,
                                        description="likewise for test accuracy on retained classes")
    penalty: float = Field(100.0, gt=0, le=1e6, description="added to the gap of a trial below a floor")


class PrivacySpec(Strict):
    """Per-example membership evaluation (LiRA-style, camu.privacy): K shadow models per (scenario, seed),
    each trained with the job's recipe on D_r plus a random half of D_f, cached like oracles."""

    shadows: int = Field(8, ge=2, le=256, description="shadow models per (scenario, seed); 8-16 is usual")


class EvaluationSpec(Strict):
    """How runs are judged besides the summary metrics: the selection / report split, relearning."""

    selection_fraction: float = Field(0.5, description="share of D_f, D_r and the test set used to choose "
                                                       "configurations, strictly between 0 and 1; every reported "
                                                       "metric is on the rest")
    relearn: RelearnParams | None = Field(None, description="continue training each unlearned model on D_r and "
                                                            "report the epochs until FA comes back")
    privacy: PrivacySpec | None = Field(None, description="per-example membership (LiRA-style) with shadow models")

    @field_validator("selection_fraction")
    @classmethod
    def _selection_and_report_parts(cls, value: float) -> float:
        """Both parts must hold samples: 0 would choose configurations on the very samples that are then
        reported (every reported number optimistic), 1 would leave nothing to report."""
        if 0 < value < 1:
            return value
        if value == 0:
            why = "0 would choose configurations on the very samples that are then reported (optimistic numbers)"
        elif value == 1:
            why = "1 would leave no samples to report the metrics on"
        else:
            why = f"{value:g} is not a share"
        raise ValueError(f"{why}; give a share strictly between 0 and 1, e.g. 0.5 (the default)")


class SweepSpec(Strict):
    """How every method is searched: the same algorithm and budget for all (a fair comparison by default)."""

    search: Literal["random", "grid", "optuna"] = "optuna"
    num_samples: int = Field(4, ge=0, le=MAX_TRIALS, description="sweep trials per method, scenario and seed "
                                                                 "(per grid point for grid); presets come on top")
    max_concurrent_trials: int = Field(1, ge=1, le=1024)
    seed: Seed = 0
    scheduler: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, le=1000, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: int = Field(2, ge=2, le=100)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    max_failures: int = Field(1, ge=0, le=100,
                              description="Tune retries of a failed trial before it is recorded as failed")
    time_budget_s: float | None = Field(None, gt=0, le=30 * 86400, description="stop starting trials after this many "
                                                                              "seconds of a method's sweep")
    objectives: list[ObjectiveName] | None = Field(
        None, min_length=1, max_length=4,
        description="named objectives, each minimised (forgetting, utility, privacy, time): with two or more the "
                    "search is multi-objective and the report draws each method's Pareto front; default: the "
                    "scalar objective alone")
    choose: ChooseSpec = Field(default_factory=ChooseSpec,
                               description="scalar | knee | {weights: {...}} | {constraint: {limits: {...}, "
                                           "minimise: ...}}: which member of the Pareto front is chosen")

    @model_validator(mode="after")
    def _choice_fits_objectives(self) -> SweepSpec:
        names = self.objectives or []
        if len(set(names)) != len(names):
            raise ValueError("objectives: list each objective once")
        rule = self.choose
        if rule.rule == "knee" and len(names) < 2:
            raise ValueError("choose: knee needs two or more sweep.objectives (e.g. objectives: [forgetting, "
                             "utility]); with the scalar objective alone use choose: scalar")
        used = set(rule.weights or {}) | ({rule.minimise} if rule.minimise else set()) | \
            (set(rule.limits or {}) & set(OBJECTIVE_NAMES))
        missing = sorted(used - set(names))
        if missing:
            raise ValueError(f"choose: {missing} must be listed in sweep.objectives (now {names or 'unset'}); add "
                             f"them there or choose on the listed ones")
        return self

    @property
    def multi_objective(self) -> bool:
        """Two or more named objectives: a front with trade-offs (one named objective is searched alone)."""
        return len(self.objectives or []) >= 2



def _resource_step_problem(value: float, name: str) -> str | None:
    if not value:
        return None
    off_grid = abs(round(value / RAY_RESOURCE_STEP) * RAY_RESOURCE_STEP - value) > 1e-9
    if value < RAY_RESOURCE_STEP or off_grid:
        return f"{name}: {value} is finer than Ray's resource resolution ({RAY_RESOURCE_STEP}); round it to 4 decimals"
    return None


class ResourcesSpec(Strict):
    num_workers: int = Field(1, ge=0, le=1024, description="Train workers per run (0 = in-process local mode)")
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    gpus_per_worker: float = Field(0.0, ge=0, le=64, description="fractions only with num_workers: 1")
    trials_per_gpu: int | None = Field(None, ge=1, le=64, description="pack this many single-worker trials on each "
                                                                       "GPU (sets gpus_per_worker = 1 / N)")
    worker_max_failures: int = Field(2, ge=-1, le=1000, description="restarts of a crashed worker group from its last "
                                                                      "checkpoint before the run fails (-1: unlimited)")
    start_attempts: int = Field(3, ge=1, le=100, description="attempts to start a run's worker group (each waits up to "
                                                             "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, default 60 s) "
                                                             "before the run fails for lack of resources")
    checkpoint_interval_s: float = Field(
        30.0, ge=0, le=86400, description="seconds of training between checkpoints of a run (0: every epoch); a "
                                          "crashed worker or a resumed job redoes at most this much work, and "
                                          "short epochs no longer pay a checkpoint each")
    sync_batchnorm: bool = Field(True, description="with several workers, BatchNorm uses the statistics of the whole "
                                                   "global batch (as one worker would), not each rank's share")
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="the global batch is fixed, so no scaling is needed; linear multiplies lrs by num_workers")
    precision: Literal["bf16", "fp32"] = Field(
        "bf16", description="compute precision on GPU: bf16 autocast (fast), or fp32 as the reference codebases run "
                            "(reproduction jobs); no effect on CPU")

    @model_validator(mode="after")
    def _fractional_gpus(self) -> ResourcesSpec:
        if self.trials_per_gpu is not None:
            if self.num_workers != 1 or self.gpus_per_worker not in (0, round(1 / self.trials_per_gpu, 4)):
                raise ValueError("trials_per_gpu: packs single-worker trials; set num_workers: 1 and leave "
                                 "gpus_per_worker out (it becomes 1 / trials_per_gpu)")
            self.gpus_per_worker = round(1 / self.trials_per_gpu, 4)
        problems = [p for p in (_resource_step_problem(self.cpus_per_worker, "cpus_per_worker"),
                                _resource_step_problem(self.gpus_per_worker, "gpus_per_worker")) if p]
        if self.num_workers > 1 and 0 < self.gpus_per_worker < 1:
            problems.append("gpus_per_worker: a fraction of a GPU works only with num_workers: 1 "
                            "(two DDP ranks on one GPU make NCCL fail); use whole GPUs")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            problems.append("gpus_per_worker: above 1 it must be a whole number")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def concurrent_runs(self, cluster_cpus: float, cluster_gpus: float) -> int:
        """How many runs of this shape the cluster can hold at once (GPU packing included)."""
        workers = max(self.num_workers, 1)
        by_cpu = cluster_cpus // (self.cpus_per_worker * workers) if self.cpus_per_worker else float("inf")
        by_gpu = cluster_gpus // (self.gpus_per_worker * workers) if self.use_gpu else float("inf")
        return int(min(by_cpu, by_gpu))


class TrackingSpec(Strict):
    experiment: str | None = Field(None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$",
                                   description="MLflow experiment (default: the job name)")
    uri: str | None = Field(None,
                            description="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    registered_model: RegistryName | None = Field(None, description="registry name prefix of the best models "
                                                                    "(default camu-<job name>); letters, digits, _ . -")
    namespace: Literal["owner", "shared"] = Field(
        "owner", description="owner (default): the experiment is '<experiment>@<owner>' and registered models "
                             "'<prefix>.<owner>-<scenario>-<method>' (owner: the MLflow user, else the OS user), so "
                             "users of one tracker never share runs by accident; shared: the names as written, one "
                             "record for a team")

    @field_validator("uri")
    @classmethod
    def _store(cls, uri: str | None) -> str | None:
        problem = tracking_uri_problem(uri) if uri is not None else None
        if problem:
            raise ValueError(problem)
        return uri


OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")
"""URI schemes Ray Train/Tune can write checkpoints to (``storage.path``, through pyarrow.fs)."""


def storage_scheme(value: str) -> str:
    """The URI scheme of a storage value, lower case; '' for a plain path (a Windows drive letter too)."""
    scheme = urlsplit(value).scheme.lower() if "://" in value else ""
    return "" if len(scheme) <= 1 else scheme


def _filesystem_path(value: str, name: str) -> str:
    """A plain path as given, or the path of a ``file://`` URI (local host only)."""
    if storage_scheme(value) != "file":
        return value
    parts = urlsplit(value)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{value} names another host ({parts.netloc}); give the folder as this node mounts it")
    path = unquote(parts.path)
    if not path:
        raise ValueError(f"{value} has no path; give a folder, e.g. file:///mnt/shared/{name}")
    return path


class StorageSpec(Strict):
    """Where a job writes. ``path``: Ray Train/Tune checkpoints and results, a folder or object storage
    (``s3://``, ``gs://``, ...). ``cache_dir``: the model cache, and the job folders (splits, trial outputs,
    final.json, weights) when ``path`` is object storage; read and written as files by every process, so
    always a filesystem path (set explicitly beside an object-storage ``path``). ``file://`` URIs become
    paths; relative paths are relative to the folder the job runs in."""

    path: str | None = Field(None, min_length=1, description="Tune/Train storage: a folder (shared on multi-node) or "
                                                             "s3://, gs://...; default ./camu_runs")
    cache_dir: str | None = Field(None, min_length=1, description="content-addressed cache of original/oracle models "
                                                                  "(and the job folders when path is object storage): "
                                                                  "a folder; default ./.camu-cache")
    shared: bool = Field(False, description="true when path and cache_dir are on a filesystem every node mounts (NFS); "
                                            "required for local paths on a multi-node cluster")
    keep_weights: Literal["chosen", "all"] = Field(
        "chosen", description="chosen (default): trial weights reach MLflow only for presets, replicates and each "
                              "method's chosen configuration; all: every sweep trial's weights too (a 200-trial "
                              "ResNet-50 sweep then stores 200 models)")

    @field_validator("path")
    @classmethod
    def _ray_storage(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = storage_scheme(value)
        if scheme in ("", "file"):
            return _filesystem_path(value, "camu_runs")
        if scheme in OBJECT_STORE_SCHEMES:
            if not urlsplit(value).netloc:
                raise ValueError(f"{scheme}:// needs a bucket, e.g. {scheme}://BUCKET/camu_runs")
            return value
        raise ValueError(f"scheme {scheme!r} is not storage Ray can write; give a folder (one every node mounts on a "
                         f"multi-node cluster) or {', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)}")

    @field_validator("cache_dir")
    @classmethod
    def _filesystem_cache(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = storage_scheme(value)
        if scheme not in ("", "file"):
            raise ValueError(f"{scheme}:// is not a folder: cached models and the job's splits, trial outputs and "
                             f"weights are read as files by every process; give a folder (on a multi-node cluster one "
                             f"every node mounts, with storage.shared: true)")
        return _filesystem_path(value, "camu_cache")

    @model_validator(mode="after")
    def _job_folders_need_a_filesystem(self) -> StorageSpec:
        if self.object_storage and self.cache_dir is None:
            scheme = storage_scheme(self.path or '')
            raise ValueError(f"cache_dir: required when storage.path is object storage ({scheme}"
                             f"://, used by Ray Train/Tune alone): the model cache and the job folders (splits, trial "
                             f"outputs, final.json, weights) need a folder every node can read; set storage.cache_dir, "
                             f"e.g. /mnt/shared/camu_cache (with storage.shared: true on a multi-node cluster)")
        return self

    @property
    def object_storage(self) -> bool:
        """True when ``path`` is object storage (Ray Train/Tune only; job folders then live under ``cache_dir``)."""
        return self.path is not None and storage_scheme(self.path) in OBJECT_STORE_SCHEMES

    def locations(self, workdir: str | Path) -> tuple[str, str, Path]:
        """(Ray Train/Tune storage, cache folder, folder of the job folders) for a job run in ``workdir``:
        folders absolute (``~`` expanded, relative ones under ``workdir``), object storage as given."""
        base = Path(workdir).expanduser().resolve()

        def folder(value: str | None, default: str) -> Path:
            path = Path(value).expanduser() if value else Path(default)
            return (path if path.is_absolute() else base / path).resolve()

        cache = folder(self.cache_dir, ".camu-cache")
        if self.object_storage:
            return self.path or "", str(cache), cache
        runs = folder(self.path, "camu_runs")
        return str(runs), str(cache), runs


class ExpectSpec(Strict):
    """A target the job's results should meet, checked by ``camu-orch results JOB --check`` and shown in the
    report: the mean of ``metric`` over the seeds, for ``method``'s chosen configuration (``original`` and
    ``oracle``: the references) on ``scenario``, within ``tolerance`` of ``value``. ``source`` says where the
    value comes from (the official run, a paper table, a figure read by eye), so a reader can weigh a miss.
    Whether the names exist in the job is checked with the other cross references
    (``orchestrator.job.validate``)."""

    scenario: str = Field(min_length=1, max_length=100, description="a scenario name of this job")
    method: str = Field(min_length=1, max_length=100, description="a method of this job, or original / oracle")
    metric: str = Field(min_length=1, max_length=100, description="a per-method metric of camu-orch results --by "
                                                                  "method: ra, fa, ta, mia_official, avg_gap, ...")
    value: float = Field(description="the expected mean over the seeds, in the metric's unit (accuracies in %)")
    tolerance: float = Field(ge=0, description="met when |measured mean - value| <= tolerance")
    source: str = Field(min_length=1, max_length=300,
                        description="where the value comes from, one line: 'official run', 'paper Table 2', "
                                    "'Fig. 3 read by eye'")

    @field_validator("source")
    @classmethod
    def _one_line(cls, source: str) -> str:
        """Printed in a terminal table and the report: visible text on one line."""
        if not source.strip():
            raise ValueError("empty; say where the value comes from, e.g. 'paper Table 2' or 'official run'")
        if any(ord(c) < 32 or ord(c) == 127 for c in source):
            raise ValueError("one line of text without control characters (no line breaks or tabs)")
        return source.strip()


class JobSpec(Strict):
    name: Name = Field(description="letters, digits, _ . - (at most 64; used in run and folder names)")
    dataset: NamedOptions
    model: NamedOptions
    original: OriginalSpec = Field(default_factory=OriginalSpec)
    scenarios: list[ScenarioSpec] = Field(min_length=1, max_length=100)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=100)
    plugins: list[ModuleName] = Field(default_factory=list, max_length=50,
                                      description="modules imported in every process before the registries are "
                                                  "read: methods, datasets or models of your own")
    methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name="camu")], min_length=1, max_length=50,
                                      description="the unlearning methods compared, each with its preset and space")
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    expect: list[ExpectSpec] = Field(default_factory=list, max_length=1000,
                                     description="targets the results should meet, each {scenario, method, metric, "
                                                 "value, tolerance, source}; camu-orch results JOB --check checks "
                                                 "them (exit 1 on a miss) and the report shows them")

    @model_validator(mode="after")
    def _unique_scenarios(self) -> JobSpec:
        names = [s.name for s in self.scenarios]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"scenarios: names {dup} are used twice; give each scenario its own name")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: list each seed once")
        methods = [m.name for m in self.methods]
        twice = sorted({m for m in methods if methods.count(m) > 1})
        if twice:
            raise ValueError(f"methods: {twice} listed twice; list each method once (its sweep covers its variants)")
        problems = []
        names = {s.name for s in self.scenarios}
        for i, method in enumerate(self.methods):
            unknown = sorted(set(method.scenarios or []) - names)
            if unknown:
                problems.append(f"methods.{i}.scenarios: {unknown} are not scenarios of this job; choose from "
                                f"{sorted(names)}")
            strange = sorted(set(method.seeds or []) - set(self.seeds))
            if strange:
                problems.append(f"methods.{i}.seeds: {strange} are not seeds of this job; choose from {self.seeds}")
            elif (method.seeds is not None and method.name in ("camu", "retrain")
                  and set(method.seeds) != set(self.seeds)):
                problems.append(f"methods.{i}.seeds: {method.name} runs on every seed of the job (a comparison never "
                                f"cuts CaMU's or the oracle's seeds); remove its seeds list")
            grids = (method.sweep.search_space() or SearchSpace({})).grids
            if grids and self.sweep.search != "grid":
                problems.append(f"methods.{i}.sweep.space.{next(iter(grids))}: 'grid' needs sweep.search: grid "
                                f"(or use 'choice' with {self.sweep.search})")
            total = math.prod(len(v) for v in grids.values()) * self.sweep.num_samples
            if total > MAX_TRIALS:
                problems.append(f"methods.{i}.sweep.space: the grid times sweep.num_samples makes {total:,} trials per "
                                f"scenario and seed; at most {MAX_TRIALS:,} (shrink the grid or use search: optuna)")
        if "privacy" in (self.sweep.objectives or []) and self.evaluation.privacy is None:
            problems.append("sweep.objectives: privacy is the per-example attack's gap, which runs only with "
                            "evaluation.privacy: {shadows: 8}; add that or drop privacy from the objectives")
        if problems:
            raise ValueError("\n".join(problems))
        return self


NEW_FORM = """methods:
      - name: camu
        preset: official          # or none
        params: {...}             # overrides
        sweep: {space: {...}}     # default: the method's documented space"""


def legacy_errors(raw: dict[str, Any]) -> list[str]:
    """Keys of the CaMU-only job format, each with the form that replaced it."""
    errors = []
    if "camu" in raw:
        errors.append(f"camu: the camu: block is replaced by a methods: list; write\n    {NEW_FORM}")
    sweep = raw.get("sweep")
    if isinstance(sweep, dict) and "space" in sweep:
        errors.append("sweep.space: search spaces are per method now; move it to methods: [{name: camu, sweep: "
                      "{space: {...}}}] (sweep: keeps search, num_samples, concurrency, scheduler, objective)")
    return errors


def without_legacy(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` without the legacy keys (reported by ``legacy_errors``), so the rest is still checked."""
    out = {k: v for k, v in raw.items() if k != "camu"}
    if isinstance(out.get("sweep"), dict):
        out["sweep"] = {k: v for k, v in out["sweep"].items() if k != "space"}
    return out


def parse_job(raw: Any, source: str = "<job>") -> JobSpec:
    """Schema pass only: the mapping -> ``JobSpec`` or ``JobSpecError`` with every problem."""
    if not isinstance(raw, dict):
        raise JobSpecError(source, ["(top level): the job file must be a YAML mapping (key: value lines)"])
    errors = legacy_errors(raw)
    try:
        spec = JobSpec.model_validate(without_legacy(raw))
    except ValidationError as err:
        raise JobSpecError(source, errors + format_validation_error(err)) from None
    if errors:
        raise JobSpecError(source, errors)
    return spec
