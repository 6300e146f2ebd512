"""FT, fine-tuning: continue training the original on D_r only, so that D_f fades by catastrophic
forgetting. Reference: Warnecke et al. 2023 / Golatkar et al. 2020 as run in Unlearn-Sparse and SalUn
(github.com/OPTML-Group/Unlearn-Saliency@a6e89fd, Classification/unlearn/FT.py: SGD lr 0.01, momentum 0.9,
weight decay 5e-4, 10 epochs, batch 256).

Loss per step on a batch of D_r: CE(f(x_r), y_r).
Search space: lr in [1e-4, 1e-1] (log), epochs in [1, 10].
"""

from __future__ import annotations

from typing import Any, ClassVar

from camu.methods.base import METHODS, Preset, Run, UnlearningMethod, for_families
from camu.methods.common import TAG_RETAIN, OptimParams, cross_entropy_pass


class FinetuneParams(OptimParams):
    """SGD fine-tuning on D_r."""


SOURCE = ("github.com/OPTML-Group/Unlearn-Saliency@a6e89fd, Classification/unlearn/FT.py (FT_iter) and "
          "Classification/arg_parser.py")


@METHODS.register("finetune", "FT: plain training on D_r only (catastrophic forgetting of D_f)")
class Finetune(UnlearningMethod[FinetuneParams]):
    Params = FinetuneParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {
        "reference": for_families({"lr": 0.01, "epochs": 10, "batch_size": 256}, SOURCE)}
    space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-4, 1.0e-1]}, "epochs": {"randint": [1, 10]}}

    def epoch(self, run: Run, params: FinetuneParams, epoch: int) -> None:
        cross_entropy_pass(run, run.ctx.retain, params.batch_size, TAG_RETAIN)
