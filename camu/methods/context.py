"""What an unlearning method is given and what it returns, independent of how it is launched: the
context (original, data, D_f / D_r, device, data-parallel shard, resume state), the result, the base of
every method's typed parameters, and the copies of the original a method works on. The bottom of
``camu.methods``: it imports no method, no registry and no loop.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from typing_extensions import Self

from camu.data.datasets import ImageData
from camu.runtime import Shard, place_model
from camu.schema import StrictModel

EpochCallback = Callable[[int, dict[str, float], dict[str, Any], nn.Module], None]
"""on_epoch(epoch, metrics, state, model): ``state`` is a torch-serialisable dict to resume from (its
tensors alias the live model and optimizers: serialise them before returning); ``model`` is the live
model being unlearned (use it read-only, in eval mode, under no_grad)."""


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

    def __enter__(self) -> Self:
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
