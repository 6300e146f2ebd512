"""Per-example membership (LiRA-style) against independent expressions: the logit-scaled confidence,
the Gaussian likelihood ratio, the AUC / TPR at 1% FPR, and the shadows' balanced in/out design."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from camu.privacy import auc, lira_fit, lira_scores, logit_confidence, per_example_privacy, tpr_at_fpr


def test_logit_confidence_is_log_odds_of_the_true_class():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits, 1)[torch.arange(2), labels]
    assert logit_confidence(logits, labels) == pytest.approx(torch.log(p / (1 - p)).numpy(), rel=1e-5)
    sure = logit_confidence(torch.tensor([[60.0, 0.0]]), torch.tensor([0]))
    assert math.isfinite(sure[0]) and sure[0] > 50  # no overflow where p rounds to 1


def test_likelihood_ratio_against_its_definition():
    rng = np.random.default_rng(0)
    in_mask = np.array([[True, False], [False, True], [True, False], [False, True]])
    phi = rng.normal(size=(4, 2)) + 3 * in_mask
    fit = lira_fit(phi, in_mask)
    mu_in = np.array([phi[[0, 2], 0].mean(), phi[[1, 3], 1].mean()])
    mu_out = np.array([phi[[1, 3], 0].mean(), phi[[0, 2], 1].mean()])
    sd_in = np.concatenate([phi[[0, 2], 0] - mu_in[0], phi[[1, 3], 1] - mu_in[1]]).std()
    sd_out = np.concatenate([phi[[1, 3], 0] - mu_out[0], phi[[0, 2], 1] - mu_out[1]]).std()
    x = np.array([2.5, -0.3])
    normal = lambda v, m, s: math.exp(-0.5 * ((v - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    expected = [math.log(normal(x[i], mu_in[i], sd_in) / normal(x[i], mu_out[i], sd_out)) for i in range(2)]
    assert lira_scores(fit, x) == pytest.approx(expected, rel=1e-6)


def test_auc_and_tpr_at_low_fpr():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    negative = np.arange(1000.0)
    assert tpr_at_fpr(np.array([995.0, 999.5, 10.0, 20.0]), negative, 0.01) == pytest.approx(0.5)  # > 989.01


def test_a_model_that_forgot_nothing_is_caught_and_the_oracle_is_not():
    rng = np.random.default_rng(1)
    n, k = 400, 8
    masks = np.stack([rng.random(n) < 0.5 for _ in range(k)])
    masks[-1] = ~masks[0]  # everyone in and out at least once
    masks[-2] = masks[0]
    hardness = rng.normal(size=n)
    phi = hardness + 4.0 * masks + rng.normal(scale=0.5, size=(k, n))
    fit = lira_fit(phi, masks)
    never = hardness + rng.normal(scale=0.5, size=n)        # a model that never saw D_f (the oracle)
    remembered = hardness + 4.0 + rng.normal(scale=0.5, size=n)  # a model that still holds D_f
    oracle = hardness + rng.normal(scale=0.5, size=n)
    assert per_example_privacy(fit, remembered, oracle)["lira_auc"] > 0.95
    assert per_example_privacy(fit, remembered, oracle)["lira_tpr_at_1pct_fpr"] > 0.5
    assert 0.4 < per_example_privacy(fit, never, oracle)["lira_auc"] < 0.6


def test_every_forgotten_sample_is_in_half_of_the_shadows():
    from orchestrator.driver.privacy import shadow_membership

    masks = shadow_membership(101, 8, seed=3)
    assert masks.shape == (8, 101) and (masks.sum(0) == 4).all()
    assert not np.array_equal(masks[0], shadow_membership(101, 8, seed=4)[0])  # seeded per split seed
    with pytest.raises(ValueError, match="at least one 'in' and one 'out'"):
        lira_fit(np.zeros((2, 3)), np.ones((2, 3), dtype=bool))
