import math

import numpy as np
import pytest
import torch

from camu.metrics import accuracy, average_gap, loss_mia_auc, official_mia, sorted_softmax


def test_accuracy_on_hand_made_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == 75.0
    assert math.isnan(accuracy(logits[:0], torch.tensor([], dtype=torch.long)))


def test_sorted_softmax_is_descending_and_normalised():
    feats = sorted_softmax(torch.tensor([[0.0, 3.0, 1.0]]))
    assert np.all(np.diff(feats[0]) <= 0) and feats.sum() == pytest.approx(1.0)


def test_loss_auc_extremes():
    assert loss_mia_auc(np.array([0.1, 0.2]), np.array([1.0, 2.0])) == 1.0
    assert loss_mia_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 0.0
    assert loss_mia_auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5


def test_official_mia_separates_confident_members_from_unsure_nonmembers():
    rng = np.random.default_rng(0)
    confident = np.sort(rng.dirichlet([50, 1, 1], 300), axis=1)[:, ::-1]
    unsure = np.sort(rng.dirichlet([2, 2, 2], 300), axis=1)[:, ::-1]
    acc, rate = official_mia(confident[:200], unsure[:200], confident[200:], unsure[200:])
    assert acc > 90 and rate > 90           # forget set looks like members: attack succeeds
    acc2, rate2 = official_mia(confident[:200], unsure[:200], unsure[200:250], unsure[250:])
    assert rate2 < 10 and 40 <= acc2 <= 60  # forget set looks like test data: chance accuracy


def test_average_gap_ignores_nan():
    m = {"ra": 99.0, "fa": 10.0, "ta": 90.0, "mia_official": 50.0}
    o = {"ra": 100.0, "fa": 0.0, "ta": 92.0, "mia_official": float("nan")}
    assert average_gap(m, o) == pytest.approx((1 + 10 + 2) / 3)
    assert average_gap(m, m) == 0.0
