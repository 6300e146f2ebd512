"""The unlearning-method interface and registry.

A method is a small class with a typed ``Params`` model and ``run(ctx, params)``. The shared
context carries the frozen original, the data, the split and the data-parallel shard; methods
report each finished epoch through ``ctx.on_epoch`` so that orchestration can log and checkpoint
without the method knowing about Ray or MLflow.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from camu.data.datasets import ImageData
from camu.registry import Registry
from camu.runtime import Shard, place_model
from camu.schema import StrictModel

EpochCallback = Callable[[int, dict[str, float], dict[str, Any]], None]
"""on_epoch(epoch, metrics, state): ``state`` is a torch-serialisable dict to resume from. Its tensors
alias the live model and optimizers: serialise (or copy) them before returning."""


class MethodParams(StrictModel):
    """Base of every method's parameters: unknown keys, non-finite numbers and booleans for numbers
    are errors."""


@dataclass
class UnlearnContext:
    """Everything a method needs, independent of how it is launched."""

    original: nn.Module
    data: ImageData
    forget: torch.Tensor
    retain: torch.Tensor
    device: torch.device
    seed: int = 0
    shard: Shard = field(default_factory=Shard)
    on_epoch: EpochCallback | None = None
    resume_state: dict[str, Any] | None = None

    def epoch_generator(self, tag: int, epoch: int) -> torch.Generator:
        """A CPU generator that depends only on (seed, tag, epoch): identical on every rank and
        after a resume."""
        return torch.Generator().manual_seed((self.seed * 1_000_003 + tag * 10_007 + epoch) % (2**63))

    def report(self, epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics, state)


@dataclass
class UnlearnResult:
    """The unlearned model (unwrapped, on the context's device), its wall time and per-step history."""

    model: nn.Module
    seconds: float
    history: dict[str, list[float]]


class UnlearningMethod(Protocol):
    """What every registered method provides."""

    Params: ClassVar[type[MethodParams]]

    def run(self, ctx: UnlearnContext, params: MethodParams) -> UnlearnResult:
        """Unlearn ``ctx.forget`` from a copy of ``ctx.original``; never modify the original."""
        ...


METHODS: Registry[type] = Registry("method")


def trainable_copy(original: nn.Module, device: torch.device) -> nn.Module:
    """A fresh, trainable copy of the original on ``device``."""
    model = place_model(copy.deepcopy(original), device)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def frozen_copy(original: nn.Module, device: torch.device) -> nn.Module:
    """The reference f0: a copy of the original on ``device``, eval mode, no gradients.
    (A copy, so that the caller's model is never switched to eval or frozen.)"""
    model = place_model(copy.deepcopy(original), device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class Stopwatch:
    """Wall time of the unlearning itself, CUDA work included (evaluation is timed apart)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0.0

    def __enter__(self) -> Stopwatch:
        self._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self.start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def run_method(name: str, params: dict | MethodParams | None, ctx: UnlearnContext) -> UnlearnResult:
    """Validate ``params`` for method ``name`` and run it."""
    cls = METHODS.get(name)
    if not isinstance(params, MethodParams):
        params = cls.Params.model_validate(params or {})
    return cls().run(ctx, params)
