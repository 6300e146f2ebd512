"""``Run``: the state of one unlearning run as a method's ``prepare``/``epoch``/``finish`` see it, with the
helpers that must behave the same for every method (global batches, this rank's share, the epoch's
augmentation draw, autocast forwards, group-mean losses, a synchronised optimizer step, per-epoch losses).
``camu.loop`` creates it; methods only use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from camu.methods.context import UnlearnContext
from camu.runtime import autocast, global_batches, place_input, sync_gradients

TAG_AUGMENT = 97  # generator tag of the per-epoch augmentation draws


@dataclass
class Run:
    """The state of one unlearning run as a method sees it."""

    ctx: UnlearnContext
    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    extra: dict[str, Any] = field(default_factory=dict)  # method state that must survive a resume
    epoch: int = 0
    _losses: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    _crop_table: torch.Tensor | None = None
    _crop_epoch: int = -1

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def world(self) -> int:
        return self.ctx.shard.world_size

    def generator(self, tag: int, epoch: int | None = None) -> torch.Generator:
        """A generator identical on every rank and after a resume (see ``UnlearnContext``)."""
        return self.ctx.epoch_generator(tag, self.epoch if epoch is None else epoch)

    def batches(self, n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True) -> list[torch.Tensor]:
        """Global batches of positions 0..n-1 (a last batch smaller than the group is dropped)."""
        return global_batches(n, batch_size, generator, shuffle=shuffle, min_size=self.world)

    def local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch."""
        return self.ctx.shard.take(batch)

    def crops(self, epoch: int | None = None) -> torch.Tensor | None:
        """This epoch's augmentation draw of every training sample (None when the data is not augmented):
        rows indexed by sample, drawn from a generator shared by every rank."""
        epoch = self.epoch if epoch is None else epoch
        if not self.ctx.data.augmented:
            return None
        if self._crop_epoch != epoch:
            train = self.ctx.data.train
            self._crop_table, self._crop_epoch = train.view.draw(len(train), self.generator(TAG_AUGMENT, epoch)), epoch
        return self._crop_table

    def stream(self, index_batches: list[torch.Tensor], crops: list[torch.Tensor] | None = None,
               augment: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) of training samples, one local batch of indices at a time, on the device.
        On augmented data each sample gets this epoch's draw (``augment``), or the ``crops`` given per
        batch (a draw a method keeps fixed); ``augment=False`` gives the evaluation view."""
        if crops is None and augment and (table := self.crops()) is not None and index_batches:
            table = table.to(index_batches[0].device)  # index where the indices live: no per-step host sync
            crops = [table.index_select(0, idx) for idx in index_batches]
        for x, y in self.ctx.data.train.batches(index_batches, self.device, crops):
            yield place_input(x, self.device), y

    def forward(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) of ``model`` on ``x`` (bf16 autocast on CUDA)."""
        with autocast(self.device):
            return model(x)

    def mean(self, per_sample: torch.Tensor, global_count: int) -> torch.Tensor:
        """This rank's part of a mean over a global batch of ``global_count`` samples: after gradient
        averaging over the group, exactly the gradient of the global mean."""
        return per_sample.float().sum() * (self.world / max(global_count, 1))

    def step(self, loss: torch.Tensor, optimizer: str = "main",
             grad_mask: dict[str, torch.Tensor] | None = None) -> None:
        """zero_grad, backward, average gradients over the group, optionally mask them, step."""
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync_gradients(self.model.parameters(), self.ctx.shard)
        if grad_mask is not None:
            for name, p in self.model.named_parameters():
                if p.grad is not None and name in grad_mask:
                    p.grad.mul_(grad_mask[name])
        opt.step()

    def record(self, name: str, rank_loss: torch.Tensor) -> None:
        """Keep a step's loss as this rank computed it (its group total is taken once per epoch)."""
        self._losses.setdefault(name, []).append(rank_loss.detach().float() / self.world)

    def set_lr(self, optimizer: str, lr: float) -> None:
        for group in self.optimizers[optimizer].param_groups:
            group["lr"] = lr

    def take_losses(self) -> dict[str, list[float]]:
        """The epoch's per-step losses of the whole group: one collective and one host sync."""
        names = sorted(self._losses)
        if not names:
            return {}
        sizes = [len(self._losses[n]) for n in names]
        flat = torch.cat([torch.stack(self._losses[n]) for n in names])
        if self.world > 1:
            dist.all_reduce(flat)
        values = flat.tolist()
        self._losses = {}
        out, start = {}, 0
        for name, size in zip(names, sizes):
            out[name] = values[start: start + size]
            start += size
        return out
