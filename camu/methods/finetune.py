"""Fine-tune baseline: continue training the original on D_r only (catastrophic forgetting of D_f)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from camu.methods.base import METHODS, MethodParams, Stopwatch, UnlearnContext, UnlearnResult, trainable_copy
from camu.training import TrainRecipe, train_classifier


class FinetuneParams(MethodParams):
    epochs: int = Field(2, ge=1, le=200)
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(32, ge=1, le=65536)
    weight_decay: float = Field(1e-4, ge=0, le=1.0)


@METHODS.register("finetune", "baseline: a few epochs of plain training on D_r")
class Finetune:
    Params: ClassVar[type[MethodParams]] = FinetuneParams

    def run(self, ctx: UnlearnContext, params: FinetuneParams) -> UnlearnResult:  # type: ignore[override]
        model = trainable_copy(ctx.original, ctx.device)
        recipe = TrainRecipe(epochs=params.epochs, lr=params.lr, batch_size=params.batch_size,
                             weight_decay=params.weight_decay, seed=ctx.seed)
        with Stopwatch(ctx.device) as watch:
            stats = train_classifier(model, ctx.data.train, ctx.retain, recipe, ctx.device, ctx.shard)
        return UnlearnResult(model, watch.seconds, {"loss": stats.losses})
