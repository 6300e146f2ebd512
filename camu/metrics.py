"""Pure metric functions on model outputs: accuracies, membership-inference attacks, oracle gaps.

Units as the papers report them: accuracies in percent (0-100); ``mia_official`` the official CaMU
attack's accuracy as a fraction (0-1, as the official code prints it); ``mia_efficacy`` the SalUn-family
MIA-Efficacy in percent; the loss-attack AUC in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

GAP_KEYS = ("ra", "fa", "ta", "mia_official")
FRACTION_KEYS = frozenset({"mia_official"})  # metrics reported as fractions; gaps count them in points


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
    """The official CaMU attack: XGBoost (100 trees, library defaults otherwise) on sorted softmax,
    trained on ``members`` (D_s, label 1) vs ``nonmembers`` (the first test samples, label 0), scored on
    all of D_f (label 1) plus the ``heldout`` test samples (label 0; the caller passes up to |D_f|).

    Returns (accuracy as a fraction in [0, 1], fraction of D_f predicted "member").
    """
    from xgboost import XGBClassifier

    if len(forget) == 0 or len(members) == 0 or len(nonmembers) == 0:
        return float("nan"), float("nan")
    # threads: what this process may use (Ray sets OMP_NUM_THREADS per worker; torch follows it)
    clf = XGBClassifier(n_estimators=100, random_state=seed, n_jobs=max(1, torch.get_num_threads()), verbosity=0)
    clf.fit(np.concatenate([members, nonmembers]),
            np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))]))
    pred_forget = clf.predict(forget)
    pred_heldout = clf.predict(heldout) if len(heldout) else np.zeros(0)
    acc = (np.sum(pred_forget == 1) + np.sum(pred_heldout == 0)) / (len(forget) + len(heldout))
    return float(acc), float(np.mean(pred_forget == 1))


def efficacy_mia(member_conf: np.ndarray, nonmember_conf: np.ndarray, forget_conf: np.ndarray) -> float:
    """SalUn / Unlearn-Sparse MIA-Efficacy (``SVC_MIA_forget_efficacy``, "confidence" features): an SVC
    (rbf, C=3, gamma="auto") on the true-class confidence, trained on remaining samples (members, 1) vs
    test samples (non-members, 0), applied to D_f; the percentage of D_f predicted non-member."""
    from sklearn.svm import SVC

    if len(forget_conf) == 0 or len(member_conf) == 0 or len(nonmember_conf) == 0:
        return float("nan")
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    x = np.concatenate([member_conf, nonmember_conf]).reshape(-1, 1)
    clf.fit(x, np.concatenate([np.ones(len(member_conf)), np.zeros(len(nonmember_conf))]))
    return float(100.0 * (1.0 - clf.predict(forget_conf.reshape(-1, 1)).mean()))


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
    """Mean absolute difference to the oracle over (RA, FA, TA, MIA) in percentage points
    (``mia_official``, a fraction, counts x100). NaN when any of them is NaN on either side: a gap is
    never averaged over fewer metrics than it names."""
    gaps = []
    for k in keys:
        a, b = metrics.get(k, float("nan")), oracle.get(k, float("nan"))
        if math.isnan(a) or math.isnan(b):
            return float("nan")
        gaps.append(abs(a - b) * (100.0 if k in FRACTION_KEYS else 1.0))
    return float(np.mean(gaps)) if gaps else float("nan")
