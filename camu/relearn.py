"""Relearning, the robustness check the CaMU paper plots: continue training the unlearned model on D_r
and watch forget accuracy. A method that only hid D_f (NegGrad, Boundary, TS in the paper) gets it back
within a few epochs; one that removed it stays at the oracle's level. ``relearn_epochs`` is the first
epoch after which FA is within ``margin`` points of the original's FA (0: already there before any
relearning; ``epochs + 1``: not within the cap).

With ``gap_every_batches`` set, relearning also records the gap acc(D_r) - acc(D_f) (points) before the
first optimizer step and after every ``gap_every_batches`` steps, the curve the paper's relearning figure
draws (one epoch of Adam, lr 1e-3, weight decay 1e-4, every 100 batches). acc(D_r) is measured on a fixed
random sample of D_r (``gap_retain_sample``, drawn with the relearn seed; all of D_r when smaller), acc(D_f)
on all of D_f: evaluating all of D_r every 100 batches would cost more than the relearning itself (a forward
pass over ~54,000 samples per 3,200 trained on, on Fashion-MNIST), while 2,000 samples put acc(D_r) within
about +-1 point (binomial standard error at 95% accuracy: 0.5 points)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

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
    weight_decay: float = Field(0.0, ge=0, le=1, description="Adam's weight decay (torch.optim.Adam's, L2 added "
                                                             "to the gradient)")
    gap_every_batches: int | None = Field(None, ge=1, le=10**7, description="record acc(D_r) - acc(D_f) before "
                                          "relearning and every this many optimizer steps (None: not recorded)")
    gap_retain_sample: int = Field(2000, ge=1, le=10**7, description="size of the fixed random sample of D_r "
                                   "that acc(D_r) of the gap is measured on (all of D_r when smaller)")


@dataclass
class Relearning:
    fa_curve: list[float]  # FA after 0, 1, ..., epochs epochs of relearning
    relearn_epochs: int
    # (optimizer step, acc(D_r sample) - acc(D_f) in points) at step 0 and every gap_every_batches steps;
    # empty unless params.gap_every_batches is set
    gap_curve: list[tuple[int, float]] = field(default_factory=list)


def relearn(model: nn.Module, data: ImageData, forget: torch.Tensor, retain: torch.Tensor, original_fa: float,
            params: RelearnParams, device: torch.device, seed: int = 0) -> Relearning:
    """Train a copy of ``model`` on D_r for ``params.epochs`` epochs, recording FA after each (and the
    gap acc(D_r sample) - acc(D_f) every ``params.gap_every_batches`` steps when set)."""
    y_forget = data.train.labels.cpu()[forget]
    fa0 = accuracy(predict_logits(model, data.train, forget, device), y_forget)
    curve = [fa0]
    copy_ = copy.deepcopy(model)
    recipe = TrainRecipe(epochs=params.epochs, lr=params.lr, batch_size=params.batch_size,
                         weight_decay=params.weight_decay, seed=seed)
    gaps: list[tuple[int, float]] = []
    on_step = None
    if params.gap_every_batches is not None:
        every = params.gap_every_batches
        sample = gap_retain_sample(retain, params.gap_retain_sample, seed)
        y_sample = data.train.labels.cpu()[sample]

        def gap(net: nn.Module, fa: float | None = None) -> float:
            ra = accuracy(predict_logits(net, data.train, sample, device), y_sample)
            fa = accuracy(predict_logits(net, data.train, forget, device), y_forget) if fa is None else fa
            return ra - fa

        gaps.append((0, gap(model, fa0)))

        def on_step(step: int, net: nn.Module) -> None:
            if step % every == 0:
                gaps.append((step, gap(net)))

    def on_epoch(epoch: int, metrics: dict, state: dict) -> None:
        curve.append(accuracy(predict_logits(copy_, data.train, forget, device), y_forget))

    # one process: evaluation (and so relearning) runs on rank 0 alone
    train_classifier(copy_, data.train, retain, recipe, device, shard=Shard(), on_epoch=on_epoch, on_step=on_step)
    target = original_fa - params.margin
    back = next((e for e, fa in enumerate(curve) if fa >= target), params.epochs + 1)
    return Relearning(curve, back, gaps)


def gap_retain_sample(retain: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """The fixed sample of D_r (indices into the training set) that the gap's acc(D_r) is measured on:
    ``size`` of ``retain`` drawn without replacement with ``seed``, in D_r's order; all of D_r when smaller."""
    if len(retain) <= size:
        return retain
    picked = torch.randperm(len(retain), generator=torch.Generator().manual_seed(seed))[:size]
    return retain[picked.sort().values]
