"""Pure metric functions on model outputs: accuracies, membership-inference attacks, oracle gaps.

Accuracies and the official MIA are percentages (0-100) as in the CaMU paper; the loss-based MIA
is an AUC in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

GAP_KEYS = ("ra", "fa", "ta", "mia_official")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent; NaN for an empty set."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * float((logits.argmax(dim=1) == labels).float().mean())


def sorted_softmax(logits: torch.Tensor) -> np.ndarray:
    """Softmax probabilities sorted in descending order: the official MIA's features."""
    probs = torch.softmax(logits.float(), dim=1)
    return torch.sort(probs, dim=1, descending=True).values.numpy()


def official_mia(members: np.ndarray, nonmembers: np.ndarray, forget: np.ndarray, heldout: np.ndarray,
                 seed: int = 0) -> tuple[float, float]:
    """The official CaMU attack: an XGBoost classifier on sorted softmax, trained on remaining
    samples (members, 1) vs test samples (non-members, 0).

    Returns (accuracy in % on D_f labelled 1 plus an equal number of other test samples labelled 0,
    percentage of D_f predicted "member").
    """
    from xgboost import XGBClassifier

    n = min(len(forget), len(heldout))
    if n == 0 or len(members) == 0 or len(nonmembers) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    forget = forget[rng.choice(len(forget), n, replace=False)]
    heldout = heldout[rng.choice(len(heldout), n, replace=False)]
    clf = XGBClassifier(n_estimators=100, max_depth=4, tree_method="hist", n_jobs=2, random_state=seed,
                        verbosity=0)
    clf.fit(np.concatenate([members, nonmembers]),
            np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))]))
    pred_forget, pred_heldout = clf.predict(forget), clf.predict(heldout)
    acc = 100.0 * (np.sum(pred_forget == 1) + np.sum(pred_heldout == 0)) / (2 * n)
    return float(acc), float(100.0 * np.mean(pred_forget == 1))


def loss_mia_auc(forget_losses: np.ndarray, test_losses: np.ndarray) -> float:
    """AUC of the loss-threshold attack: how well a low loss singles out D_f among test samples.
    0.5 = indistinguishable from unseen data; 1.0 = every forget sample looks like a member."""
    from sklearn.metrics import roc_auc_score

    if len(forget_losses) == 0 or len(test_losses) == 0:
        return float("nan")
    scores = -np.concatenate([forget_losses, test_losses])
    truth = np.concatenate([np.ones(len(forget_losses)), np.zeros(len(test_losses))])
    return float(roc_auc_score(truth, scores))


def average_gap(metrics: Mapping[str, float], oracle: Mapping[str, float], keys: tuple[str, ...] = GAP_KEYS) -> float:
    """Mean absolute difference to the oracle over (RA, FA, TA, MIA), in percentage points.
    Keys that are NaN on either side are left out."""
    gaps = [abs(metrics[k] - oracle[k]) for k in keys
            if k in metrics and k in oracle and not (math.isnan(metrics[k]) or math.isnan(oracle[k]))]
    return float(np.mean(gaps)) if gaps else float("nan")
