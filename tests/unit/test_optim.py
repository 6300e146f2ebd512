"""camu.optim: the fused optimizers compute torch's documented Adam and SGD updates."""

from __future__ import annotations

import math

import torch
from torch import nn

from camu.optim import adam, fused_supported, sgd


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _grads(step: int, model: nn.Module) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen) for p in model.parameters()]


def test_cpu_parameters_get_the_fused_kernel_and_other_devices_do_not() -> None:
    model = _model()
    assert fused_supported(list(model.parameters()))
    assert adam(model.parameters(), 1e-3).defaults["fused"] is True
    assert sgd(model.parameters(), 1e-2, 0.9).defaults["fused"] is True
    meta = [nn.Parameter(torch.empty(3, device="meta"))]
    assert not fused_supported(meta)
    assert adam(meta, 1e-3).defaults["fused"] is None


def test_adam_is_the_adam_formula_with_l2_decay() -> None:
    """Three steps against Adam written out (Kingma & Ba with torch's L2 term g + wd * theta)."""
    model, lr, wd, b1, b2, eps = _model(), 1e-2, 1e-2, 0.9, 0.999, 1e-8
    theta = [p.detach().clone() for p in model.parameters()]
    m = [torch.zeros_like(t) for t in theta]
    v = [torch.zeros_like(t) for t in theta]
    opt = adam(model.parameters(), lr, wd)
    for step in range(1, 4):
        grads = _grads(step, model)
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            g = g + wd * theta[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1 ** step), v[i] / (1 - b2 ** step)
            theta[i] = theta[i] - lr * m_hat / (v_hat.sqrt() + eps)
    for p, t in zip(model.parameters(), theta):
        assert torch.allclose(p.detach(), t, atol=1e-6, rtol=0), (p.detach() - t).abs().max()


def test_sgd_is_the_momentum_formula_with_l2_decay() -> None:
    model, lr, mom, wd = _model(), 0.05, 0.9, 1e-3
    theta = [p.detach().clone() for p in model.parameters()]
    buf: list[torch.Tensor | None] = [None] * len(theta)
    opt = sgd(model.parameters(), lr, mom, wd)
    for step in range(1, 4):
        grads = _grads(step, model)
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            d = g + wd * theta[i]
            buf[i] = d if buf[i] is None else mom * buf[i] + d
            theta[i] = theta[i] - lr * buf[i]
    for p, t in zip(model.parameters(), theta):
        assert torch.allclose(p.detach(), t, atol=1e-6, rtol=0)
    assert math.isclose(opt.param_groups[0]["lr"], lr)
