"""Unrolling SGD (Thudi, Deza, Chandrasekaran, Papernot; EuroS&P 2022, "Unrolling SGD: Understanding
Factors Influencing Machine Unlearning"; reference code github.com/cleverhans-lab/unrolling-sgd@49e001f,
Privacy_risk_score/Correlation_PRS.py), the CaMU paper's "Unrolling" baseline.

Unrolling plain SGD's trajectory to first order, the contribution of D_f to the final weights is
approximately the sum of its gradients along the trajectory; the reference approximates every one of
them by the gradient at the initial weights w_0 and removes them with one correction step:

  theta = theta_final + lr * scale * sum over D_f batches b of grad_w CE(f_{w_0}(x_b), y_b),

with ``lr`` the training learning rate and ``scale`` the number of epochs each forget sample was seen
(reference: ``(ep + 1) * lr * grads``). The identity holds for plain SGD only, so:

- The preset follows the job's recipe: lr = recipe lr, scale = recipe epochs, batch = recipe batch.
- An original trained with another optimizer (the official CaMU recipe is Adam) is refused at validation
  unless the job says ``params: {accept_non_sgd_original: true}``: the correction then has no derivation
  (the CaMU paper's "Unrolling" row applies it to its Adam-trained original; a kept, visible deviation).
  ``original.recipe.optimizer: sgd`` trains an original the method is defined for.
- ``lr`` is the training lr, not an unlearning step size: ``lr_scaling: linear`` leaves it alone.
- It needs w_0, the original's initialisation, which the job has when it trains the original
  (``original.recipe``); a loaded original is refused at validation.
Search space: lr in [1e-6, 1e-1] (log), scale in [1, 50].
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from camu.methods.base import (
    METHODS,
    MethodError,
    MethodParams,
    Preset,
    Run,
    Setting,
    UnlearningMethod,
    frozen_copy,
)
from camu.methods.common import TAG_FORGET, passes
from camu.optim import sgd
from camu.training import TrainRecipe


class UnrollingParams(MethodParams):
    lr: float = Field(1e-3, gt=0, le=10.0, description="learning rate of the original's training")
    scale: int = Field(20, ge=1, le=10_000, description="times each forget sample was seen (training epochs)")
    batch_size: int = Field(32, ge=1, le=65536, description="batch of the gradients at w_0 (the training batch)")
    accept_non_sgd_original: bool = Field(False, description="apply the SGD identity to an original trained with "
                                                             "another optimizer (no derivation; the CaMU paper's row)")


SOURCE = ("github.com/cleverhans-lab/unrolling-sgd@49e001f, Privacy_risk_score/Correlation_PRS.py (the correction "
          "(ep + 1) * lr * grads at w_0, the training lr and batch)")


@METHODS.register("unrolling_sgd", "Unrolling SGD: one correction step with D_f's gradient at the initial weights")
class UnrollingSGD(UnlearningMethod[UnrollingParams]):
    Params = UnrollingParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"reference": {}}  # from the job's recipe (preset_entry)
    space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-6, 1.0e-1]}, "scale": {"randint": [1, 50]}}
    lr_fields = ()  # lr is the original's training lr: data parallelism of the unlearning does not change it
    needs_initial = True
    deviations = (("refuses momentum and Adam originals by default although the reference's own verification scripts "
                   "train with SGD momentum 0.9 and apply it anyway (Correlation_PRS.py): the derivation is for plain "
                   "SGD, and accept_non_sgd_original: true applies it to any original"),
                  ("the CaMU paper applies it to an Adam-trained original; jobs must opt in with "
                   "accept_non_sgd_original: true (no derivation for Adam; on mnist10k written as an image folder, "
                   "class removal, it cost 8.1 points of RA, on the idx files 0.5)"),)

    def preset_names(self, setting: Setting) -> list[str]:
        return ["reference"]

    def preset_entry(self, name: str, setting: Setting) -> Preset:
        if name != "reference":
            raise MethodError(f"unknown preset {name!r}; presets: reference")
        recipe = setting.recipe or TrainRecipe().model_dump()  # the official recipe
        values = {"lr": recipe["lr"], "scale": recipe["epochs"], "batch_size": recipe["batch_size"]}
        return Preset(values, SOURCE + "; values: the original's recipe (lr, epochs, batch)")

    def original_problem(self, recipe: dict[str, Any] | None, params: UnrollingParams) -> str | None:
        if recipe is None or recipe.get("optimizer", "adam") == "sgd" and not recipe.get("momentum"):
            return None
        if params.accept_non_sgd_original:
            return None
        momentum = f" with momentum {recipe['momentum']}" if recipe.get("momentum") else ""
        used = recipe.get("optimizer", "adam") + momentum
        return (f"unrolling_sgd's correction is plain SGD's identity, but the original is trained with {used}; "
                f"set original.recipe.optimizer: sgd (momentum 0), or params: {{accept_non_sgd_original: true}} "
                f"to apply it anyway (as the CaMU paper's Unrolling row)")

    def num_epochs(self, params: UnrollingParams) -> int:
        return 1

    def optimizers(self, model: torch.nn.Module, params: UnrollingParams) -> dict[str, torch.optim.Optimizer]:
        # the correction is theta += lr * scale * g, i.e. one plain SGD step on -g with lr * scale
        return {"main": sgd(model.parameters(), params.lr * params.scale)}

    def epoch(self, run: Run, params: UnrollingParams, epoch: int) -> None:
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
