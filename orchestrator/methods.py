"""From a job's ``methods:`` entry to concrete configurations: the preset a method starts from, its
parameters after overrides, its search space; and the validation of all three against the method's own
typed ``Params`` (pure: the registries only, no Ray, no MLflow)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from camu.methods import METHODS, UnlearningMethod, check_applicable
from orchestrator.spec import MethodSpec, format_validation_error, space_dimension_problem

NO_PRESET = "none"
PRESET_TRIAL = "preset"  # trial_id of a method's preset run in the summary and MLflow


def method(spec: MethodSpec) -> UnlearningMethod:
    return METHODS.get(spec.name)()


def preset_name(spec: MethodSpec, dataset: str, scenario_kind: str) -> str | None:
    """The preset trials start from (the method's default unless named; None for ``none``)."""
    if spec.preset == NO_PRESET:
        return None
    return spec.preset or (method(spec).preset_names(dataset, scenario_kind) or [None])[0]


def base_params(spec: MethodSpec, dataset: str, scenario_kind: str) -> dict[str, Any]:
    """The complete parameters of the method's preset run: preset (or defaults), then ``params``."""
    m = method(spec)
    name = preset_name(spec, dataset, scenario_kind)
    base = m.preset(name, dataset, scenario_kind) if name else {}
    return m.Params.model_validate({**base, **spec.params}).model_dump()


def other_presets(spec: MethodSpec, dataset: str, scenario_kind: str) -> list[tuple[str, dict[str, Any]]]:
    """The method's other known presets (trial ids ``preset-<name>``, the job's overrides applied): the
    search starts from all of them, e.g. both dataset families of CaMU."""
    m = method(spec)
    chosen = preset_name(spec, dataset, scenario_kind)
    return [(f"{PRESET_TRIAL}-{name}", m.Params.model_validate({**m.preset(name, dataset, scenario_kind),
                                                                **spec.params}).model_dump())
            for name in m.preset_names(dataset, scenario_kind) if name != chosen]


def search_space(spec: MethodSpec) -> dict[str, Any]:
    """The job's space for the method, else the method's documented default."""
    return dict(method(spec).space if spec.sweep.space is None else spec.sweep.space)


def _errors(prefix: str, model: type[BaseModel], values: dict[str, Any], extra_key: str) -> list[str]:
    try:
        model.model_validate(values)
    except ValidationError as err:
        return format_validation_error(err, prefix, extra_key=extra_key)
    return []


def _base_type(annotation: Any) -> Any:
    """The scalar type a sampled value takes: float for ``float | list[float]`` (a per-channel option)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        scalars = [a for a in typing.get_args(annotation) if a in (int, float)]
        return float if float in scalars else (scalars[0] if scalars else annotation)
    return annotation


def space_kind_problem(name: str, annotation: Any, kind: str) -> str | None:
    """Why searching parameter ``name`` (of type ``annotation``) with ``kind`` cannot work, or None."""
    base = _base_type(annotation)
    if base is int and kind in ("uniform", "loguniform"):
        return f"{name} is a whole number; search it with randint: [low, high] (or choice)"
    if base not in (int, float) and kind in ("uniform", "loguniform", "randint"):
        return f"{name} is not numeric; search it with choice: [...] (or grid)"
    return None


def space_errors(prefix: str, method_name: str, params: type[BaseModel], space: dict[str, Any]) -> list[str]:
    """Every dimension must name a parameter, use a kind that fits its type, and stay in its range."""
    errors: list[str] = []
    fields = params.model_fields
    for key, value in space.items():
        if key not in fields:
            errors.append(f"{prefix}.{key}: not a parameter of {method_name}; searchable: {', '.join(sorted(fields))}")
            continue
        if isinstance(value, dict):
            if len(value) != 1 or space_dimension_problem(*next(iter(value.items()))):
                continue  # malformed: the schema pass says how
            kind, points = next(iter(value.items()))
            problem = space_kind_problem(key, fields[key].annotation, kind)
            if problem:
                errors.append(f"{prefix}.{key}.{kind}: {problem}")
                continue
        else:
            points = [value]
        for point in points:
            errors += _errors(prefix, params, {key: point}, "not a parameter")
    return list(dict.fromkeys(errors))


def method_errors(i: int, spec: MethodSpec, dataset: str | None, scenario_kinds: list[tuple[str, str]],
                  loaded_original: bool) -> list[str]:
    """Problems of ``methods.i`` for this job's dataset and scenarios (name, kind)."""
    prefix = f"methods.{i}"
    if spec.name not in METHODS:
        return [f"{prefix}.name: unknown method {spec.name[:40]!r}; choose one of {', '.join(METHODS.names())}"]
    m = method(spec)
    errors = _errors(f"{prefix}.params", m.Params, spec.params, "unknown parameter of " + spec.name)
    for scenario, kind in scenario_kinds:
        if not spec.runs_on(scenario):
            continue
        reason = check_applicable(spec.name, kind, has_initial=not loaded_original)
        if reason:
            fitting = [n for n, k in scenario_kinds if not check_applicable(spec.name, k, not loaded_original)]
            fix = (f"run it on those it fits with scenarios: {fitting}, or drop it" if fitting and "defined only" in reason
                   else "drop it from this job")
            errors.append(f"{prefix}: {reason} (scenario {scenario}); {fix}")
            continue
        if dataset is None:
            continue
        known = m.preset_names(dataset, kind)
        if spec.preset not in (None, NO_PRESET) and spec.preset not in known:
            errors.append(f"{prefix}.preset: {spec.preset!r} is not a preset of {spec.name}; presets: "
                          f"{', '.join(known + [NO_PRESET])}")
        elif not errors:
            try:
                base_params(spec, dataset, kind)
            except ValidationError as err:
                errors += format_validation_error(err, f"{prefix}.params", extra_key="unknown parameter")
    errors += space_errors(f"{prefix}.sweep.space", spec.name, m.Params, search_space(spec))
    return list(dict.fromkeys(errors))
