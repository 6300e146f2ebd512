"""Device placement, mixed precision and data-parallel plumbing (pure torch.distributed).

Image models and batches are channels_last on every device (on CUDA, faster convolutions under bf16;
on CPU, oneDNN's convolutions and max-pooling: 1.56x faster training and 2.14x faster inference of the
paper's CNN, benchmarks/memory_format.py); bf16 autocast is on for CUDA only, unless the process's
precision is set to fp32 (``set_precision``: reproduction jobs run in the references' fp32).
``Shard`` describes this process's place in a data-parallel group: each global batch is split
by rank so that W workers at global batch B see exactly the samples one worker would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the local CUDA device when one exists, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            return torch.device("cuda", index)
        return torch.device("cpu")
    return torch.device(name)


PRECISIONS = ("bf16", "fp32")
_precision = {"value": "bf16"}  # of this process: one job, one precision (set by every worker from its config)


def set_precision(precision: str) -> None:
    """Set this process's compute precision on CUDA: ``bf16`` (autocast) or ``fp32`` (none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    _precision["value"] = precision


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (unless this process's precision is fp32), a no-op elsewhere."""
    if device.type == "cuda" and _precision["value"] == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


CHANNELS_LAST = True  # the memory format of image models and batches (benchmarks/memory_format.py flips it)


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` with its 4-d weights channels_last (see the module docstring)."""
    if CHANNELS_LAST:
        return model.to(device=device, memory_format=torch.channels_last)
    return model.to(device=device, memory_format=torch.contiguous_format)


def place_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Match ``place_model``'s memory format for image batches."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last if CHANNELS_LAST else torch.contiguous_format)
    return x


@dataclass(frozen=True)
class Shard:
    """This process's rank in a data-parallel group of ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Shard:
        """The group set up by torch.distributed (Ray Train, torchrun), or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch (strided, so parts differ by at most one sample)."""
        return batch[self.rank:: self.world_size]


def global_batches(n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True,
                   min_size: int = 1) -> list[torch.Tensor]:
    """Positions 0..n-1 cut into global batches; a last batch smaller than ``min_size`` is dropped
    (so every rank of a group gets at least one sample and all ranks take the same number of steps)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = list(torch.split(order, batch_size))
    if batches and len(batches[-1]) < min_size:
        batches.pop()
    return batches


def sync_gradients(params: Iterator[nn.Parameter] | list[nn.Parameter], shard: Shard) -> None:
    """Average gradients over the group with one flattened all-reduce (no-op for one process).

    Parameters without a gradient (untouched by this step's loss) stay without one on every rank,
    so optimizers skip them exactly as in single-process training.
    """
    if shard.world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= shard.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(model: nn.Module, shard: Shard) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if shard.world_size == 1:
        return
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a CPU generator for data order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily switch ``model`` to eval mode, restoring its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the whole data-parallel group: with W workers each rank sees B/W samples,
    so plain BatchNorm would normalise (and update its running statistics) with a different mean and
    variance on every rank than one worker at batch B. The group's sums go through a differentiable
    all-reduce, on gloo / CPU as on NCCL (torch's SyncBatchNorm is CUDA-only). Outside a group, or in
    eval mode, it is plain BatchNorm; its state dict is BatchNorm's."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([xf.numel() / channels], device=x.device)
        stats = all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))  # sums over the group
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels: 2 * channels] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(factor * mean.detach().to(self.running_mean.dtype))
                unbiased = var.detach() * total / (total - 1).clamp_min(1)
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(self.running_var.dtype))
        shape = (1, channels) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm replaced by ``SyncBatchNorm`` (same parameters and buffers)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.to(next(child.buffers(), torch.empty(0)).device)
            sync.train(child.training)
            setattr(model, name, sync)
        else:
            sync_batch_norm(child)
    return model
