"""The form in which a chosen unlearned model is registered in MLflow and served: images in, logits out."""

from __future__ import annotations

import torch
from torch import nn


class LogitsOnly(nn.Module):
    """The served form of a camu model: images in, logits out (the embedding is internal)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]
