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
    assert acc > 0.9 and rate > 0.9          # forget set looks like members: attack succeeds (a fraction)
    acc2, rate2 = official_mia(confident[:200], unsure[:200], unsure[200:250], unsure[250:])
    assert rate2 < 0.1 and 0.4 <= acc2 <= 0.6  # forget set looks like test data: chance accuracy


def test_official_mia_is_the_official_attack(monkeypatch):
    """XGBoost with 100 trees and library defaults otherwise, fitted on members (1) vs non-members (0),
    scored on every forget sample (1) and the held-out test samples (0), reported as accuracy."""
    import xgboost

    seen = {}

    class Recorder:
        def __init__(self, **kwargs):
            seen["kwargs"] = kwargs

        def fit(self, x, y):
            seen["fit"] = (x.copy(), y.copy())

        def predict(self, x):
            seen.setdefault("predict", []).append(x.copy())
            return (x[:, 0] > 0.5).astype(int)  # a fixed rule, so the accuracy can be checked by hand

    monkeypatch.setattr(xgboost, "XGBClassifier", Recorder)
    members, nonmembers = np.full((3, 2), 0.9), np.full((5, 2), 0.2)
    forget = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.7, 0.3]])
    heldout = np.array([[0.1, 0.9], [0.6, 0.4]])
    acc, rate = official_mia(members, nonmembers, forget, heldout, seed=3)
    assert seen["kwargs"]["n_estimators"] == 100 and "max_depth" not in seen["kwargs"]
    x, y = seen["fit"]
    assert x.shape == (8, 2) and y.tolist() == [1] * 3 + [0] * 5
    assert [p.shape[0] for p in seen["predict"]] == [4, 2]  # all of D_f, then the held-out samples
    assert acc == pytest.approx((3 + 1) / 6) and rate == pytest.approx(3 / 4)


def test_efficacy_mia_against_its_definition():
    """SalUn's SVC_MIA_forget_efficacy ("confidence"): SVC(C=3, gamma='auto', rbf) on true-class
    confidence, remaining (1) vs test (0), applied to D_f; % of D_f predicted non-member."""
    from sklearn.svm import SVC

    from camu.metrics import efficacy_mia

    rng = np.random.default_rng(1)
    member, test = rng.beta(20, 1, 200), rng.beta(4, 3, 200)
    forget = np.concatenate([rng.beta(20, 1, 30), rng.beta(4, 3, 70)])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(np.concatenate([member, test])[:, None],
                                                   np.r_[np.ones(200), np.zeros(200)])
    expected = 100 * (1 - clf.predict(forget[:, None]).mean())
    assert efficacy_mia(member, test, forget) == pytest.approx(expected)
    assert 55 < expected < 85  # most of the unsure 70% read as non-members


def test_average_gap_is_nan_when_a_metric_is_and_counts_the_mia_in_points():
    m = {"ra": 99.0, "fa": 10.0, "ta": 90.0, "mia_official": 0.50}
    o = {"ra": 100.0, "fa": 0.0, "ta": 92.0, "mia_official": 0.42}
    assert average_gap(m, o) == pytest.approx((1 + 10 + 2 + 8) / 4)  # the MIA fraction counts x100
    assert math.isnan(average_gap(m, {**o, "mia_official": float("nan")}))  # never over fewer metrics
    assert average_gap(m, m) == 0.0


def test_the_official_attack_trains_on_as_many_members_as_non_members(monkeypatch):
    """As the official train_attack_model: the first ~4,000 rows of the shuffled D_s loader against the
    first ~4,000 test samples; all of a larger D_s would tilt the attack towards 'member'."""
    import torch

    from camu import evaluation

    seen = {}

    def capture(members, nonmembers, forget, heldout, seed=0):
        seen.update(members=members, nonmembers=nonmembers, forget=forget, heldout=heldout)
        return 0.5, 0.5

    monkeypatch.setattr(evaluation, "official_mia", capture)
    torch.manual_seed(0)
    n_train, n_test = 9000, 10000
    train_logits, test_logits = torch.randn(n_train, 10), torch.randn(n_test, 10)
    y_train, y_test = torch.randint(0, 10, (n_train,)), torch.randint(0, 10, (n_test,))
    forget, retain = torch.arange(0, 1000), torch.arange(1000, 9000)
    members = torch.arange(1000, 7000)  # |D_s| = 6,000 > the 4,000 non-members
    evaluation._part_metrics(train_logits, test_logits, y_train, y_test, forget, retain, torch.arange(n_test),
                             members, [], seed=3)
    assert len(seen["members"]) == len(seen["nonmembers"]) == 4000
    assert len(seen["forget"]) == 1000 and len(seen["heldout"]) == 1000
    # members are a seeded random subset of D_s: rows of D_s's own sorted softmax
    expected = torch.sort(torch.softmax(train_logits[members], 1), 1, descending=True).values.numpy()
    rows = {tuple(r) for r in expected.round(6).tolist()}
    assert all(tuple(r) in rows for r in seen["members"].round(6).tolist())
