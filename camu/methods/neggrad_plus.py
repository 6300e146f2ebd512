"""NegGrad+ (Kurmanji, Triantafillou, Hayes, Triantafillou; NeurIPS 2023, "Towards Unbounded Machine
Unlearning"; reference code github.com/meghdadk/SCRUB@98ffb11): descent on D_r and ascent on D_f in one
loss, iterating over D_r batches while cycling through D_f batches (an epoch is one pass over D_r):

  L = alpha * (CE(f(x_r), y_r) + pull / 2 * ||theta - theta_0||^2) - (1 - alpha) * CE(f(x_f), y_f)

with theta_0 the original's weights (the sum over every trainable parameter). The repository has two
versions, and its two scales use different ones:
- mnist (small scale): ``run_neggrad_epoch`` + ``l2_penalty`` in small_scale_unlearning.ipynb (cells 70,
  71, 83, 85): the model in eval mode, plain SGD (no momentum, no weight decay) lr 0.01, alpha 0.95, 10
  epochs, D_r batch 128 (the loader the fine-tune cell re-binds), D_f batch 64, and the pull weighted by
  the training weight decay of that run (``--weight-decay 0.1``), inside the alpha bracket.
- cifar: ``train_negrad`` (thirdparty/repdistiller/helper/loops.py:12-76) as every CIFAR-size notebook
  calls it: no pull, the model in train mode, plain SGD lr 0.01, alpha 0.9999; large_scale_ictest.ipynb
  (cell 40): 10 epochs, D_r batch 128, D_f batch 32 (MIA_experiments.ipynb runs 5 epochs at 32/16).
Search space: alpha in {0.9, 0.95, 0.99, 0.999, 0.9999} (both scales' values), lr in [1e-4, 1e-1] (log),
epochs in [1, 10].
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from camu.methods.base import METHODS, Preset, Run, UnlearningMethod
from camu.methods.common import TAG_FORGET, TAG_RETAIN, OptimParams, passes


class NegGradPlusParams(OptimParams):
    alpha: float = Field(0.9999, ge=0, le=1, description="weight of the D_r loss; 1 - alpha weighs the D_f ascent")
    batch_size: int = Field(128, ge=1, le=65536, description="global batch of D_r")
    forget_batch_size: int = Field(32, ge=1, le=65536, description="global batch of D_f (cycled)")
    pull: float = Field(0.0, ge=0, le=10.0, description="weight of the L2 pull towards the original, pull/2 * "
                                                        "||theta - theta_0||^2 inside the alpha bracket (small "
                                                        "scale: the training weight decay, 0.1)")
    eval_mode: bool = Field(False, description="unlearn with the model in eval mode (BatchNorm statistics and "
                                               "dropout frozen), as the small-scale notebook")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (reference: none)")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="weight decay (reference optimiser: none)")


SOURCE = "github.com/meghdadk/SCRUB@98ffb11"


@METHODS.register("neggrad_plus", "NegGrad+: descent on D_r and ascent on D_f in one loss (Kurmanji et al. 2023)")
class NegGradPlus(UnlearningMethod[NegGradPlusParams]):
    Params = NegGradPlusParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {"reference": {
        "mnist": Preset({"alpha": 0.95, "lr": 0.01, "epochs": 10, "batch_size": 128, "forget_batch_size": 64,
                         "pull": 0.1, "eval_mode": True, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0},
                        SOURCE + ", small_scale_unlearning.ipynb cells 70 (run_neggrad_epoch, l2_penalty), 71 (SGD), "
                                 "83 (D_r batch 128), 85 (alpha 0.95, 10 epochs, lr 0.01); pull = main.py "
                                 "--weight-decay 0.1"),
        "cifar": Preset({"alpha": 0.9999, "lr": 0.01, "epochs": 10, "batch_size": 128, "forget_batch_size": 32,
                         "pull": 0.0, "eval_mode": False, "optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0},
                        SOURCE + ", thirdparty/repdistiller/helper/loops.py:12-76 (train_negrad) as called by "
                                 "large_scale_ictest.ipynb cell 40"),
    }}
    space: ClassVar[dict[str, Any]] = {"alpha": {"choice": [0.9, 0.95, 0.99, 0.999, 0.9999]},
                                       "lr": {"loguniform": [1.0e-4, 1.0e-1]}, "epochs": {"randint": [1, 10]}}

    deviations = (("D_f batches are reshuffled on every cycle; the reference's itertools.cycle replays its first "
                  "pass in the same order"),)

    def prepare(self, run: Run, params: NegGradPlusParams) -> None:
        # theta_0: the original's weights (also after a resume, when the trainable copy has moved)
        self.theta0 = [p.detach().to(run.device).clone() for p in run.ctx.original.parameters()] if params.pull else []

    def epoch(self, run: Run, params: NegGradPlusParams, epoch: int) -> None:
        if params.eval_mode:
            run.model.eval()
        forget = _cycle(run, run.ctx.forget, params.forget_batch_size)
        for size_r, x_r, y_r in passes(run, run.ctx.retain, params.batch_size, TAG_RETAIN):
            size_f, x_f, y_f = next(forget)
            logits_r, _ = run.forward(run.model, x_r)
            logits_f, _ = run.forward(run.model, x_f)
            retained = run.mean(F.cross_entropy(logits_r.float(), y_r, reduction="none"), size_r)
            if params.pull:
                # every rank adds the whole pull: the group's gradient average keeps it once
                retained = retained + params.pull / 2 * sum(
                    ((p - p0) ** 2).sum() for p, p0 in zip(run.model.parameters(), self.theta0))
            loss = (params.alpha * retained
                    - (1 - params.alpha) * run.mean(F.cross_entropy(logits_f.float(), y_f, reduction="none"), size_f))
            run.step(loss)
            run.record("loss", loss)


def _cycle(run: Run, indices: torch.Tensor, batch_size: int):
    """Passes over ``indices`` one after the other, each freshly shuffled. The reference cycles its loader
    with ``itertools.cycle``, which replays the first pass's batches in the same order (a kept deviation,
    listed in ``deviations``)."""
    round_ = 0
    while True:
        yield from passes(run, indices, batch_size, TAG_FORGET * 1000 + round_)
        round_ += 1
