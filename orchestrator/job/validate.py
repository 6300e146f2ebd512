"""Validating a job before anything starts: the schema pass (``orchestrator.job.spec``), then checks that
need the registries, the file system or the data. Every check reads the section it needs on its own,
so a problem in one section never hides the problems of another: one run of ``camu-orch validate``
lists them all, each as 'field: what and how to fix'."""

from __future__ import annotations

import importlib
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from camu import DATASETS, METHODS, MODELS, SCENARIOS
from camu.data import DataFormatError, DataRootError, ImageData, load_dataset
from camu.data.datasets import labels_only
from camu.scenarios import ScenarioError, make_split
from orchestrator.job.jobfile import apply_overrides, read_yaml
from orchestrator.job.messages import model_errors
from orchestrator.job.presets import method_errors, search_space
from orchestrator.job.spec import (
    JobSpec,
    JobSpecError,
    ScenarioSpec,
    parse_job,
    without_legacy,
)
from orchestrator.job.uris import local_weights_problem, model_source

MAX_LOCAL_OVERSUBSCRIPTION = 8  # logical CPUs a local job may ask per physical core


@dataclass
class CheckedJob:
    """A job that passed every check, with what the checks already computed (data and splits)."""

    spec: JobSpec
    path: str
    raw: dict[str, Any]
    data: ImageData | None = None
    splits: dict[tuple[str, int], pa.Table] = field(default_factory=dict)


def section(raw: dict[str, Any], key: str) -> Any:
    """One top-level section of the job validated on its own (its default when absent), or None when
    it is invalid (the schema pass reports why)."""
    info = JobSpec.model_fields[key]
    if key not in raw:
        return None if info.is_required() else info.get_default(call_default_factory=True)
    try:
        return TypeAdapter(info.annotation).validate_python(raw[key])
    except ValidationError:
        return None


# ----------------------------------------------------------------------------- registries
def _registry_errors(raw: dict[str, Any]) -> list[str]:
    """Registry names and per-entry options, read from the raw mapping."""
    errors: list[str] = []
    for label, registry in (("dataset", DATASETS), ("model", MODELS)):
        block = raw.get(label)
        if not isinstance(block, dict) or not isinstance(block.get("name"), str):
            continue
        options = {k: v for k, v in block.items() if k != "name"}
        if block["name"] not in registry:
            errors.append(f"{label}.name: unknown {label} {block['name'][:40]!r}; choose one of "
                          f"{', '.join(registry.names())}")
        else:
            errors += model_errors(label, registry.get(block["name"]).options, options)
    scenarios = raw.get("scenarios") if isinstance(raw.get("scenarios"), list) else []
    for i, sc in enumerate(scenarios):
        if not isinstance(sc, dict) or not isinstance(sc.get("kind"), str):
            continue
        options = {k: v for k, v in sc.items() if k not in ("name", "kind")}
        if sc["kind"] not in SCENARIOS:
            errors.append(f"scenarios.{i}.kind: unknown kind {sc['kind'][:40]!r}; choose one of "
                          f"{', '.join(SCENARIOS.names())}")
        else:
            errors += model_errors(f"scenarios.{i}", SCENARIOS.get(sc["kind"]).options, {"kind": sc["kind"], **options})
    return errors


def _regime_errors(raw: dict[str, Any]) -> list[str]:
    """The paper data regime feeds 224-px inputs: a ResNet with the 32-px CIFAR stem would run at 49x
    the cost of the official ImageNet stem, and is not the official model."""
    dataset, model = raw.get("dataset"), raw.get("model")
    if not isinstance(dataset, dict) or not isinstance(model, dict) or dataset.get("setting") != "paper":
        return []
    if str(model.get("name", "")).startswith("resnet") and model.get("stem") == "cifar":
        return [("model.stem: cifar is the 32-px stem, but dataset.setting: paper feeds 224-px images; "
                "use stem: imagenet (or auto) as the official code, or dataset.setting: fast")]
    return []


# ----------------------------------------------------------------------------- plugins and methods
def _plugin_errors(raw: dict[str, Any]) -> list[str]:
    plugins = raw.get("plugins")
    if not isinstance(plugins, list):
        return []
    errors = []
    for i, module in enumerate(plugins):
        if not isinstance(module, str):
            continue
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - any failure to import is the answer
            errors.append(f"plugins.{i}: cannot import {module!r} ({type(err).__name__}: {str(err)[:200]}); "
                          f"put it on PYTHONPATH (or in the project) so every worker can import it")
    return errors


# ----------------------------------------------------------------------------- methods
def _method_errors(raw: dict[str, Any], methods: Any, original: Any) -> list[str]:
    """Each method through its own typed Params: name, preset, overrides, space, applicability."""
    if not methods:
        return []
    dataset = raw.get("dataset", {}).get("name") if isinstance(raw.get("dataset"), dict) else None
    model = raw.get("model", {}).get("name") if isinstance(raw.get("model"), dict) else None
    scenarios = [(sc.get("name", f"#{i}"), sc["kind"]) for i, sc in enumerate(raw.get("scenarios") or [])
                 if isinstance(sc, dict) and isinstance(sc.get("kind"), str) and sc["kind"] in SCENARIOS]
    loaded = original is not None and original.uri is not None
    # an invalid original: section (None) has its own error; nothing is checked against an unknown recipe
    recipe = None if original is None else original.trained_recipe
    errors = []
    for i, spec in enumerate(methods):
        errors += method_errors(i, spec, dataset if dataset in DATASETS else None,
                                model if isinstance(model, str) else None, scenarios, loaded, recipe)
    return errors


# ----------------------------------------------------------------------------- expect: targets
REFERENCE_METHODS = ("original", "oracle")
NEEDS_EVALUATION = {"lira_auc": "privacy", "lira_tpr_at_1pct_fpr": "privacy", "relearn_epochs": "relearn"}
"""Metrics a job measures only when its ``evaluation:`` asks for them (the key it needs)."""


def _named(raw: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
    """The entries of a list section that carry a string ``name`` (None when the section is not a list)."""
    entries = raw.get(key)
    if not isinstance(entries, list):
        return None
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]


def _expect_errors(raw: dict[str, Any]) -> list[str]:
    """Each ``expect:`` target must name a scenario of the job, one of its methods (or a reference) that runs
    on that scenario, and a per-method metric the job measures; read from the raw mapping, so that every
    target is checked even when another one (or another section) has a schema problem."""
    from orchestrator.job.metrics import BY_METHOD_METRICS

    targets = raw.get("expect")
    if not isinstance(targets, list):
        return []
    scenarios = _named(raw, "scenarios")
    methods = _named(raw, "methods") if "methods" in raw else [{"name": m.name} for m in section(raw, "methods")]
    evaluation = raw.get("evaluation") if isinstance(raw.get("evaluation"), dict) else {}
    errors = []
    for i, target in enumerate(targets):
        if not isinstance(target, dict):
            continue
        scenario, method, metric = (target.get(k) if isinstance(target.get(k), str) else None
                                    for k in ("scenario", "method", "metric"))
        names = [s["name"] for s in scenarios or []]
        if scenario is not None and scenarios is not None and scenario not in names:
            errors.append(f"expect.{i}.scenario: unknown scenario {scenario[:40]!r}; choose one of this job's "
                          f"scenarios: {', '.join(names) or '(none)'}")
        if method is not None and methods is not None:
            entry = next((m for m in methods if m["name"] == method), None)
            choices = [m["name"] for m in methods] + list(REFERENCE_METHODS)
            runs_on = entry.get("scenarios") if entry is not None else None
            if entry is None and method not in REFERENCE_METHODS:
                errors.append(f"expect.{i}.method: unknown method {method[:40]!r}; choose one of this job's methods "
                              f"or a reference: {', '.join(choices)}")
            elif isinstance(runs_on, list) and scenario in names and scenario not in runs_on:
                errors.append(f"expect.{i}.method: {method} does not run on scenario {scenario} (its scenarios: "
                              f"{', '.join(map(str, runs_on))}); add the scenario to the method or target another")
        if metric is not None and metric not in BY_METHOD_METRICS:
            errors.append(f"expect.{i}.metric: unknown metric {metric[:40]!r}; choose one of "
                          f"{', '.join(BY_METHOD_METRICS)}")
        elif metric in NEEDS_EVALUATION and evaluation.get(NEEDS_EVALUATION[metric]) is None:
            errors.append(f"expect.{i}.metric: {metric} is measured only with evaluation.{NEEDS_EVALUATION[metric]}; "
                          f"add it to the job or target another metric")
    return errors


# ----------------------------------------------------------------------------- resources and paths
BATCH_FIELDS = ("batch_size", "forget_batch_size")


def _batch_errors(resources: Any, original: Any, methods: Any) -> list[str]:
    if resources is None:
        return []
    workers = max(resources.num_workers, 1)
    batches: dict[str, Any] = {}
    if original is not None:
        batches["original.recipe.batch_size"] = original.oracle_recipe.batch_size
    for i, spec in enumerate(methods or []):
        if spec.name not in METHODS:
            continue
        params, space = METHODS.get(spec.name).Params, search_space(spec)
        for name in BATCH_FIELDS:
            if name in spec.params:
                batches[f"methods.{i}.params.{name}"] = spec.params[name]
            elif name in params.model_fields:
                batches[f"methods.{i} ({spec.name}) {name}"] = params.model_fields[name].default
            values = [v for v in space.points(name) if isinstance(v, (int, float))]
            if values:
                batches[f"methods.{i}.sweep.space.{name}"] = min(values)
    return [f"{name}: global batch {batch} is smaller than resources.num_workers={workers}; raise the batch or use "
            f"fewer workers" for name, batch in batches.items() if isinstance(batch, int) and batch < workers]


def _original_errors(original: Any) -> list[str]:
    if original is None or original.uri is None:
        return []
    source = model_source(original.uri)
    problem = local_weights_problem(source.location) if source.kind == "file" else None
    return [f"original.uri: {problem}"] if problem else []


def writable_problem(path: str) -> str | None:
    """Why a local folder cannot be created or written, or None. Probed by creating and removing a
    temporary folder in the nearest existing ancestor (permission bits say nothing for root, read-only
    mounts or /proc); nothing is left behind."""
    p = Path(path).expanduser()
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder" if probe == p else f"{probe} (a parent of {p}) is a file"
    try:
        with tempfile.TemporaryDirectory(prefix=".camu-probe-", dir=probe):
            pass
    except OSError as err:
        return f"cannot write in {probe} ({err.strerror or err})"
    return None


def _storage_errors(storage: Any) -> list[str]:
    if storage is None:
        return []
    errors = []
    for name in ("path", "cache_dir"):
        value = getattr(storage, name)
        if value and "://" not in value:
            problem = writable_problem(value)
            if problem:
                errors.append(f"storage.{name}: {problem}; choose a folder this user can write")
    return errors


def check_local_resources(resources: Any, sweep: Any, device: str = "auto") -> list[str]:
    """Resources a run on this machine cannot have (a cluster is checked against its own totals at submit)."""
    import torch

    if resources is None:
        return []
    errors = []
    workers = max(resources.num_workers, 1)
    gpus_needed = resources.gpus_per_worker * workers
    if gpus_needed and torch.cuda.device_count() < math.ceil(gpus_needed):
        errors.append(f"resources.gpus_per_worker: the job needs {gpus_needed:g} GPU(s) per run but this machine has "
                      f"{torch.cuda.device_count()}; set gpus_per_worker: 0 or submit to a GPU cluster with --address")
    if device == "cuda" and not torch.cuda.is_available():
        errors.append("device: cuda requested but no CUDA device is visible; use device: auto")
    cores = os.cpu_count() or 1
    per_run = resources.cpus_per_worker * workers
    if per_run > MAX_LOCAL_OVERSUBSCRIPTION * cores:
        errors.append(f"resources: {per_run:g} CPUs per run is far beyond this machine's {cores} cores; "
                      f"lower num_workers or cpus_per_worker")
    elif sweep is not None and per_run * sweep.max_concurrent_trials > MAX_LOCAL_OVERSUBSCRIPTION * cores:
        errors.append(f"sweep.max_concurrent_trials: {sweep.max_concurrent_trials} runs of {per_run:g} CPUs at once is "
                      f"far beyond this machine's {cores} cores; lower it (e.g. to "
                      f"{max(1, int(cores // per_run) or 1)}) or submit to a cluster with --address")
    return errors


# ----------------------------------------------------------------------------- data
def _data_errors(job: CheckedJob, dataset: Any, scenarios: list[ScenarioSpec], seeds: list[int]) -> list[str]:
    try:
        with labels_only():  # the driver needs labels and sizes; image files are decoded by the workers
            job.data = load_dataset(dataset.name, dataset.options)
    except (DataRootError, DataFormatError) as err:
        return [str(err) if str(err).startswith("dataset") else f"dataset: {err}"]
    except (ValueError, OSError) as err:
        return [f"dataset: cannot load {dataset.name}: {err}"]
    errors = []
    for i, sc in enumerate(scenarios):
        for seed in seeds:
            try:
                job.splits[(sc.name, seed)] = make_split(sc.kind, sc.options, job.data.train.labels,
                                                         job.data.class_names, seed)
            except ScenarioError as err:
                errors.append(f"scenarios.{i} ({sc.name}): {err}")
                break
    return errors


def _loaded_weights_errors(job: CheckedJob, original: Any) -> list[str]:
    """A local original.uri must be loadable (safetensors / weights-only state dict) and fit the model."""
    if original is None or original.uri is None or job.data is None:
        return []
    source = model_source(original.uri)
    if source.kind != "file" or local_weights_problem(source.location):
        return []
    from camu.models import build_model
    from camu.weights import UnsafeWeightsError, load_weights

    spec = job.spec
    try:
        model = build_model(spec.model.name, spec.model.options, job.data.in_channels, job.data.num_classes,
                            job.data.image_size)
        load_weights(model, Path(source.location).expanduser())
    except UnsafeWeightsError as err:
        return [f"original.uri: {err}"]
    return []


def check_job(path: str | Path, check_data: bool = True, local: bool = True,
              overrides: list[str] | None = None) -> CheckedJob:
    """Every validation pass (the data too when ``check_data``); raises ``JobSpecError`` listing every
    problem. ``local``: also check that one run fits this machine. ``overrides`` are ``key.sub=value``
    edits applied to the file's contents first."""
    source = str(path)
    raw = apply_overrides(read_yaml(path), overrides or [], source)
    spec = None
    errors: list[str] = _plugin_errors(raw) if isinstance(raw, dict) else []  # before any registry is read
    try:
        spec = parse_job(raw, source)
    except JobSpecError as err:
        errors += err.errors
    raw = without_legacy(raw) if isinstance(raw, dict) else {}
    resources, sweep, original = section(raw, "resources"), section(raw, "sweep"), section(raw, "original")
    methods = section(raw, "methods")
    registry_errors = _registry_errors(raw)
    errors += registry_errors + _regime_errors(raw) + _method_errors(raw, methods, original)
    errors += _batch_errors(resources, original, methods) + _expect_errors(raw)
    errors += _original_errors(original) + _storage_errors(section(raw, "storage"))
    if local:
        errors += check_local_resources(resources, sweep, spec.device if spec is not None else "auto")
    job = CheckedJob(spec, source, raw)  # type: ignore[arg-type] - raised below when spec is None
    dataset, scenarios, seeds = section(raw, "dataset"), section(raw, "scenarios"), section(raw, "seeds")
    registry_ok = not any(e.startswith(("dataset", "scenarios")) for e in registry_errors)
    if check_data and spec is not None and registry_ok:
        errors += _data_errors(job, spec.dataset, spec.scenarios, spec.seeds)
        errors += _loaded_weights_errors(job, original)
    elif check_data and dataset is not None and scenarios is not None and seeds is not None and registry_ok:
        errors += _data_errors(job, dataset, scenarios, seeds)
    errors = list(dict.fromkeys(errors))
    if errors:
        raise JobSpecError(source, errors)
    return job
