"""NegGrad (GA), gradient ascent on D_f. Reference: Thudi et al. 2022 / Golatkar et al. 2020 as run in
Unlearn-Sparse and SalUn (github.com/OPTML-Group/Unlearn-Saliency@a6e89fd, Classification/unlearn/GA.py: SGD
lr 1e-4, momentum 0.9, weight decay 5e-4, 5 epochs, batch 256).

Loss per step on a batch of D_f: -CE(f(x_f), y_f).
Search space: lr in [1e-6, 1e-2] (log), epochs in [1, 10].
"""

from __future__ import annotations

from typing import Any, ClassVar

from camu.methods.base import METHODS, Preset, Run, UnlearningMethod, for_families
from camu.methods.common import TAG_FORGET, OptimParams, cross_entropy_pass


class NegGradParams(OptimParams):
    """SGD gradient ascent on D_f."""


SOURCE = ("github.com/OPTML-Group/Unlearn-Saliency@a6e89fd, Classification/unlearn/GA.py and the README's "
          "GA command")


@METHODS.register("neggrad", "NegGrad: gradient ascent on D_f")
class NegGrad(UnlearningMethod[NegGradParams]):
    Params = NegGradParams
    presets: ClassVar[dict[str, dict[str, Preset]]] = {
        "reference": for_families({"lr": 1e-4, "epochs": 5, "batch_size": 256}, SOURCE)}
    space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-6, 1.0e-2]}, "epochs": {"randint": [1, 10]}}

    def epoch(self, run: Run, params: NegGradParams, epoch: int) -> None:
        cross_entropy_pass(run, run.ctx.forget, params.batch_size, TAG_FORGET, sign=-1.0)
