"""Boundary unlearning (Chen, Gao, Liu, Peng, Zhou; CVPR 2023, "Boundary Unlearning"), the CaMU paper's
"Boundary" baseline, for class removal only, as the authors' code runs it (boundary_unlearning.py and
main.py of the authors' release, read at github.com/TY-LEE-KR/Boundary-Unlearning-Code@19f9f23, a mirror
of their Dropbox archive):

- ``boundary_shrink``: each forget image is pushed across the nearest decision boundary of the frozen
  original by one FGSM step of ``bound`` in pixel units (clamped to [0, 1] and rounded to 1/255), and the
  model is trained to predict the class the original gives the perturbed image:
  L = CE(f(x_f), argmax f0(x_f + bound * sign(grad_x CE(f0(x_f), y_f)))).
- ``boundary_expanding``: the output layer gets one extra "shadow" class (weight xavier-normal, bias 0,
  as the authors' ``init_params``), the model is trained to put every forget image there,
  L = CE(f'(x_f), K), and the shadow output is then pruned, so the unlearned model has the original's
  architecture.

Settings (both families; the authors publish one, for CIFAR-10): SGD lr 1e-5, momentum 0.9, no weight
decay, 10 epochs over D_f at batch 64, bound 0.1. Differences from the SalUn re-implementation
(Unlearn-Saliency Classification/unlearn/boundary_sh.py, boundary_ex.py), which this follows for the
loss but not the regime: there batch 256 and weight decay 5e-4 (its shared defaults), a shadow row with
PyTorch's default initialisation, and no pruning (a K+1-way model). The authors' FGSM un-normalises with
mismatched constants (a bug); here the step is taken in true pixel units.
Search space: lr in [1e-7, 1e-2] (log), epochs in [1, 15] (shrink also bound in [0.01, 0.3]).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from camu.methods.base import (
    METHODS,
    Preset,
    Run,
    UnlearnContext,
    UnlearningMethod,
    for_families,
    frozen_copy,
)
from camu.methods.common import TAG_FORGET, OptimParams, passes
from camu.runtime import autocast

CLASS_REMOVAL = ("classes",)
REFERENCE = {"lr": 1e-5, "epochs": 10, "batch_size": 64, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0}
SOURCE = ("Boundary Unlearning authors' code (github.com/TY-LEE-KR/Boundary-Unlearning-Code@19f9f23, a mirror): "
          "main.py (batch 64), boundary_unlearning.py (SGD lr 1e-5, momentum 0.9, no weight decay, 10 epochs, "
          "bound 0.1; expanding: models.init_params xavier-normal, zero bias, pruned after)")
NOTE = "the authors publish CIFAR-10 settings only; the mnist family uses them too"
SPACE = {"lr": {"loguniform": [1.0e-7, 1.0e-2]}, "epochs": {"randint": [1, 15]}}


class BoundaryShrinkParams(OptimParams):
    lr: float = Field(1e-5, gt=0, le=10.0, description="learning rate")
    batch_size: int = Field(64, ge=1, le=65536, description="global batch over D_f")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="weight decay (the authors': none)")
    bound: float = Field(0.1, gt=0, le=1, description="FGSM step in pixel units (the paper: 0.1)")


class BoundaryExpandingParams(OptimParams):
    lr: float = Field(1e-5, gt=0, le=10.0, description="learning rate")
    batch_size: int = Field(64, ge=1, le=65536, description="global batch over D_f")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="weight decay (the authors': none)")


def fgsm_neighbour_labels(f0: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float,
                          ctx: UnlearnContext) -> torch.Tensor:
    """The original's predictions on one-step FGSM neighbours of ``x`` (pixel-space step ``bound``)."""
    x_adv = x.detach().clone().requires_grad_(True)
    with autocast(x.device):
        logits, _ = f0(x_adv)
    grad, = torch.autograd.grad(F.cross_entropy(logits.float(), y), x_adv)
    data = ctx.data
    pixels = data.to_pixels(x.detach()) + bound * grad.sign()
    if data.has_pixels:
        pixels = torch.round(pixels.clamp(0.0, 1.0) * 255) / 255
    with torch.no_grad(), autocast(x.device):
        adv_logits, _ = f0(data.from_pixels(pixels))
    return adv_logits.argmax(dim=1)


@METHODS.register("boundary_shrink",
                  "Boundary shrink: D_f relabelled with the original's FGSM-neighbour class (class removal)")
class BoundaryShrink(UnlearningMethod[BoundaryShrinkParams]):
    Params = BoundaryShrinkParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"reference": for_families({**REFERENCE, "bound": 0.1}, SOURCE,
                                                                              NOTE)}
    space: ClassVar[dict[str, Any]] = {**SPACE, "bound": {"uniform": [0.01, 0.3]}}
    scenario_kinds = CLASS_REMOVAL

    def prepare(self, run: Run, params: BoundaryShrinkParams) -> None:
        self.f0 = frozen_copy(run.ctx.original, run.device)

    def epoch(self, run: Run, params: BoundaryShrinkParams, epoch: int) -> None:
        for size, x, y in passes(run, run.ctx.forget, params.batch_size, TAG_FORGET):
            target = fgsm_neighbour_labels(self.f0, x, y, params.bound, run.ctx)
            logits, _ = run.forward(run.model, x)
            loss = run.mean(F.cross_entropy(logits.float(), target, reduction="none"), size)
            run.step(loss)
            run.record("loss", loss)


def output_layer(model: nn.Module, num_classes: int) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute name, layer) of the last Linear layer with ``num_classes`` outputs."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = (name, module)
    if found is None:
        raise ValueError(f"the model has no Linear output layer with {num_classes} outputs")
    name, layer = found
    parent = model
    *path, attr = name.split(".")
    for part in path:
        parent = getattr(parent, part)
    return parent, attr, layer


def _resized(layer: nn.Linear, outputs: int) -> nn.Linear:
    """A copy of ``layer`` with ``outputs`` rows: the first ones copied, any new one xavier-normal with a
    zero bias (the authors' ``init_params``)."""
    new = nn.Linear(layer.in_features, outputs, bias=layer.bias is not None, device=layer.weight.device,
                    dtype=layer.weight.dtype)
    nn.init.xavier_normal_(new.weight)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    keep = min(outputs, layer.out_features)
    with torch.no_grad():
        new.weight[:keep] = layer.weight[:keep]
        if layer.bias is not None:
            new.bias[:keep] = layer.bias[:keep]
    return new


@METHODS.register("boundary_expanding",
                  "Boundary expanding: D_f pushed into an extra shadow class, then pruned (class removal)")
class BoundaryExpanding(UnlearningMethod[BoundaryExpandingParams]):
    Params = BoundaryExpandingParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"reference": for_families(REFERENCE, SOURCE, NOTE)}
    space: ClassVar[dict[str, Any]] = dict(SPACE)
    scenario_kinds = CLASS_REMOVAL

    def adapt(self, model: nn.Module, ctx: UnlearnContext, params: BoundaryExpandingParams) -> nn.Module:
        torch.manual_seed(ctx.seed)  # the shadow row's initialisation
        parent, attr, layer = output_layer(model, ctx.data.num_classes)
        setattr(parent, attr, _resized(layer, ctx.data.num_classes + 1))
        return model

    def epoch(self, run: Run, params: BoundaryExpandingParams, epoch: int) -> None:
        shadow = run.ctx.data.num_classes
        for size, x, _ in passes(run, run.ctx.forget, params.batch_size, TAG_FORGET):
            logits, _ = run.forward(run.model, x)
            target = torch.full((len(x),), shadow, dtype=torch.long, device=logits.device)
            loss = run.mean(F.cross_entropy(logits.float(), target, reduction="none"), size)
            run.step(loss)
            run.record("loss", loss)

    def finish(self, run: Run, params: BoundaryExpandingParams) -> nn.Module:
        k = run.ctx.data.num_classes
        parent, attr, layer = output_layer(run.model, k + 1)
        setattr(parent, attr, _resized(layer, k))
        return run.model
