"""The unlearning-method interface and registry.

A method is a small class: a typed ``Params`` model, its published presets, its documented search
space, and the part of training that is its own (``prepare`` for frozen models or masks, ``epoch`` for
its losses and steps, optionally ``optimizers`` and ``adapt``/``finish`` for the model itself).
Everything else is shared: what a method is given and returns, the copies of the original and the stopwatch
(``camu.methods.context``); batches, data-parallel sharding, autocast and the synchronised optimizer step
(``camu.methods.run.Run``); the default optimizer (``camu.optim``); the trainable copy, resume state and epoch
reporting (``camu.loop``). Adding a method is one module plus one import in ``camu/methods/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from camu.methods.context import (  # re-exported: the names a method module imports from here
    EpochCallback,
    MethodError,
    MethodParams,
    Stopwatch,
    UnlearnContext,
    UnlearnResult,
    frozen_copy,
    reinitialised_copy,
    trainable_copy,
)
from camu.methods.run import Run
from camu.optim import optimizer
from camu.registry import Registry

__all__ = ["METHODS", "EpochCallback", "MethodError", "MethodParams", "P", "Preset", "Run", "Setting", "Stopwatch",
           "UnlearnContext", "UnlearnResult", "UnlearningMethod", "check_applicable", "for_families",
           "frozen_copy", "method_class", "reinitialised_copy", "trainable_copy"]

P = TypeVar("P", bound=MethodParams)
"""A method's own ``Params`` type: ``class CaMU(UnlearningMethod[CamuParams])`` types its hooks' ``params``."""


@dataclass(frozen=True)
class Setting:
    """What a method's reference settings depend on: the model's family (``camu.models.FAMILIES``:
    ``mnist`` for the paper's small CNN, ``cifar`` for a ResNet), the dataset's registry name and the
    scenario's kind."""

    family: str
    dataset: str
    scenario_kind: str
    recipe: dict[str, Any] | None = None  # how the original was trained (None: loaded, not trained by the job)


@dataclass(frozen=True)
class Preset:
    """One published configuration: its values, the reference file (and commit) they come from, and a
    note where the published values need one (e.g. a setting that collapses the model at this scale)."""

    values: dict[str, Any]
    source: str
    note: str = ""


def for_families(values: dict[str, Any], source: str, note: str = "",
                 families: tuple[str, ...] = ("mnist", "cifar")) -> dict[str, Preset]:
    """The same preset for every family (a reference that publishes one setting for all scales)."""
    return {family: Preset(dict(values), source, note) for family in families}


class UnlearningMethod(Generic[P]):
    """Base class of every registered method; see the module docstring.

    Class attributes a method sets:
      ``Params``: its typed parameters; ``presets``: name -> family -> ``Preset``, the reference
      repository's published settings for the small-scale and the CIFAR-scale family (the first name is
      the default preset); ``space``: its documented search space (YAML form,
      ``{param: {loguniform|uniform|randint: [lo, hi]} | {choice: [...]}}``); ``lr_fields``: the
      learning rates that ``lr_scaling: linear`` multiplies; ``scenario_kinds``: the scenario kinds it
      is defined for (None: all); ``needs_initial``: whether it needs the original's initial weights;
      ``reuses_oracle``: the orchestrator reports the cached oracle for it instead of running it;
      ``deviations``: the differences from the reference it keeps on purpose, each with its reason
      (printed by ``camu-orch ls methods``).
    """

    Params: ClassVar[type[MethodParams]]
    presets: ClassVar[dict[str, dict[str, Preset]]] = {}
    space: ClassVar[dict[str, Any]] = {}
    lr_fields: ClassVar[tuple[str, ...]] = ("lr",)
    scenario_kinds: ClassVar[tuple[str, ...] | None] = None
    needs_initial: ClassVar[bool] = False
    reuses_oracle: ClassVar[bool] = False
    deviations: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Presets written as plain values (``{name: {param: value}}``, the shape before model families)
        serve every family, with their source unknown; anything else must be family -> ``Preset``."""
        super().__init_subclass__(**kwargs)
        presets = cls.__dict__.get("presets")
        if not presets:
            return
        shaped: dict[str, dict[str, Preset]] = {}
        for name, entry in presets.items():
            if isinstance(entry, dict) and entry and all(isinstance(v, Preset) for v in entry.values()):
                shaped[name] = entry
            elif isinstance(entry, dict) and not any(isinstance(v, Preset) for v in entry.values()):
                shaped[name] = for_families(entry, f"{cls.__module__}.{cls.__name__} (source not given)")
            else:
                raise TypeError(f"{cls.__name__}.presets[{name!r}] mixes Preset entries and plain values; write "
                                f"family -> Preset (or for_families(values, source))")
        cls.presets = shaped

    # ------------------------------------------------------------------ what a method may override
    def preset_names(self, setting: Setting) -> list[str]:
        """The presets published for ``setting``'s family; the first is the default."""
        return [name for name, families in self.presets.items() if setting.family in families]

    def preset_entry(self, name: str, setting: Setting) -> Preset:
        """Preset ``name`` for ``setting`` as published: values, source, note."""
        known = self.preset_names(setting)
        if name not in known:
            raise MethodError(f"unknown preset {name!r} for the {setting.family} family; presets: "
                              f"{', '.join(known) or 'none'}")
        return self.presets[name][setting.family]

    def preset(self, name: str, setting: Setting) -> dict[str, Any]:
        """The parameters of preset ``name`` (a complete, validated configuration)."""
        return self.Params.model_validate(self.preset_entry(name, setting).values).model_dump()

    def original_problem(self, recipe: dict[str, Any] | None, params: P) -> str | None:
        """Why this method cannot unlearn an original trained with ``recipe`` (None: a loaded original)
        at ``params``, or None; default: any original will do."""
        return None

    def num_epochs(self, params: P) -> int:
        return int(params.epochs)  # type: ignore[attr-defined]  # every method's Params has epochs

    def adapt(self, model: nn.Module, ctx: UnlearnContext, params: P) -> nn.Module:
        """Change the trainable copy before optimizers exist (e.g. an extra output); default: as is."""
        return model

    def optimizers(self, model: nn.Module, params: P) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name; default: one, built from ``optimizer``/``lr``/``momentum``/``weight_decay``."""
        return {"main": optimizer(model.parameters(), getattr(params, "optimizer", "sgd"),
                                  params.lr,  # type: ignore[attr-defined]  # a method without lr overrides this
                                  getattr(params, "momentum", 0.0), getattr(params, "weight_decay", 0.0))}

    def prepare(self, run: Run, params: P) -> None:
        """Once before the first epoch (and again on resume): frozen models, masks, fixed targets."""

    def epoch(self, run: Run, params: P, epoch: int) -> None:
        """One epoch of this method's steps (``run.step``), recording losses with ``run.record``."""
        raise NotImplementedError

    def finish(self, run: Run, params: P) -> nn.Module:
        """The model to return (default: the trainable copy as it is)."""
        return run.model

    def members(self, run: Run) -> torch.Tensor | None:
        """D_s, the remaining samples the official MIA treats as members: those this run drew for its
        counterfactuals (CaMU); None for the default draw (``camu.evaluation.default_members``)."""
        return None


METHODS: Registry[type[UnlearningMethod[Any]]] = Registry("method")


def method_class(name: str) -> type[UnlearningMethod[Any]]:
    """The registered method class ``name`` (``UnknownNameError`` lists the known names)."""
    return METHODS.get(name)


def check_applicable(name: str, scenario_kind: str, has_initial: bool) -> str | None:
    """Why method ``name`` cannot run on a scenario of ``scenario_kind`` in this job, or None."""
    cls = METHODS.get(name)
    if cls.scenario_kinds is not None and scenario_kind not in cls.scenario_kinds:
        return f"{name} is defined only for {' / '.join(cls.scenario_kinds)} scenarios, not {scenario_kind!r}"
    if cls.needs_initial and not has_initial:
        return (f"{name} replays the original's training from its initial weights, which a loaded original "
                f"(original.uri) does not have; train the original in the job (original.recipe) to use it")
    return None
