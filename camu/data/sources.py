"""Image sources: where the pixels of one split live and how batches of them are fetched.

Three kinds exist (the third, ``camu.data.prepared.PreparedSource``: uint8 shards memory-mapped from the
decoded-once cache of an image folder). ``TensorSource`` holds the whole split as one tensor
(normalised floats, or bytes normalised batch by batch), which can be moved to the GPU once (datasets that
fit: digits, MNIST, CIFAR). ``LazySource`` wraps a torch
``Dataset`` that decodes files on demand (ImageNet-style trees); batches come from a
multi-process ``DataLoader``. Both expose the labels as a tensor so that scenarios can be
built without touching pixels, and both apply the split's ``ImageView`` to what they return: the
evaluation view by default, per-sample random crops when a method passes them (training batches of
an augmented dataset, see ``camu.data.views``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from camu.data.pixels import BytesToInputs
from camu.data.prepared import PreparedSource
from camu.data.views import PLAIN_VIEW, ImageView

CropBatches = Sequence[torch.Tensor | None] | None  # per index batch: its (n, 5) crops, or None (evaluation view)


@dataclass
class TensorSource:
    """A split held in memory (or GPU-resident): ``images`` (N, C, H, W) at their stored size, either float and
    already normalised, or uint8 (a quarter of the bytes: MNIST, Fashion-MNIST, CIFAR) turned into normalised
    floats batch by batch by ``inputs``, with the same values as a split normalised whole."""

    images: torch.Tensor
    labels: torch.Tensor
    view: ImageView = PLAIN_VIEW
    inputs: BytesToInputs | None = None  # uint8 images: their normalisation

    def __post_init__(self) -> None:
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if (self.images.dtype == torch.uint8) != (self.inputs is not None):
            raise ValueError("uint8 images need their normalisation (inputs), and only they take one")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> TensorSource:
        """A copy resident on ``device`` (one transfer; later batches are pure indexing)."""
        return TensorSource(self.images.to(device), self.labels.to(device), self.view, self.inputs)

    def fetch(self, indices: torch.Tensor, device: torch.device, crops: torch.Tensor | None = None) -> torch.Tensor:
        """Model inputs of the samples at ``indices`` on ``device``: the evaluation view, or ``crops``."""
        idx = indices.to(self.images.device)
        images = self.images.index_select(0, idx).to(device, non_blocking=True)
        return self.view(self.inputs(images) if self.inputs is not None else images, crops)

    def batches(
        self, index_batches: Sequence[torch.Tensor], device: torch.device, crops: CropBatches = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) for each index batch, on ``device`` (``crops``: one entry per batch)."""
        for i, idx in enumerate(index_batches):
            yield (self.fetch(idx, device, crops[i] if crops is not None else None),
                   self.labels.index_select(0, idx.to(self.labels.device)).to(device))


class _IndexBatchSampler:
    """Feeds precomputed index batches to a DataLoader as a batch sampler."""

    def __init__(self, index_batches: Sequence[torch.Tensor]) -> None:
        self.index_batches = [b.tolist() for b in index_batches]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.index_batches)

    def __len__(self) -> int:
        return len(self.index_batches)


@dataclass
class LazySource:
    """A split decoded on demand from a torch ``Dataset`` returning (image, label)."""

    dataset: Dataset
    labels: torch.Tensor
    num_workers: int = 4
    view: ImageView = PLAIN_VIEW

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> LazySource:
        """Lazy sources stay on the host; batches are moved as they are produced."""
        return self

    def fetch(self, indices: torch.Tensor, device: torch.device, crops: torch.Tensor | None = None) -> torch.Tensor:
        """Model inputs of the samples at ``indices`` on ``device`` (decoded in this process)."""
        images = [self.dataset[int(i)][0] for i in indices.tolist()]
        return self.view(torch.stack(images).to(device), crops)

    def batches(
        self, index_batches: Sequence[torch.Tensor], device: torch.device, crops: CropBatches = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) per index batch, decoded by DataLoader workers, viewed on ``device``."""
        loader = DataLoader(
            self.dataset,
            batch_sampler=_IndexBatchSampler(index_batches),
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        for i, (images, labels) in enumerate(loader):
            yield (self.view(images.to(device, non_blocking=True), crops[i] if crops is not None else None),
                   labels.long().to(device, non_blocking=True))


Source = TensorSource | LazySource | PreparedSource
