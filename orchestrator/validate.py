"""Second validation pass: registry names, per-entry options, the search space, resources and
(optionally) the data itself. Collects every problem; raises one ``JobSpecError``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from camu import DATASETS, MODELS, SCENARIOS, CamuParams
from camu.data import DataRootError, ImageData, load_dataset
from camu.methods.camu import official_params
from camu.scenarios import ScenarioError, make_split
from orchestrator.spec import JobSpec, JobSpecError, ScenarioSpec, apply_overrides, parse_job, read_yaml


@dataclass
class CheckedJob:
    """A job that passed every check, with what the checks already computed (data and splits)."""

    spec: JobSpec
    path: str
    raw: dict[str, Any]
    data: ImageData | None = None
    splits: dict[tuple[str, int], pa.Table] = field(default_factory=dict)


def _options_errors(prefix: str, model: type[BaseModel], options: dict[str, Any]) -> list[str]:
    try:
        model.model_validate(options)
    except ValidationError as err:
        out = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = "unknown option; remove it or check its spelling" if e["type"] == "extra_forbidden" else e["msg"]
            if e["type"] == "missing":
                msg = "required; add it"
            out.append(f"{prefix}.{loc}: {msg}" if loc else f"{prefix}: {msg}")
        return out
    return []


def _registry_errors(raw: dict[str, Any]) -> list[str]:
    """Registry names and per-entry options, read from the raw mapping so that this pass also runs (and
    its errors are listed too) when the schema pass failed elsewhere."""
    errors: list[str] = []
    for label, registry in (("dataset", DATASETS), ("model", MODELS)):
        block = raw.get(label)
        if not isinstance(block, dict) or not isinstance(block.get("name"), str):
            continue
        options = {k: v for k, v in block.items() if k != "name"}
        if block["name"] not in registry:
            errors.append(f"{label}.name: unknown {label} {block['name']!r}; choose one of {', '.join(registry.names())}")
        else:
            errors += _options_errors(label, registry.get(block["name"]).options, options)
    scenarios = raw.get("scenarios") if isinstance(raw.get("scenarios"), list) else []
    for i, sc in enumerate(scenarios):
        if not isinstance(sc, dict) or not isinstance(sc.get("kind"), str):
            continue
        options = {k: v for k, v in sc.items() if k not in ("name", "kind")}
        if sc["kind"] not in SCENARIOS:
            errors.append(f"scenarios.{i}.kind: unknown kind {sc['kind']!r}; choose one of {', '.join(SCENARIOS.names())}")
        else:
            errors += _options_errors(f"scenarios.{i}", SCENARIOS.get(sc["kind"]).options, {"kind": sc["kind"], **options})
    return errors


def base_camu_params(spec: JobSpec, scenario: ScenarioSpec) -> dict[str, Any]:
    """The configuration every trial of ``scenario`` starts from (official preset + overrides)."""
    base = official_params(spec.dataset.name, scenario.kind).model_dump() if spec.camu.preset == "official" else {}
    return {**base, **spec.camu.params}


def _space_points(value: Any) -> list[Any]:
    """The values of a search dimension that must all be valid CaMU parameters."""
    if not isinstance(value, dict):
        return [value]
    kind, arg = next(iter(value.items()))
    return list(arg)


def _camu_errors(spec: JobSpec) -> list[str]:
    errors = _options_errors("camu.params", CamuParams, spec.camu.params)
    fields = set(CamuParams.model_fields)
    for key, value in spec.sweep.space.items():
        if key not in fields:
            errors.append(f"sweep.space.{key}: not a CaMU parameter; searchable: {', '.join(sorted(fields))}")
            continue
        for point in _space_points(value):
            errors += [e.replace("camu.params", "sweep.space") for e in _options_errors("camu.params", CamuParams, {key: point})]
    return errors


def _resource_errors(spec: JobSpec) -> list[str]:
    errors = []
    workers = max(spec.resources.num_workers, 1)
    batches = {"original.recipe.batch_size": spec.original.oracle_recipe.batch_size}
    merged = {**CamuParams().model_dump(), **spec.camu.params}
    batches["camu.params.batch_size"] = merged["batch_size"]
    if "batch_size" in spec.sweep.space:
        batches["sweep.space.batch_size"] = min(_space_points(spec.sweep.space["batch_size"]))
    for name, batch in batches.items():
        if isinstance(batch, int) and batch < workers:
            errors.append(f"{name}: global batch {batch} is smaller than resources.num_workers={workers}; "
                          f"raise the batch or use fewer workers")
    if spec.original.uri and "://" not in spec.original.uri and not Path(spec.original.uri).expanduser().exists():
        errors.append(f"original.uri: {spec.original.uri} does not exist; give a weights file or a models:/ URI")
    return errors


def _data_errors(job: CheckedJob) -> list[str]:
    spec = job.spec
    try:
        job.data = load_dataset(spec.dataset.name, spec.dataset.options)
    except (DataRootError, ValueError, OSError) as err:
        return [str(err) if str(err).startswith("dataset") else f"dataset: {err}"]
    errors = []
    for i, sc in enumerate(spec.scenarios):
        for seed in spec.seeds:
            try:
                job.splits[(sc.name, seed)] = make_split(sc.kind, sc.options, job.data.train.labels,
                                                         job.data.class_names, seed)
            except ScenarioError as err:
                errors.append(f"scenarios.{i} ({sc.name}): {err}")
                break
    return errors


def check_local_resources(spec: JobSpec) -> list[str]:
    """Resources a local run cannot have (a cluster is checked against its own totals at submit)."""
    import torch

    errors = []
    gpus_needed = spec.resources.gpus_per_worker * max(spec.resources.num_workers, 1)
    if gpus_needed and torch.cuda.device_count() < math.ceil(gpus_needed):
        errors.append(f"resources.gpus_per_worker: the job needs {gpus_needed:g} GPU(s) per run but this machine has "
                      f"{torch.cuda.device_count()}; set gpus_per_worker: 0 or submit to a GPU cluster with --address")
    if spec.device == "cuda" and not torch.cuda.is_available():
        errors.append("device: cuda requested but no CUDA device is visible; use device: auto")
    cpus = spec.resources.cpus_per_worker * max(spec.resources.num_workers, 1)
    if cpus > 4 * (os.cpu_count() or 1):
        errors.append(f"resources: {cpus:g} CPUs per run is far beyond this machine's {os.cpu_count()} cores; "
                      f"lower num_workers or cpus_per_worker")
    return errors


def check_job(path: str | Path, check_data: bool = True, local: bool = True,
              overrides: list[str] | None = None) -> CheckedJob:
    """Both validation passes (and the data when ``check_data``); raises ``JobSpecError`` listing all problems.
    ``overrides`` are ``key.sub=value`` edits applied to the file's contents first."""
    raw = apply_overrides(read_yaml(path), overrides or [], str(path))
    try:
        spec = parse_job(raw, str(path))
    except JobSpecError as err:
        raise JobSpecError(str(path), err.errors + (_registry_errors(raw) if isinstance(raw, dict) else [])) from None
    job = CheckedJob(spec, str(path), raw)
    errors = _registry_errors(raw) + _camu_errors(spec) + _resource_errors(spec)
    if local:
        errors += check_local_resources(spec)
    if not errors and check_data:
        errors += _data_errors(job)
    if errors:
        raise JobSpecError(str(path), errors)
    return job
