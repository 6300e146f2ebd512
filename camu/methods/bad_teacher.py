"""Bad teaching, the CaMU paper's "TS" baseline (Chundawat, Tarun, Mandal, Kankanhalli; AAAI 2023, "Can
Bad Teaching Induce Forgetting?"; reference code github.com/vikram2000b/bad-teaching-unlearning@f1aa988,
``UnlearnerLoss`` and ``blindspot_unlearner`` in unlearn.py).

The student (a copy of the original) is distilled from a competent teacher (the original, frozen) on
D_r and from an incompetent teacher (the same architecture, randomly initialised, frozen) on D_f:

  L = KL_mean( t_y(x) || log_softmax(f(x) / T) ),   t_y(x) = softmax(teacher_y(x) / T),

where teacher_y is the incompetent teacher for forget samples and the competent one for retained ones,
and KL_mean is torch's ``kl_div`` with its default element-wise mean (as the reference). The data of an
epoch is D_f plus a random ``retain_fraction`` of D_r (reference: 30%), shuffled together. Reference run:
Adam lr 1e-4, 1 epoch, batch 256, T = 1.
Search space: lr in [1e-6, 1e-2] (log: five decades; on mnist10k class removal the 4-trial sweep of the
narrower [1e-6, 1e-3] stopped at FA 5% with lr 8e-4, short of the oracle's 0), epochs in [1, 5], temperature in
[1, 4], retain_fraction in [0.1, 1].
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from camu.methods.base import (
    METHODS,
    Preset,
    Run,
    UnlearningMethod,
    for_families,
    frozen_copy,
    reinitialised_copy,
)
from camu.methods.common import TAG_RETAIN, TAG_SUBSET, OptimParams


class BadTeacherParams(OptimParams):
    epochs: int = Field(1, ge=1, le=200, description="passes over D_f + the D_r subset")
    lr: float = Field(1e-4, gt=0, le=10.0, description="learning rate")
    optimizer: Literal["sgd", "adam"] = Field("adam", description="adam (reference) or sgd")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="weight decay (reference: none)")
    temperature: float = Field(1.0, gt=0, le=100, description="distillation temperature T")
    retain_fraction: float = Field(0.3, gt=0, le=1, description="fraction of D_r distilled each run")


def bad_teacher_loss(student: torch.Tensor, competent: torch.Tensor, incompetent: torch.Tensor,
                     is_forget: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-element KL terms (N, K) of the reference ``UnlearnerLoss`` before its mean."""
    target = torch.where(is_forget[:, None], F.softmax(incompetent.float() / temperature, dim=1),
                         F.softmax(competent.float() / temperature, dim=1))
    return F.kl_div(F.log_softmax(student.float() / temperature, dim=1), target, reduction="none")


SOURCE = ("github.com/vikram2000b/bad-teaching-unlearning@f1aa988, unlearn.py (blindspot_unlearner) and the"
          " notebooks' call (Adam lr 1e-4, 1 epoch, batch 256, KL_temperature 1, 30% of D_r)")


@METHODS.register("bad_teacher", "Bad teaching (TS): distil D_r from the original, D_f from a random teacher")
class BadTeacher(UnlearningMethod[BadTeacherParams]):
    Params = BadTeacherParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {
        "reference": for_families({"lr": 1e-4, "epochs": 1, "batch_size": 256, "temperature": 1.0,
                                   "retain_fraction": 0.3, "optimizer": "adam"}, SOURCE)}
    space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-6, 1.0e-2]}, "epochs": {"randint": [1, 5]},
                                       "temperature": {"uniform": [1.0, 4.0]},
                                       "retain_fraction": {"uniform": [0.1, 1.0]}}

    def prepare(self, run: Run, params: BadTeacherParams) -> None:
        ctx = run.ctx
        self.competent = frozen_copy(ctx.original, run.device)
        self.incompetent = frozen_copy(reinitialised_copy(ctx.original, run.device, seed=ctx.seed * 7 + 1), run.device)
        subset = torch.randperm(len(ctx.retain), generator=run.generator(TAG_SUBSET, 0))
        kept = ctx.retain[subset[: max(1, int(params.retain_fraction * len(ctx.retain)))]]
        self.samples = torch.cat([ctx.forget, kept])
        self.is_forget = torch.cat([torch.ones(len(ctx.forget), dtype=torch.bool),
                                    torch.zeros(len(kept), dtype=torch.bool)])

    def epoch(self, run: Run, params: BadTeacherParams, epoch: int) -> None:
        batches = run.batches(len(self.samples), params.batch_size, run.generator(TAG_RETAIN))
        local = [run.local(b) for b in batches]
        for batch, positions, (x, _) in zip(batches, local, run.stream([self.samples[p] for p in local])):
            with torch.no_grad():
                competent, _ = run.forward(self.competent, x)
                incompetent, _ = run.forward(self.incompetent, x)
            student, _ = run.forward(run.model, x)
            terms = bad_teacher_loss(student, competent, incompetent, self.is_forget[positions].to(run.device),
                                     params.temperature)
            loss = run.mean(terms, len(batch) * terms.shape[1])
            run.step(loss)
            run.record("loss", loss)
