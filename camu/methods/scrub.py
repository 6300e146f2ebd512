"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou; NeurIPS 2023, "Towards Unbounded Machine
Unlearning"; reference code github.com/meghdadk/SCRUB, ``train_distill`` in
thirdparty/repdistiller/helper/loops.py and large_scale_unlearning.ipynb): the student (a copy of the
original) alternates max-steps away from the teacher (the frozen original) on D_f with min-steps
towards it on D_r:

  max-step on a D_f batch (epochs 1..msteps):  L = -KL_T(s, t)
  min-step on a D_r batch (every epoch):        L = gamma * CE(s, y) + alpha * KL_T(s, t)
  KL_T(s, t) = sum KL(softmax(t/T) || softmax(s/T)) * T^2 / batch      (RepDistiller's DistillKL)

with the learning rate multiplied by ``lr_decay_rate`` after each epoch listed in ``lr_decay_epochs``.
Reference (large-scale CIFAR) run: SGD lr 5e-4, momentum 0.9, weight decay 5e-4, gamma 0.99,
alpha 0.001, T 4, msteps 2, 3 epochs, D_r batch 128, D_f batch 32, decay at epochs 3, 5, 9 by 0.1.
Search space: lr in [1e-5, 1e-2] (log), epochs in [2, 10], msteps in [1, 5], alpha in [1e-4, 1] (log),
kd_T in [1, 8].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from camu.methods.base import METHODS, UnlearningMethod, frozen_copy
from camu.methods.common import TAG_FORGET, TAG_RETAIN, OptimParams, passes

if TYPE_CHECKING:
    from camu.loop import Run


class ScrubParams(OptimParams):
    epochs: int = Field(3, ge=1, le=200, description="epochs (the reference's sgda_epochs)")
    msteps: int = Field(2, ge=0, le=200, description="epochs that begin with a max pass over D_f")
    lr: float = Field(5e-4, gt=0, le=10.0, description="learning rate")
    batch_size: int = Field(128, ge=1, le=65536, description="global batch of the min-steps (D_r)")
    forget_batch_size: int = Field(32, ge=1, le=65536, description="global batch of the max-steps (D_f)")
    gamma: float = Field(0.99, ge=0, le=100, description="weight of CE in the min-steps")
    alpha: float = Field(0.001, ge=0, le=100, description="weight of KL in the min-steps")
    kd_T: float = Field(4.0, gt=0, le=100, description="distillation temperature")
    lr_decay_epochs: list[int] = Field(default_factory=lambda: [3, 5, 9], description="epochs after which the lr decays")
    lr_decay_rate: float = Field(0.1, gt=0, le=1, description="factor of each decay")


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample KL(softmax(t/T) || softmax(s/T)) * T^2 (RepDistiller's DistillKL before its batch mean)."""
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    p_t = F.softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(log_s, p_t, reduction="none").sum(dim=1) * temperature**2


def scrub_lr(base: float, epoch: int, decay_epochs: list[int], rate: float) -> float:
    """The reference's ``sgda_adjust_learning_rate`` with 1-based epoch ``epoch + 1``."""
    return base * rate ** sum(epoch + 1 > d for d in decay_epochs)


@METHODS.register("scrub", "SCRUB: max-steps away from the original on D_f, min-steps towards it on D_r")
class Scrub(UnlearningMethod):
    Params = ScrubParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {"reference": {
        "lr": 5e-4, "epochs": 3, "msteps": 2, "gamma": 0.99, "alpha": 0.001, "kd_T": 4.0, "batch_size": 128,
        "forget_batch_size": 32, "momentum": 0.9, "weight_decay": 5e-4}}
    space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-5, 1.0e-2]}, "epochs": {"randint": [2, 10]},
                                       "msteps": {"randint": [1, 5]}, "alpha": {"loguniform": [1.0e-4, 1.0]},
                                       "kd_T": {"uniform": [1.0, 8.0]}}

    def prepare(self, run: Run, params: ScrubParams) -> None:  # type: ignore[override]
        self.teacher = frozen_copy(run.ctx.original, run.device)

    def epoch(self, run: Run, params: ScrubParams, epoch: int) -> None:  # type: ignore[override]
        run.set_lr("main", scrub_lr(params.lr, epoch, params.lr_decay_epochs, params.lr_decay_rate))
        if epoch < params.msteps:
            for size, x, _ in passes(run, run.ctx.forget, params.forget_batch_size, TAG_FORGET):
                loss = -run.mean(self._kl(run, x, params.kd_T), size)
                run.step(loss)
                run.record("loss_max", loss)
        for size, x, y in passes(run, run.ctx.retain, params.batch_size, TAG_RETAIN):
            student, _ = run.forward(run.model, x)
            with torch.no_grad():
                teacher, _ = run.forward(self.teacher, x)
            per_sample = (params.gamma * F.cross_entropy(student.float(), y, reduction="none")
                          + params.alpha * distill_kl(student, teacher, params.kd_T))
            loss = run.mean(per_sample, size)
            run.step(loss)
            run.record("loss_min", loss)

    def _kl(self, run: Run, x: torch.Tensor, temperature: float) -> torch.Tensor:
        student, _ = run.forward(run.model, x)
        with torch.no_grad():
            teacher, _ = run.forward(self.teacher, x)
        return distill_kl(student, teacher, temperature)
