"""RL, random labels: train on D_f with labels drawn at random, then on D_r. Reference: Golatkar et al.
2020 / Hayase et al. as run in SalUn (github.com/OPTML-Group/Unlearn-Saliency,
Classification/unlearn/RL.py, the CIFAR-10 branch): each epoch one pass over D_f whose labels are
redrawn uniformly over all K classes for every batch (a draw may equal the true label, as in the
reference), then one pass over D_r; SGD lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs, batch 256.

Loss per step: CE(f(x_f), u) with u ~ U{0..K-1}, then CE(f(x_r), y_r).
Search space: lr in [1e-4, 1e-1] (log), epochs in [1, 10].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from camu.methods.base import METHODS, UnlearningMethod
from camu.methods.common import TAG_FORGET, TAG_LABELS, TAG_RETAIN, OptimParams, cross_entropy_pass

if TYPE_CHECKING:
    from camu.loop import Run


class RandomLabelParams(OptimParams):
    """SGD on randomly relabelled D_f, then D_r."""


def random_label_pass(run: Run, params: OptimParams, grad_mask: dict[str, torch.Tensor] | None = None) -> None:
    """One RL epoch: D_f with fresh uniform labels per global batch, then D_r (SalUn restricts the
    updates with ``grad_mask``)."""
    forget = run.ctx.forget
    batches = run.batches(len(forget), params.batch_size, run.generator(TAG_FORGET))
    labels_g = run.generator(TAG_LABELS)
    random = [torch.randint(0, run.ctx.data.num_classes, (len(b),), generator=labels_g) for b in batches]
    local = [forget[run.local(b)] for b in batches]
    for batch, labels, (x, _) in zip(batches, random, run.stream(local)):
        logits, _ = run.forward(run.model, x)
        target = run.local(labels).to(run.device)
        loss = run.mean(F.cross_entropy(logits.float(), target, reduction="none"), len(batch))
        run.step(loss, grad_mask=grad_mask)
        run.record("loss_forget", loss)
    cross_entropy_pass(run, run.ctx.retain, params.batch_size, TAG_RETAIN, name="loss_retain", grad_mask=grad_mask)


@METHODS.register("random_label", "RL: D_f relabelled at random, then D_r")
class RandomLabel(UnlearningMethod):
    Params = RandomLabelParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {"reference": {"lr": 0.01, "epochs": 10, "batch_size": 256}}
    space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-4, 1.0e-1]}, "epochs": {"randint": [1, 10]}}

    def epoch(self, run: Run, params: RandomLabelParams, epoch: int) -> None:  # type: ignore[override]
        random_label_pass(run, params)
