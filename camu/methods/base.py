"""The unlearning-method interface and registry.

A method is a small class: a typed ``Params`` model, its published presets, its documented search
space, and the part of training that is its own (``prepare`` for frozen models or masks, ``epoch`` for
its losses and steps, optionally ``optimizers`` and ``adapt``/``finish`` for the model itself).
Everything else (copies of the original, optimizers, autocast and channels_last, data-parallel
sharding and gradient sync, resume state, epoch reporting and the unlearning stopwatch) lives in one
place, ``camu.loop``. Adding a method is one module plus one import in ``camu/methods/__init__.py``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from camu.data.datasets import ImageData
from camu.registry import Registry
from camu.runtime import Shard, place_model
from camu.schema import StrictModel

if TYPE_CHECKING:
    from camu.loop import Run

EpochCallback = Callable[[int, dict[str, float], dict[str, Any], nn.Module], None]
"""on_epoch(epoch, metrics, state, model): ``state`` is a torch-serialisable dict to resume from (its
tensors alias the live model and optimizers: serialise them before returning); ``model`` is the live
model being unlearned (use it read-only, in eval mode, under no_grad)."""


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


class MethodParams(StrictModel):
    """Base of every method's parameters: unknown keys, non-finite numbers and booleans for numbers
    are errors."""


@dataclass
class UnlearnContext:
    """Everything a method needs, independent of how it is launched.

    ``initial`` is the original model's initialisation (before training), for methods that replay the
    training trajectory; None when the original was loaded rather than trained by the job.
    """

    original: nn.Module
    data: ImageData
    forget: torch.Tensor
    retain: torch.Tensor
    device: torch.device
    seed: int = 0
    shard: Shard = field(default_factory=Shard)
    on_epoch: EpochCallback | None = None
    resume_state: dict[str, Any] | None = None
    initial: nn.Module | None = None
    sync_batchnorm: bool = True  # with several workers, BatchNorm statistics over the whole global batch

    def epoch_generator(self, tag: int, epoch: int) -> torch.Generator:
        """A CPU generator that depends only on (seed, tag, epoch): identical on every rank and
        after a resume."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + tag * 10_007 + epoch) % (2**63))


@dataclass
class UnlearnResult:
    """The unlearned model (unwrapped, on the context's device), its wall time, per-step history and the
    number of epochs of the run (the step at which final metrics belong)."""

    model: nn.Module
    seconds: float
    history: dict[str, list[float]]
    epochs: int = 0
    members: torch.Tensor | None = None  # D_s, the remaining samples the run used (None: the default draw)
    report_seconds: float = 0.0  # time spent in ``on_epoch`` (excluded from ``seconds``)


class MethodError(ValueError):
    """A method asked for something the job cannot give (a scenario kind, the original's initial weights)."""


class UnlearningMethod:
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

    def original_problem(self, recipe: dict[str, Any] | None, params: dict[str, Any]) -> str | None:
        """Why this method cannot unlearn an original trained with ``recipe`` (None: a loaded original)
        at ``params``, or None; default: any original will do."""
        return None

    def num_epochs(self, params: MethodParams) -> int:
        return int(params.epochs)  # type: ignore[attr-defined]

    def adapt(self, model: nn.Module, ctx: UnlearnContext, params: MethodParams) -> nn.Module:
        """Change the trainable copy before optimizers exist (e.g. an extra output); default: as is."""
        return model

    def optimizers(self, model: nn.Module, params: MethodParams) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name; default: one, built from ``optimizer``/``lr``/``momentum``/``weight_decay``."""
        from camu.loop import make_optimizer

        return {"main": make_optimizer(model.parameters(), params)}

    def prepare(self, run: Run, params: MethodParams) -> None:
        """Once before the first epoch (and again on resume): frozen models, masks, fixed targets."""

    def epoch(self, run: Run, params: MethodParams, epoch: int) -> None:
        """One epoch of this method's steps (``run.step``), recording losses with ``run.record``."""
        raise NotImplementedError

    def finish(self, run: Run, params: MethodParams) -> nn.Module:
        """The model to return (default: the trainable copy as it is)."""
        return run.model

    def members(self, run: Run) -> torch.Tensor | None:
        """D_s, the remaining samples the official MIA treats as members: those this run drew for its
        counterfactuals (CaMU); None for the default draw (``camu.evaluation.default_members``)."""
        return None


METHODS: Registry[type[UnlearningMethod]] = Registry("method")


def trainable_copy(original: nn.Module, device: torch.device) -> nn.Module:
    """A fresh, trainable copy of the original on ``device``."""
    model = place_model(copy.deepcopy(original), device)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def frozen_copy(original: nn.Module, device: torch.device, train_mode: bool = False) -> nn.Module:
    """A reference copy of ``original`` on ``device`` without gradients (eval mode unless ``train_mode``).
    A copy, so that the caller's model is never switched to eval or frozen."""
    model = place_model(copy.deepcopy(original), device)
    model.train(train_mode)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reinitialised_copy(original: nn.Module, device: torch.device, seed: int) -> nn.Module:
    """A copy of ``original``'s architecture with fresh, seeded weights (every module's own
    ``reset_parameters``), e.g. an incompetent teacher or a model trained from scratch."""
    model = copy.deepcopy(original)
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
            module.reset_parameters()
    return place_model(model, device)


class Stopwatch:
    """Wall time of the unlearning itself, CUDA work included (evaluation is timed apart)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self.start

    def elapsed(self) -> float:
        """Seconds since ``__enter__`` (the device synchronised first), while the watch still runs."""
        self._sync()
        return time.perf_counter() - self.start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def method_class(name: str) -> type[UnlearningMethod]:
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


def run_method(name: str, params: dict | MethodParams | None, ctx: UnlearnContext) -> UnlearnResult:
    """Validate ``params`` for method ``name`` and run it through the shared loop."""
    from camu.loop import run_unlearning

    cls = METHODS.get(name)
    if not isinstance(params, MethodParams):
        params = cls.Params.model_validate(params or {})
    return run_unlearning(cls(), params, ctx)
