"""SCRUB (Kurmanji, Triantafillou, Hayes, Triantafillou; NeurIPS 2023, "Towards Unbounded Machine
Unlearning"; reference code github.com/meghdadk/SCRUB@98ffb11, ``train_distill`` in
thirdparty/repdistiller/helper/loops.py:137-291): the student (a copy of the original) alternates
max-steps away from the teacher (the frozen original) on D_f with min-steps towards it on D_r, one
optimizer (and momentum buffer) for both:

  each epoch e = 1..epochs: lr = lr * lr_decay_rate ** #{d in lr_decay_epochs : e > d}
    if e <= msteps: one pass over D_f, each batch:  L = -KL_T(s, t)          (labels unused)
    one pass over D_r, each batch:                    L = gamma * CE(s, y) + alpha * KL_T(s, t)
  KL_T(s, t) = sum KL(softmax(t/T) || softmax(s/T)) * T^2 / batch      (RepDistiller's DistillKL)

Presets, from the loaders the notebooks actually pass to ``train_distill`` (the ``sgda_batch_size`` /
``del_batch_size`` they also set are never read):
- cifar: large_scale_unlearning.ipynb (cells 28, 32, 34; CIFAR-10): SGD lr 5e-4, momentum 0.9, weight
  decay 5e-4, gamma 0.99, alpha 0.001, T 4, msteps 2, 3 epochs, D_r batch 256, D_f batch 512, decay at
  epochs 3, 5, 9 (never reached in 3 epochs).
- mnist: small_scale_unlearning.ipynb (cells 26, 30, 32; small Lacuna-6, the repository's small-scale
  setting): Adam lr 5e-4 with (coupled) weight decay 0.1, gamma 1, alpha 0.5, T 2, msteps 3, 10 epochs,
  D_r batch 32, D_f batch 64, decay by 0.1 after epochs 5, 8, 9. The repository has no MNIST run; the
  small-scale setting saw about 600 images, so at MNIST size it takes about 100x more steps per epoch.
Search space: lr in [1e-5, 1e-2] (log), epochs in [2, 10], msteps in [1, 5], alpha in [1e-4, 1] (log),
kd_T in [1, 8].
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from camu.methods.base import METHODS, Preset, Run, UnlearningMethod, frozen_copy
from camu.methods.common import TAG_FORGET, TAG_RETAIN, OptimParams, passes


class ScrubParams(OptimParams):
    epochs: int = Field(3, ge=1, le=200, description="epochs (the reference's sgda_epochs)")
    msteps: int = Field(2, ge=0, le=200, description="epochs that begin with a max pass over D_f")
    lr: float = Field(5e-4, gt=0, le=10.0, description="learning rate")
    batch_size: int = Field(256, ge=1, le=65536, description="global batch of the min-steps (D_r)")
    forget_batch_size: int = Field(512, ge=1, le=65536, description="global batch of the max-steps (D_f)")
    gamma: float = Field(0.99, ge=0, le=100, description="weight of CE in the min-steps")
    alpha: float = Field(0.001, ge=0, le=100, description="weight of KL in the min-steps")
    kd_T: float = Field(4.0, gt=0, le=100, description="distillation temperature")
    lr_decay_epochs: list[int] = Field(default_factory=lambda: [3, 5, 9],
                                       description="epochs after which the lr decays")
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
class Scrub(UnlearningMethod[ScrubParams]):
    Params = ScrubParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"reference": {
        "cifar": Preset({"lr": 5e-4, "epochs": 3, "msteps": 2, "gamma": 0.99, "alpha": 0.001, "kd_T": 4.0,
                         "batch_size": 256, "forget_batch_size": 512, "optimizer": "sgd", "momentum": 0.9,
                         "weight_decay": 5e-4, "lr_decay_epochs": [3, 5, 9], "lr_decay_rate": 0.1},
                        "github.com/meghdadk/SCRUB@98ffb11, large_scale_unlearning.ipynb cells 28 (loaders 256/512), "
                        "32 (args), 34 (SGD)"),
        "mnist": Preset({"lr": 5e-4, "epochs": 10, "msteps": 3, "gamma": 1.0, "alpha": 0.5, "kd_T": 2.0,
                         "batch_size": 32, "forget_batch_size": 64, "optimizer": "adam", "momentum": 0.9,
                         "weight_decay": 0.1, "lr_decay_epochs": [5, 8, 9], "lr_decay_rate": 0.1},
                        "github.com/meghdadk/SCRUB@98ffb11, small_scale_unlearning.ipynb cells 26 (loaders 32/64), "
                        "30 (args), 32 (Adam, weight decay 0.1)",
                        "the small-scale setting (about 600 images); at MNIST size an epoch is ~100x more steps"),
    }}
    space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-5, 1.0e-2]}, "epochs": {"randint": [2, 10]},
                                       "msteps": {"randint": [1, 5]}, "alpha": {"loguniform": [1.0e-4, 1.0]},
                                       "kd_T": {"uniform": [1.0, 8.0]}}

    def prepare(self, run: Run, params: ScrubParams) -> None:
        self.teacher = frozen_copy(run.ctx.original, run.device)

    def epoch(self, run: Run, params: ScrubParams, epoch: int) -> None:
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
