"""8-bit pixels to model inputs, the same on every device: ``ToTensor``'s scaling (``/ 255``) and ``Normalize``
(``(x - mean) / std``) per channel, computed on the CPU with exactly those operations.

Datasets keep their images as bytes (a quarter of float32: the decoded-once cache of an image folder, MNIST,
Fashion-MNIST and CIFAR in memory or GPU-resident) and turn a batch into floats as it is fetched. On the CPU
the batch goes through the operations themselves, so inputs equal those of a split normalised whole as
float32; elsewhere a GPU would divide by multiplying with the reciprocal, which differs in the last bit for
half of the values, so each byte's input is looked up in a per-channel table of the CPU's values (a fast
gather)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class BytesToInputs:
    """Per-channel ``mean``/``std`` normalisation of uint8 (N, C, H, W) batches, bit for bit the CPU's."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32)
        self.std = torch.tensor(list(std), dtype=torch.float32)
        self._tables: dict[str, torch.Tensor] = {}

    def table(self, device: torch.device) -> torch.Tensor:
        """Every byte value's model input per channel (C, 256), computed on the CPU, kept on ``device``."""
        key = str(device)
        if key not in self._tables:
            values = torch.arange(256, dtype=torch.uint8).to(torch.float32).div(255)
            table = torch.stack([values.sub(m).div(s) for m, s in zip(self.mean.tolist(), self.std.tolist(),
                                                                       strict=True)])
            self._tables[key] = table.to(device)
        return self._tables[key]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Model inputs (float32, same shape, same device) of the uint8 ``pixels``."""
        if pixels.device.type == "cpu":
            mean, std = self.mean.view(1, -1, 1, 1), self.std.view(1, -1, 1, 1)
            return pixels.to(torch.float32).div(255).sub_(mean).div_(std)
        table = self.table(pixels.device)
        channel = (torch.arange(table.shape[0], device=pixels.device) * 256).view(1, -1, 1, 1)
        return torch.take(table, pixels.long() + channel)
