"""NegGrad+ (Kurmanji, Triantafillou, Hayes, Triantafillou; NeurIPS 2023, "Towards Unbounded Machine
Unlearning"; reference code github.com/meghdadk/SCRUB, ``run_neggrad_epoch`` in
small_scale_unlearning.ipynb): descent on D_r and ascent on D_f in one loss,

  L = alpha * CE(f(x_r), y_r) - (1 - alpha) * CE(f(x_f), y_f),

iterating over D_r batches while cycling through D_f batches. Reference defaults: alpha 0.95, SGD lr
0.01, 10 epochs. The reference adds an L2 pull towards the original weighted by its weight decay
(``l2_penalty``); here plain SGD weight decay is used (``weight_decay``, 0 by default as the
reference's optimiser), a documented difference.
Search space: alpha in [0.5, 0.999], lr in [1e-4, 1e-1] (log), epochs in [1, 10].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from camu.methods.base import METHODS, UnlearningMethod
from camu.methods.common import TAG_FORGET, TAG_RETAIN, OptimParams, passes

if TYPE_CHECKING:
    from camu.loop import Run


class NegGradPlusParams(OptimParams):
    alpha: float = Field(0.95, ge=0, le=1, description="weight of the D_r loss; 1 - alpha weighs the D_f ascent")
    batch_size: int = Field(128, ge=1, le=65536, description="global batch of D_r and of D_f")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (reference: none)")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="weight decay (reference optimiser: none)")


@METHODS.register("neggrad_plus", "NegGrad+: descent on D_r and ascent on D_f in one loss (Kurmanji et al. 2023)")
class NegGradPlus(UnlearningMethod):
    Params = NegGradPlusParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {"reference": {"alpha": 0.95, "lr": 0.01, "epochs": 10,
                                                                  "batch_size": 128}}
    space: ClassVar[dict[str, Any]] = {"alpha": {"uniform": [0.5, 0.999]}, "lr": {"loguniform": [1.0e-4, 1.0e-1]},
                                       "epochs": {"randint": [1, 10]}}

    def epoch(self, run: Run, params: NegGradPlusParams, epoch: int) -> None:  # type: ignore[override]
        forget = _cycle(run, run.ctx.forget, params.batch_size)
        for size_r, x_r, y_r in passes(run, run.ctx.retain, params.batch_size, TAG_RETAIN):
            size_f, x_f, y_f = next(forget)
            logits_r, _ = run.forward(run.model, x_r)
            logits_f, _ = run.forward(run.model, x_f)
            loss = (params.alpha * run.mean(F.cross_entropy(logits_r.float(), y_r, reduction="none"), size_r)
                    - (1 - params.alpha) * run.mean(F.cross_entropy(logits_f.float(), y_f, reduction="none"), size_f))
            run.step(loss)
            run.record("loss", loss)


def _cycle(run: Run, indices: torch.Tensor, batch_size: int):  # noqa: ANN202 - an endless iterator
    """Passes over ``indices`` one after the other, each freshly shuffled (itertools.cycle of a loader)."""
    round_ = 0
    while True:
        yield from passes(run, indices, batch_size, TAG_FORGET * 1000 + round_)
        round_ += 1
