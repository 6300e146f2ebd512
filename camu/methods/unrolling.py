"""Unrolling SGD (Thudi, Deza, Chandrasekaran, Papernot; EuroS&P 2022, "Unrolling SGD: Understanding
Factors Influencing Machine Unlearning"; reference code github.com/cleverhans-lab/unrolling-sgd,
Privacy_risk_score/Correlation_PRS.py), the CaMU paper's "Unrolling" baseline.

Unrolling the training trajectory to first order, the contribution of D_f to the final weights is
approximately the sum of its gradients along the trajectory; the reference approximates every one of
them by the gradient at the initial weights w_0 and removes them with one correction step:

  theta = theta_final + lr * scale * sum over D_f batches b of grad_w CE(f_{w_0}(x_b), y_b),

with ``scale`` the number of epochs each forget sample was seen and ``lr`` the training learning rate
(reference: ``(ep + 1) * lr * grads``). It needs w_0, the original's initialisation, which the job has
when it trains the original (``original.recipe``); a loaded original is refused at validation. Reference
values follow the job's recipe (Adam lr 1e-3, 20 epochs, batch 32 in the official recipe).
Search space: lr in [1e-6, 1e-1] (log), scale in [1, 50].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from camu.methods.base import METHODS, MethodParams, UnlearningMethod, frozen_copy
from camu.methods.common import TAG_FORGET, passes

if TYPE_CHECKING:
    from camu.loop import Run


class UnrollingParams(MethodParams):
    lr: float = Field(1e-3, gt=0, le=10.0, description="learning rate of the original's training")
    scale: int = Field(20, ge=1, le=10_000, description="times each forget sample was seen (training epochs)")
    batch_size: int = Field(32, ge=1, le=65536, description="batch of the gradients at w_0 (the training batch)")


@METHODS.register("unrolling_sgd", "Unrolling SGD: one correction step with D_f's gradient at the initial weights")
class UnrollingSGD(UnlearningMethod):
    Params = UnrollingParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {"reference": {"lr": 1e-3, "scale": 20, "batch_size": 32}}
    space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-6, 1.0e-1]}, "scale": {"randint": [1, 50]}}
    needs_initial = True

    def num_epochs(self, params: UnrollingParams) -> int:  # type: ignore[override]
        return 1

    def optimizers(self, model: torch.nn.Module, params: UnrollingParams) -> dict[str, torch.optim.Optimizer]:  # type: ignore[override]
        # the correction is theta += lr * scale * g, i.e. one plain SGD step on -g with lr * scale
        return {"main": torch.optim.SGD(model.parameters(), lr=params.lr * params.scale)}

    def epoch(self, run: Run, params: UnrollingParams, epoch: int) -> None:  # type: ignore[override]
        if run.ctx.initial is None:
            raise ValueError("unrolling_sgd needs the original's initial weights (UnlearnContext.initial)")
        w0 = frozen_copy(run.ctx.initial, run.device, train_mode=True)  # the reference runs w_0 in train mode
        for p in w0.parameters():
            p.requires_grad_(True)
        total = [torch.zeros_like(p) for p in w0.parameters()]
        for size, x, y in passes(run, run.ctx.forget, params.batch_size, TAG_FORGET):
            logits, _ = run.forward(w0, x)
            loss = run.mean(F.cross_entropy(logits.float(), y, reduction="none"), size)
            for acc, g in zip(total, torch.autograd.grad(loss, list(w0.parameters()))):
                acc += g
            run.record("loss_at_w0", loss)
        for p, g in zip(run.model.parameters(), total):
            p.grad = -g  # ascent along D_f's accumulated gradient (averaged over the group below)
        from camu.runtime import sync_gradients

        sync_gradients(run.model.parameters(), run.ctx.shard)
        run.optimizers["main"].step()
