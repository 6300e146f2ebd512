"""From a job's ``methods:`` entry to concrete configurations: the preset a method starts from, its
parameters after overrides, its search space; and the validation of all three against the method's own
typed ``Params`` (pure: the registries only, no Ray, no MLflow)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from camu.methods import METHODS, MethodParams, Setting, UnlearningMethod, check_applicable
from camu.models import MODELS, model_family
from orchestrator.job.messages import format_validation_error, model_errors
from orchestrator.job.space import SearchSpace
from orchestrator.job.spec import MethodSpec

NO_PRESET = "none"
PRESET_TRIAL = "preset"  # trial_id of a method's preset run in the summary and MLflow


def method(spec: MethodSpec) -> UnlearningMethod:
    return METHODS.get(spec.name)()


def setting(model: str, dataset: str, scenario_kind: str, recipe: dict[str, Any] | None = None) -> Setting:
    """What the presets of a job's methods depend on: the family of its model (the paper's CNN: mnist;
    a ResNet: cifar), its dataset, the scenario's kind and the original's training recipe (None: loaded)."""
    return Setting(model_family(model), dataset, scenario_kind, recipe)


def preset_name(spec: MethodSpec, at: Setting) -> str | None:
    """The preset trials start from (the method's default unless named; None for ``none``)."""
    if spec.preset == NO_PRESET:
        return None
    return spec.preset or (method(spec).preset_names(at) or [None])[0]


def base_params(spec: MethodSpec, at: Setting) -> MethodParams:
    """The complete parameters of the method's preset run, as the method's own typed ``Params``: preset
    (or defaults), then ``params``. This is where a job's parameters become typed; they cross the Ray
    boundary as this model and are not validated again."""
    m = method(spec)
    name = preset_name(spec, at)
    base = m.preset(name, at) if name else {}
    return m.Params.model_validate({**base, **spec.params})


def other_presets(spec: MethodSpec, at: Setting) -> list[tuple[str, MethodParams]]:
    """The method's other known presets (trial ids ``preset-<name>``, the job's overrides applied): the
    search starts from all of them, e.g. both families of CaMU."""
    m = method(spec)
    chosen = preset_name(spec, at)
    return [(f"{PRESET_TRIAL}-{name}", m.Params.model_validate({**m.preset(name, at), **spec.params}))
            for name in m.preset_names(at) if name != chosen]


def with_values(params: MethodParams, values: dict[str, Any]) -> MethodParams:
    """``params`` with some values replaced (a configuration a search sampled), validated by the same
    typed ``Params``: the one place where a sampled dict becomes a method's parameters."""
    return type(params).model_validate({**params.model_dump(), **values})


def method_catalogue(kinds: list[str]) -> list[dict[str, Any]]:
    """Every registered method with its presets per family and scenario kind (values, the reference file
    they come from, notes), its search space and the differences from its reference it keeps on purpose:
    what ``camu-orch ls methods`` prints, so that presets can be checked without reading code."""
    from camu.models import FAMILIES

    out = []
    for name, description in METHODS.describe().items():
        cls = METHODS.get(name)
        m = cls()
        presets = []
        for family in FAMILIES:
            for kind in kinds:
                if check_applicable(name, kind, has_initial=True):
                    continue
                at = Setting(family, "", kind)
                for preset in m.preset_names(at):
                    entry = m.preset_entry(preset, at)
                    presets.append({"preset": preset, "family": family, "scenario_kind": kind,
                                    "values": m.preset(preset, at), "source": entry.source, "note": entry.note})
        out.append({"name": name, "description": description, "scenario_kinds": list(cls.scenario_kinds or kinds),
                    "presets": presets, "space": dict(cls.space), "deviations": list(cls.deviations)})
    return out


def search_space(spec: MethodSpec) -> SearchSpace:
    """The job's space for the method, else the method's documented default."""
    return SearchSpace.parse(method(spec).space if spec.sweep.space is None else spec.sweep.space)


def method_errors(i: int, spec: MethodSpec, dataset: str | None, model: str | None,
                  scenario_kinds: list[tuple[str, str]], loaded_original: bool,
                  recipe: dict[str, Any] | None = None) -> list[str]:
    """Problems of ``methods.i`` for this job's dataset, model and scenarios (name, kind); presets are
    checked only when the dataset and the model are known names. ``recipe``: how the original is trained
    (None when it is loaded, or unknown)."""
    prefix = f"methods.{i}"
    if spec.name not in METHODS:
        return [f"{prefix}.name: unknown method {spec.name[:40]!r}; choose one of {', '.join(METHODS.names())}"]
    m = method(spec)
    errors = model_errors(f"{prefix}.params", m.Params, spec.params, "unknown parameter of " + spec.name)
    for scenario, kind in scenario_kinds:
        if not spec.runs_on(scenario):
            continue
        reason = check_applicable(spec.name, kind, has_initial=not loaded_original)
        if reason:
            fitting = [n for n, k in scenario_kinds if not check_applicable(spec.name, k, not loaded_original)]
            fix = (f"run it on those it fits with scenarios: {fitting}, or drop it"
                   if fitting and "defined only" in reason else "drop it from this job")
            errors.append(f"{prefix}: {reason} (scenario {scenario}); {fix}")
            continue
        if dataset is None or model is None or model not in MODELS:
            continue
        at = setting(model, dataset, kind, recipe)
        known = m.preset_names(at)
        if spec.preset not in (None, NO_PRESET) and spec.preset not in known:
            errors.append(f"{prefix}.preset: {spec.preset!r} is not a preset of {spec.name}; presets: "
                          f"{', '.join(known + [NO_PRESET])}")
        elif not errors:
            try:
                problem = m.original_problem(at.recipe, base_params(spec, at))
            except ValidationError as err:
                errors += format_validation_error(err, f"{prefix}.params", extra_key="unknown parameter")
            else:
                if problem:
                    errors.append(f"{prefix}: {problem}")
    errors += search_space(spec).problems_for(f"{prefix}.sweep.space", spec.name, m.Params)
    return list(dict.fromkeys(errors))
