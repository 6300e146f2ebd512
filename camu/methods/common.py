"""Pieces the baseline methods share: their usual optimisation parameters and the passes over D_r
and D_f that most of them make (each step through ``Run``, so data parallelism and mixed precision
come from the shared loop)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch
from pydantic import Field

from camu.methods.base import MethodParams, Run

# Tags of the per-epoch generators (data order, random labels...), so that streams never collide.
TAG_RETAIN, TAG_FORGET, TAG_LABELS, TAG_SUBSET, TAG_MIXED = 11, 12, 13, 14, 15


class OptimParams(MethodParams):
    """Optimisation settings common to the baselines (SalUn / Unlearn-Sparse defaults: SGD with momentum
    0.9 and weight decay 5e-4, batch 256)."""

    epochs: int = Field(10, ge=1, le=200, description="passes over the method's data")
    lr: float = Field(0.01, gt=0, le=10.0, description="learning rate")
    batch_size: int = Field(256, ge=1, le=65536, description="global batch over all workers")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd (with momentum) or adam")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, le=1.0, description="weight decay")


def passes(run: Run, indices: torch.Tensor, batch_size: int,
           tag: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """One shuffled pass over the training samples ``indices``: (global batch size, images, labels) of
    this rank's share of each global batch."""
    batches = run.batches(len(indices), batch_size, run.generator(tag))
    local = [indices[run.local(b)] for b in batches]
    for batch, (x, y) in zip(batches, run.stream(local)):
        yield len(batch), x, y


def cross_entropy_pass(run: Run, indices: torch.Tensor, batch_size: int, tag: int, sign: float = 1.0,
                       name: str = "loss", extra: Callable[[], torch.Tensor] | None = None,
                       grad_mask: dict[str, torch.Tensor] | None = None) -> None:
    """A pass of ``sign`` x mean cross-entropy steps (sign -1: gradient ascent), plus ``extra()``."""
    for size, x, y in passes(run, indices, batch_size, tag):
        logits, _ = run.forward(run.model, x)
        loss = sign * run.mean(torch.nn.functional.cross_entropy(logits.float(), y, reduction="none"), size)
        if extra is not None:
            loss = loss + extra()
        run.step(loss, grad_mask=grad_mask)
        run.record(name, loss)
