import pytest
import torch

from camu.counterfactual import (
    counterfactual_images,
    make_pairing,
    redraw_equal_labels,
    sample_noise,
    soft_targets,
)

LABELS = torch.arange(200) % 4
FORGET = torch.arange(0, 200, 10)          # 20 forgetting samples
RETAIN = torch.tensor([i for i in range(200) if i % 10])


def test_official_pairing_is_one_to_one_within_the_pool():
    p = make_pairing(FORGET, RETAIN, LABELS, 4, 1.0, 1, "partner", torch.Generator().manual_seed(0))
    assert len(p.pool) == len(FORGET)                      # |D_s| = |D_f|
    assert set(p.pool.tolist()) <= set(RETAIN.tolist())
    assert sorted(p.partner.tolist()) == sorted(p.pool.tolist())  # each partner used exactly once


@pytest.mark.parametrize("policy", ["partner", "uniform_other", "soft"])
def test_counterfactual_label_never_equals_forgetting_label(policy):
    for seed in range(20):
        p = make_pairing(FORGET, RETAIN, LABELS, 4, 2.0, 3, policy, torch.Generator().manual_seed(seed))
        assert len(p.forget) == 60 and len(p.pool) == 120
        assert not torch.any(p.cf_label == LABELS[p.forget])


def test_partner_labels_kept_when_they_differ():
    p = make_pairing(FORGET, RETAIN, LABELS, 4, 1.0, 1, "partner", torch.Generator().manual_seed(1))
    differ = LABELS[p.partner] != LABELS[p.forget]
    assert torch.equal(p.cf_label[differ], LABELS[p.partner][differ])


def test_redraw_is_uniform_over_other_classes():
    y_f = torch.zeros(30000, dtype=torch.long)
    drawn = redraw_equal_labels(y_f.clone(), y_f, 4, torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=4)
    assert counts[0] == 0
    assert torch.allclose(counts[1:].float() / 30000, torch.full((3,), 1 / 3), atol=0.02)


def test_noise_and_mixing():
    g = torch.Generator().manual_seed(0)
    eps = sample_noise(torch.Size([1000]), "uniform", 1.0, g, torch.device("cpu"))
    assert 0 <= float(eps.min()) and float(eps.max()) < 1
    assert torch.equal(sample_noise(torch.Size([3]), "none", 1.0, g, torch.device("cpu")), torch.zeros(3))
    xs, xf = torch.zeros(4), torch.ones(4)
    assert torch.equal(counterfactual_images(xs, xf, eps[:4], 0.0), eps[:4])
    assert torch.allclose(counterfactual_images(xs, xf, torch.zeros(4), 0.25), torch.full((4,), 0.25))


def test_soft_targets_remove_forgetting_class():
    t = soft_targets(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0]))
    assert t[0, 0] == 0 and t.sum() == pytest.approx(1.0)
