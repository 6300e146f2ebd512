"""Relearning, the robustness check the CaMU paper plots: continue training the unlearned model on D_r
and watch forget accuracy. A method that only hid D_f (NegGrad, Boundary, TS in the paper) gets it back
within a few epochs; one that removed it stays at the oracle's level. ``relearn_epochs`` is the first
epoch after which FA is within ``margin`` points of the original's FA (0: already there before any
relearning; ``epochs + 1``: not within the cap)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from pydantic import Field
from torch import nn

from camu.data.datasets import ImageData
from camu.evaluation import predict_logits
from camu.metrics import accuracy
from camu.runtime import Shard
from camu.schema import StrictModel
from camu.training import TrainRecipe, train_classifier


class RelearnParams(StrictModel):
    """How relearning continues training (Adam on D_r, the recipe's optimizer)."""

    epochs: int = Field(5, ge=1, le=100, description="epochs of training on D_r (the cap of relearn_epochs)")
    lr: float = Field(1e-3, gt=0, le=1.0, description="Adam learning rate")
    batch_size: int = Field(32, ge=1, le=65536, description="batch size")
    margin: float = Field(5.0, ge=0, le=100, description="points below the original's FA that count as relearned")


@dataclass
class Relearning:
    fa_curve: list[float]  # FA after 0, 1, ..., epochs epochs of relearning
    relearn_epochs: int


def relearn(model: nn.Module, data: ImageData, forget: torch.Tensor, retain: torch.Tensor, original_fa: float,
            params: RelearnParams, device: torch.device, seed: int = 0) -> Relearning:
    """Train a copy of ``model`` on D_r for ``params.epochs`` epochs, recording FA after each."""
    y_forget = data.train.labels.cpu()[forget]
    curve = [accuracy(predict_logits(model, data.train, forget, device), y_forget)]
    copy_ = copy.deepcopy(model)
    recipe = TrainRecipe(epochs=params.epochs, lr=params.lr, batch_size=params.batch_size, weight_decay=0.0, seed=seed)

    def on_epoch(epoch: int, metrics: dict, state: dict) -> None:
        curve.append(accuracy(predict_logits(copy_, data.train, forget, device), y_forget))

    # one process: evaluation (and so relearning) runs on rank 0 alone
    train_classifier(copy_, data.train, retain, recipe, device, shard=Shard(), on_epoch=on_epoch)
    target = original_fa - params.margin
    back = next((e for e, fa in enumerate(curve) if fa >= target), params.epochs + 1)
    return Relearning(curve, back)
