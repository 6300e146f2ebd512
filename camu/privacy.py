"""Per-example membership evaluation in the LiRA style (Carlini et al. 2022) as Hayes et al. 2024
("Inexact unlearning needs more careful evaluations", arXiv 2403.01218) adapt it to unlearning.

K shadow models are trained with the job's recipe on D_r plus a random half of D_f, so every forgotten
sample x has "in" shadows (trained on it) and "out" shadows (never saw it). From the shadows'
logit-scaled confidences phi = log(p_y / (1 - p_y)) each x gets an "in" and an "out" Gaussian (its own
means, variances pooled over all samples: with a few shadows per side, per-sample variances are too
noisy, LiRA's "fixed variance" variant). A model's membership score on x is the log likelihood ratio

  Lambda(x) = log N(phi(x); mu_in(x), s_in^2) - log N(phi(x); mu_out(x), s_out^2).

The question unlearning must answer: does the model look, on each forgotten sample, like a model that
never saw it? So the attack compares the pairs (model, x) of the evaluated model with those of the
retrain oracle on the same D_f: ``auc`` is the AUC of Lambda_model(x) (label 1) against Lambda_oracle(x)
(label 0) over x in D_f, ``tpr_at_1pct_fpr`` the fraction of D_f flagged at the threshold that flags 1%
of the oracle's. Ideal unlearning: 0.5 and 0.01 (the oracle's own values); the original model shows the
attack's reach on a model that forgot nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EPS = 1e-6


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)), computed stably from the logits (log p_y - log sum_{k != y} p_k)."""
    logits = logits.float()
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


@dataclass(frozen=True)
class LiraFit:
    """Per-sample in/out means and the pooled in/out standard deviations."""

    mu_in: np.ndarray
    mu_out: np.ndarray
    sd_in: float
    sd_out: float


def lira_fit(shadow_phi: np.ndarray, in_mask: np.ndarray) -> LiraFit:
    """Fit from ``shadow_phi`` (K shadows x n samples) and ``in_mask`` (K x n: shadow k trained on sample
    i). Every sample needs at least one in and one out shadow."""
    in_count, out_count = in_mask.sum(0), (~in_mask).sum(0)
    if (in_count == 0).any() or (out_count == 0).any():
        raise ValueError("every sample needs at least one 'in' and one 'out' shadow model; use more shadows")
    mu_in = (shadow_phi * in_mask).sum(0) / in_count
    mu_out = (shadow_phi * ~in_mask).sum(0) / out_count
    resid_in = (shadow_phi - mu_in)[in_mask]
    resid_out = (shadow_phi - mu_out)[~in_mask]
    return LiraFit(mu_in, mu_out, float(max(resid_in.std(), EPS)), float(max(resid_out.std(), EPS)))


def lira_scores(fit: LiraFit, phi: np.ndarray) -> np.ndarray:
    """Lambda(x) for every sample: the Gaussian log likelihood ratio in vs out."""
    def log_normal(x: np.ndarray, mu: np.ndarray, sd: float) -> np.ndarray:
        return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)

    return log_normal(phi, fit.mu_in, fit.sd_in) - log_normal(phi, fit.mu_out, fit.sd_out)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(positive > negative) + P(tie) / 2 (the ROC AUC)."""
    from sklearn.metrics import roc_auc_score

    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(len(positive)), np.zeros(len(negative))], np.r_[positive, negative]))


def tpr_at_fpr(positive: np.ndarray, negative: np.ndarray, fpr: float = 0.01) -> float:
    """Fraction of ``positive`` above the threshold that only a fraction ``fpr`` of ``negative`` exceeds."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    threshold = np.quantile(negative, 1 - fpr)
    return float(np.mean(positive > threshold))


def per_example_privacy(fit: LiraFit, phi_model: np.ndarray, phi_oracle: np.ndarray) -> dict[str, float]:
    """``lira_auc`` and ``lira_tpr_at_1pct_fpr`` of a model against the retrain oracle on D_f."""
    model, oracle = lira_scores(fit, phi_model), lira_scores(fit, phi_oracle)
    return {"lira_auc": auc(model, oracle), "lira_tpr_at_1pct_fpr": tpr_at_fpr(model, oracle, 0.01)}
