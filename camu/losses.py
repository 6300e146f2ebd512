"""Loss functions shared by unlearning methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_sum(target_probs: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(embedding)) summed over batch and features.

    Equals ``torch.nn.KLDivLoss(reduction="sum")(log_softmax(embedding), target_probs)``, the
    official CaMU representation loss; computed in float32 even under autocast.
    """
    log_q = F.log_softmax(embedding.float(), dim=1)
    return F.kl_div(log_q, target_probs.float(), reduction="sum")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against hard labels (N,) or soft targets (N, K), in float32."""
    return F.cross_entropy(logits.float(), target.float() if target.dim() == 2 else target)


def cross_entropy_each(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (reduce with ``Run.mean``) against hard labels (N,) or soft targets (N, K)."""
    return F.cross_entropy(logits.float(), target.float() if target.dim() == 2 else target, reduction="none")
