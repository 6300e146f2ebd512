"""l1-sparse unlearning (Jia, Liu, Ram, Yao, Liu, Liu, Sharma, Liu; NeurIPS 2023, "Model Sparsity Can
Simplify Machine Unlearning"; reference code github.com/OPTML-Group/Unlearn-Sparse@80ba55d, ``FT_l1`` in
unlearn/FT.py, also in Unlearn-Saliency): fine-tuning on D_r with an l1 penalty on all weights whose
weight decays linearly to 0 over the epochs,

  L = CE(f(x_r), y_r) + alpha_e * ||theta||_1,   alpha_e = alpha * (1 - e / (E - no_l1_epochs)) for
  e < E - no_l1_epochs, else 0.

Reference run: alpha 5e-4, SGD lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs, batch 256.
Search space: alpha in [1e-6, 1e-3] (log), lr in [1e-4, 1e-1] (log), epochs in [1, 10].
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from camu.methods.base import METHODS, Preset, Run, UnlearningMethod, for_families
from camu.methods.common import TAG_RETAIN, OptimParams, cross_entropy_pass


class L1SparseParams(OptimParams):
    alpha: float = Field(5e-4, ge=0, le=1.0, description="l1 weight at the first epoch (decays linearly)")
    no_l1_epochs: int = Field(0, ge=0, le=200, description="final epochs without the l1 term")


def l1_weight(alpha: float, epoch: int, epochs: int, no_l1_epochs: int) -> float:
    """The reference's schedule: linear decay from alpha to 0 over the first epochs - no_l1_epochs."""
    active = epochs - no_l1_epochs
    return alpha * (1 - epoch / active) if epoch < active else 0.0


SOURCE = ("github.com/OPTML-Group/Unlearn-Sparse@80ba55d, unlearn/FT.py (FT_l1) and the README's l1-sparse "
          "command")


@METHODS.register("l1_sparse", "l1-sparse: fine-tuning on D_r with a decaying l1 penalty (Jia et al. 2023)")
class L1Sparse(UnlearningMethod[L1SparseParams]):
    Params = L1SparseParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {
        "reference": for_families({"alpha": 5e-4, "lr": 0.01, "epochs": 10, "batch_size": 256}, SOURCE)}
    space: ClassVar[dict[str, Any]] = {"alpha": {"loguniform": [1.0e-6, 1.0e-3]},
                                       "lr": {"loguniform": [1.0e-4, 1.0e-1]},
                                       "epochs": {"randint": [1, 10]}}

    def epoch(self, run: Run, params: L1SparseParams, epoch: int) -> None:
        weight = l1_weight(params.alpha, epoch, params.epochs, params.no_l1_epochs)

        def penalty() -> torch.Tensor:
            return weight * torch.cat([p.reshape(-1) for p in run.model.parameters()]).abs().sum()

        cross_entropy_pass(run, run.ctx.retain, params.batch_size, TAG_RETAIN, extra=penalty if weight else None)
