"""The two optimizers every training and unlearning loop uses, built with torch's fused kernels where the
parameters allow it.

torch's default Adam on the CPU is its per-tensor Python loop: about ten tensor operations per parameter per
step, which on the paper's small CNN cost as much as the forward pass (measured on 2 CPU threads: 18 ms a
step against 0.4 ms fused; CaMU's random removal on full Fashion-MNIST spent 17% of its time there). The
fused kernel computes the same update (torch's reference formula; one step differs by float rounding,
about 1e-8), so every loop gets it where torch has it: floating-point parameters on the CPU or a CUDA
device, all on one device type.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

FUSED_DEVICES = frozenset({"cpu", "cuda"})


def fused_supported(parameters: list[nn.Parameter]) -> bool:
    """True when torch's fused Adam/SGD kernels take these parameters: floating point, one device type
    among ``FUSED_DEVICES``."""
    kinds = {p.device.type for p in parameters}
    return (len(kinds) == 1 and kinds <= FUSED_DEVICES
            and all(p.is_floating_point() for p in parameters))


def adam(parameters: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """torch.optim.Adam (L2 weight decay added to the gradient, as torch's Adam), fused where supported."""
    params = list(parameters)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused_supported(params) or None)


def sgd(parameters: Iterable[nn.Parameter], lr: float, momentum: float = 0.0,
        weight_decay: float = 0.0) -> torch.optim.SGD:
    """torch.optim.SGD (with optional momentum and L2 weight decay), fused where supported."""
    params = list(parameters)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           fused=fused_supported(params) or None)


def optimizer(parameters: Iterable[nn.Parameter], kind: str, lr: float, momentum: float = 0.0,
              weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``adam`` or ``sgd`` (momentum used by SGD only) by name, as a method's or a recipe's fields give it."""
    if kind == "adam":
        return adam(parameters, lr, weight_decay)
    if kind == "sgd":
        return sgd(parameters, lr, momentum, weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; choose adam or sgd")
