"""CaMU against an independent derivation from shared/docs/camu-method.md, on MNIST-style pixel data
(scikit-learn's digits, normalised like MNIST is): the official counterfactual (U[0,1) noise on raw
[0, 1] pixels, as the official loaders give them) and the first two steps' losses, computed here with
plain torch and torch.optim.Adam.

The random draws follow the documented streams (a CPU generator per (seed, tag, epoch), consumed as
the docstrings of ``make_pairing`` and ``Camu`` say), so that the same samples are drawn; everything
else (pixels, noise, counterfactual labels, targets, KL and CE, the two optimizers) is re-derived."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from camu import build_model, forget_indices, make_split, official_params, retain_indices
from camu.data import load_dataset
from camu.loop import run_method
from camu.methods import UnlearnContext
from camu.training import TrainRecipe, train_classifier

CPU = torch.device("cpu")
SEED = 4
MEAN, STD = 0.30, 0.38  # digits are stored normalised like MNIST: (pixel - mean) / std


def generator(tag: int, epoch: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((SEED * 1_000_003 + tag * 10_007 + epoch) % (2**63))


@pytest.fixture(scope="module")
def setup():
    data = load_dataset("digits")
    torch.manual_seed(0)
    f0 = build_model("mnist_cnn", {}, 1, 10, (8, 8))
    train_classifier(f0, data.train, torch.arange(len(data.train)), TrainRecipe(epochs=2, batch_size=64), CPU)
    split = make_split("classes", {"classes": [3]}, data.train.labels, data.class_names, 0)
    return data, f0.eval(), forget_indices(split), retain_indices(split)


def official_steps(data, f0, forget, retain, params, steps: int) -> tuple[list[float], list[float], torch.Tensor]:
    """The official algorithm, re-derived: returns the first ``steps`` (L_rep, L_out) and the x_cf pixels."""
    x_all, y_all = data.train.images, data.train.labels
    g = generator(1)
    pool = retain[torch.randperm(len(retain), generator=g)[: len(forget)]]  # D_s: |D_s| = |D_f|, uniform in D_r
    partner = pool[torch.randperm(len(pool), generator=g)]                     # random 1:1 pairing
    y_f, y_cf = y_all[forget], y_all[partner].clone()
    clash = y_cf == y_f                                                       # partner label, redrawn when = y_f
    draw = torch.randint(0, 9, (int(clash.sum()),), generator=g)
    y_cf[clash] = draw + (draw >= y_f[clash]).long()
    pixels_s = x_all[partner] * STD + MEAN                                    # raw [0, 1] pixels
    pixels_cf = pixels_s + torch.rand(pixels_s.shape, generator=generator(2))  # + U[0, 1) in pixel units
    x_cf = (pixels_cf - MEAN) / STD                                           # as every input: normalised
    with torch.no_grad():
        cf_target = F.softmax(f0(x_cf)[1], dim=1)
        pool_target = F.softmax(f0(x_all[pool])[1], dim=1)
    f = copy.deepcopy(f0).train()
    opt_rep = torch.optim.Adam(f.parameters(), lr=params.lr_rep, weight_decay=1e-4)
    opt_out = torch.optim.Adam(f.parameters(), lr=params.lr_out, weight_decay=1e-4)
    order = generator(3)
    tuples = list(torch.split(torch.randperm(len(forget), generator=order), params.batch_size))
    keeps = list(torch.split(torch.randperm(len(pool), generator=order), params.batch_size))
    rep, out = [], []
    for t, k in list(zip(tuples, keeps))[:steps]:
        x_f, x_s, y_s = x_all[forget[t]], x_all[pool[k]], y_all[pool[k]]
        kl = lambda target, emb: F.kl_div(F.log_softmax(emb, dim=1), target, reduction="sum")
        loss_rep = (params.w_rep_keep * kl(pool_target[k], f(x_s)[1]) + params.w_rep_forget * kl(cf_target[t], f(x_f)[1]))
        opt_rep.zero_grad()
        loss_rep.backward()
        opt_rep.step()
        loss_out = params.w_out_keep * F.cross_entropy(f(x_s)[0], y_s) + params.w_out_forget * F.cross_entropy(f(x_f)[0], y_cf[t])
        opt_out.zero_grad()
        loss_out.backward()
        opt_out.step()
        rep.append(loss_rep.item())
        out.append(loss_out.item())
    return rep, out, pixels_cf - pixels_s


def test_official_counterfactual_and_first_steps(setup):
    data, f0, forget, retain = setup
    params = official_params("mnist", "classes")
    assert params.noise == "uniform" and params.noise_scale == 1.0 and params.mix == 0  # U[0,1) pixels
    expected_rep, expected_out, noise = official_steps(data, f0, forget, retain, params, steps=2)
    assert float(noise.min()) >= 0 and float(noise.max()) < 1  # the official noise, in pixel units
    assert float(noise.max()) > 0.9  # ... not the 1/std-times weaker noise of normalised units
    result = run_method("camu", params, UnlearnContext(f0, data, forget, retain, CPU, seed=SEED))
    assert result.history["loss_rep"][:2] == pytest.approx(expected_rep, rel=1e-4)
    assert result.history["loss_out"][:2] == pytest.approx(expected_out, rel=1e-4)


def test_counterfactual_noise_is_in_pixel_units(setup):
    """What f0 sees as x_cf is the partner plus U[0,1) *pixels* (x_cf - x_s in normalised units is
    U[0, 1/std)), whatever the normalisation."""
    data, f0, forget, retain = setup
    seen = []
    hook = f0.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    try:
        run_method("camu", official_params("mnist", "classes").model_copy(update={"epochs": 1}),
                   UnlearnContext(f0, data, forget, retain, CPU, seed=SEED))
    finally:
        hook.remove()
    x_cf = seen[0]
    images = data.train.images
    residual = (x_cf[:, None] - images[None]) * STD  # in pixel units, against every training image
    fits = ((residual >= -1e-6) & (residual < 1 + 1e-6)).flatten(2).all(2)
    assert bool(fits.any(1).all())  # each x_cf is some partner + U[0,1) pixel noise
    assert float(residual[fits].max()) > 0.9


def test_cifar_preset_reproduces_noise_on_imagenet_normalised_tensors():
    """Official CIFAR: U[0,1) added to ImageNet-normalised tensors = U[0,1) x ImageNet std per channel in pixels."""
    for kind in ("classes", "random"):
        assert official_params("cifar10", kind).noise_scale == [0.229, 0.224, 0.225]
