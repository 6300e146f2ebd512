"""Supervised training of the original model and of the retrain oracle (same recipe, on D_r).

Plain PyTorch: data parallelism comes from the caller having initialised torch.distributed
(Ray Train does); the model is then wrapped in DistributedDataParallel and each rank takes its
slice of every global batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from camu import optim
from camu.data.sources import Source
from camu.losses import cross_entropy
from camu.runtime import (
    Shard,
    autocast,
    broadcast_module,
    global_batches,
    place_input,
    place_model,
    sync_batch_norm,
)
from camu.schema import Seed, StrictModel

TrainCallback = Callable[[int, dict[str, float], dict[str, Any]], None]
StepCallback = Callable[[int, nn.Module], None]  # (optimizer steps taken by this call, the unwrapped model)
AUGMENT_SEED = 1 << 40  # offset of the augmentation generators' seeds from the data-order ones


class TrainRecipe(StrictModel):
    """How the original (and therefore the oracle) is trained. Defaults: the official recipe."""
    epochs: int = Field(20, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=65536, description="global batch over all workers")
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    seed: Seed = Field(0, description="seed of initialisation and data order")
    optimizer: Literal["adam", "sgd"] = Field(
        "adam", description="adam (the official CaMU recipe) or sgd (plain SGD, as Unrolling SGD's correction "
                            "assumes)")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (optimizer: sgd only)")

    @model_validator(mode="after")
    def _momentum_needs_sgd(self) -> TrainRecipe:
        if self.momentum and self.optimizer != "sgd":
            raise ValueError("momentum: applies to optimizer: sgd only; remove it or set optimizer: sgd")
        return self

    def key_fields(self) -> dict[str, Any]:
        """The recipe as it enters cache keys: the optimizer fields only where they differ from the
        defaults, so that models trained before they existed keep their keys."""
        values = self.model_dump()
        if self.optimizer == "adam" and not self.momentum:
            values.pop("optimizer"), values.pop("momentum")
        return values


def make_training_optimizer(params: Any, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` (``camu.optim.optimizer``: fused Adam or SGD)."""
    return optim.optimizer(params, recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay)


@dataclass
class TrainStats:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_classifier(model: nn.Module, source: Source, indices: torch.Tensor, recipe: TrainRecipe,
                     device: torch.device, shard: Shard | None = None, on_epoch: TrainCallback | None = None,
                     resume_state: dict[str, Any] | None = None, sync_batchnorm: bool = True,
                     on_step: StepCallback | None = None) -> TrainStats:
    """Train ``model`` in place with the recipe's optimizer on ``source[indices]``; returns per-epoch mean losses.
    An augmented source (``source.view.augment``) gets a fresh draw of its view's augmentation every epoch.

    ``on_epoch(epoch, metrics, state)`` receives a resumable state (model, optimizer, epoch).
    ``on_step(step, model)`` is called after every optimizer step, with the number of steps this call
    has taken so far (1, 2, ...; it counts on across epochs) and the model being trained (in train mode:
    a callback that evaluates should use ``camu.runtime.eval_mode``, which restores it).
    """
    shard = shard or Shard.current()
    if shard.world_size > 1 and sync_batchnorm:
        sync_batch_norm(model)  # in place: BatchNorm statistics over the whole global batch
    model = place_model(model, device)
    broadcast_module(model, shard)
    net = DistributedDataParallel(model) if shard.world_size > 1 else model
    optimizer = make_training_optimizer(model.parameters(), recipe)
    start, steps = 0, 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        start = int(resume_state["epoch"]) + 1
    stats = TrainStats()
    t0 = time.perf_counter()
    for epoch in range(start, recipe.epochs):
        net.train()
        g = torch.Generator().manual_seed(recipe.seed * 7919 + epoch)
        batches = [shard.take(indices[b]) for b in global_batches(len(indices), recipe.batch_size, g,
                                                                  min_size=shard.world_size)]
        crops = None
        if source.view.augment:  # one draw per sample and epoch, the same on every rank
            draws = torch.Generator().manual_seed(recipe.seed * 7919 + epoch + AUGMENT_SEED)
            table = source.view.draw(len(source), draws)
            crops = [table[b] for b in batches]
        total = torch.zeros((), device=device)
        for x, y in source.batches(batches, device, crops):
            with autocast(device):
                logits, _ = net(place_input(x, device))
            loss = cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            steps += 1
            if on_step is not None:
                on_step(steps, model)
        stats.losses.append(float(total) / max(len(batches), 1))
        if on_epoch is not None:
            on_epoch(epoch, {"train_loss": stats.losses[-1]},
                     {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch})
    stats.seconds = time.perf_counter() - t0
    return stats
