"""Retrain: the exact-unlearning reference, training the architecture from scratch on D_r only.

In a camu-orch job this method is never run: its row is the cached retrain oracle (trained once per
split with the original's recipe, ``TrainRecipe``), with the oracle's training time, so that naming it
in ``methods:`` costs nothing. Run directly (``run_method("retrain", ...)``) it trains from a fresh
seeded initialisation with the official recipe: Adam lr 1e-3, weight decay 1e-4, batch 32, 20 epochs.
No search space: it is the target the other methods are judged against.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from camu.methods.base import (
    METHODS,
    Preset,
    Run,
    UnlearnContext,
    UnlearningMethod,
    for_families,
    reinitialised_copy,
)
from camu.methods.common import TAG_RETAIN, OptimParams, cross_entropy_pass


class RetrainParams(OptimParams):
    epochs: int = Field(20, ge=1, le=1000, description="training epochs")
    lr: float = Field(1e-3, gt=0, le=10.0, description="learning rate")
    batch_size: int = Field(32, ge=1, le=65536, description="global batch")
    optimizer: Literal["sgd", "adam"] = Field("adam", description="adam (the official recipe) or sgd")
    weight_decay: float = Field(1e-4, ge=0, le=1.0, description="weight decay")


@METHODS.register("retrain", "Retrain from scratch on D_r (in a job: the cached oracle, never trained twice)")
class Retrain(UnlearningMethod[RetrainParams]):
    Params = RetrainParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {
        "recipe": for_families({}, "the job's original.recipe (the oracle is trained with it)")}
    reuses_oracle = True

    def adapt(self, model: nn.Module, ctx: UnlearnContext, params: RetrainParams) -> nn.Module:
        return reinitialised_copy(model, ctx.device, seed=ctx.seed).train()

    def epoch(self, run: Run, params: RetrainParams, epoch: int) -> None:
        cross_entropy_pass(run, run.ctx.retain, params.batch_size, TAG_RETAIN)
