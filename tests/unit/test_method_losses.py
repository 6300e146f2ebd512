"""Each method's loss (or update) on a tiny fixed input against an independent expression of its paper's
formula written here with plain torch, not a snapshot of the implementation's output.

The first step of every method is taken at the original's weights, on a batch that holds the whole set
it iterates over (batch_size >= its size), so the expected value is the formula evaluated at f0 on
that set (means are order-invariant)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from camu import build_model, forget_indices, make_split, retain_indices
from camu.data import load_dataset
from camu.loop import run_method, run_unlearning
from camu.methods import METHODS, UnlearnContext
from camu.training import TrainRecipe, train_classifier

CPU = torch.device("cpu")
ALL = 4096  # a batch larger than any set here: one step per pass


@pytest.fixture(scope="module")
def toy():
    data = load_dataset("synthetic", {"num_train": 120, "num_test": 30, "num_classes": 3, "image_size": 8, "seed": 7})
    torch.manual_seed(1)
    initial = build_model("mnist_cnn", {}, 1, 3, (8, 8))
    original = copy.deepcopy(initial)
    train_classifier(original, data.train, torch.arange(120), TrainRecipe(epochs=2, batch_size=30), CPU)
    split = make_split("classes", {"classes": [2]}, data.train.labels, data.class_names, 0)
    f, r = forget_indices(split), retain_indices(split)
    x, y = data.train.images, data.train.labels
    return {"data": data, "initial": initial, "f0": original.eval(), "forget": f, "retain": r,
            "xf": x[f], "yf": y[f], "xr": x[r], "yr": y[r]}


def ctx(toy, seed: int = 3) -> UnlearnContext:
    return UnlearnContext(toy["f0"], toy["data"], toy["forget"], toy["retain"], CPU, seed=seed, initial=toy["initial"])


def logits(model, x):
    with torch.no_grad():
        return model(x)[0]


def ce(model, x, y):
    return F.cross_entropy(logits(model, x), y).item()


def first(name: str, toy, **params) -> dict[str, list[float]]:
    return run_method(name, {"epochs": 1, **params}, ctx(toy)).history


def test_finetune_is_cross_entropy_on_the_retained_set(toy):
    assert first("finetune", toy, batch_size=ALL)["loss"][0] == pytest.approx(ce(toy["f0"], toy["xr"], toy["yr"]), rel=1e-5)


def test_neggrad_is_negative_cross_entropy_on_the_forget_set(toy):
    assert first("neggrad", toy, batch_size=ALL)["loss"][0] == pytest.approx(-ce(toy["f0"], toy["xf"], toy["yf"]), rel=1e-5)


def test_neggrad_plus_mixes_descent_on_retained_and_ascent_on_forgotten(toy):
    alpha = 0.8
    expected = alpha * ce(toy["f0"], toy["xr"], toy["yr"]) - (1 - alpha) * ce(toy["f0"], toy["xf"], toy["yf"])
    assert first("neggrad_plus", toy, batch_size=ALL, forget_batch_size=ALL, alpha=alpha)["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_l1_sparse_adds_the_l1_norm_of_all_weights(toy):
    alpha = 1e-3
    l1 = sum(p.abs().sum() for p in toy["f0"].parameters()).item()
    expected = ce(toy["f0"], toy["xr"], toy["yr"]) + alpha * l1
    assert first("l1_sparse", toy, batch_size=ALL, alpha=alpha)["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_l1_weight_decays_linearly_to_zero():
    from camu.methods.l1_sparse import l1_weight

    assert [l1_weight(1.0, e, 4, 0) for e in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [l1_weight(1.0, e, 4, 2) for e in range(4)] == [1.0, 0.5, 0.0, 0.0]


def test_random_label_is_cross_entropy_against_uniform_labels(toy):
    """The labels are the documented stream: uniform over all K classes from the run's generator."""
    run = ctx(toy)
    labels = torch.randint(0, 3, (len(toy["forget"]),), generator=run.epoch_generator(13, 0))
    order = torch.randperm(len(toy["forget"]), generator=run.epoch_generator(12, 0))
    x = toy["data"].train.images[toy["forget"][order]]
    expected = F.cross_entropy(logits(toy["f0"], x), labels).item()
    assert first("random_label", toy, batch_size=ALL)["loss_forget"][0] == pytest.approx(expected, rel=1e-5)


def test_salun_moves_only_the_salient_weights(toy):
    """The mask keeps the top mask_ratio of |grad of -CE on D_f| at f0; every other weight stays put."""
    ratio = 0.3
    model = copy.deepcopy(toy["f0"])
    model.zero_grad()
    (-F.cross_entropy(model(toy["xf"])[0], toy["yf"])).backward()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).abs()
    threshold = torch.sort(grads, descending=True).values[int(len(grads) * ratio) - 1]
    result = run_method("salun", {"epochs": 2, "batch_size": ALL, "mask_ratio": ratio}, ctx(toy))
    before = torch.cat([p.reshape(-1) for p in toy["f0"].parameters()])
    after = torch.cat([p.detach().reshape(-1) for p in result.model.parameters()])
    moved = after != before
    assert moved.any() and bool((grads[moved] >= threshold * (1 - 1e-5)).all())
    assert int(moved.sum()) <= int(len(grads) * ratio)


def test_bad_teacher_is_kl_to_the_sample_s_teacher(toy):
    method = METHODS.get("bad_teacher")()
    temperature = 2.0
    result = run_unlearning(method, method.Params(epochs=1, batch_size=ALL, temperature=temperature,
                                                  retain_fraction=1.0, lr=1e-4), ctx(toy))
    x = torch.cat([toy["xf"], toy["xr"]])
    teacher = torch.cat([F.softmax(logits(method.incompetent, toy["xf"]) / temperature, dim=1),
                         F.softmax(logits(method.competent, toy["xr"]) / temperature, dim=1)])
    student = F.log_softmax(logits(toy["f0"], x) / temperature, dim=1)
    expected = (teacher * (teacher.log() - student)).mean().item()  # torch's kl_div default: element mean
    assert result.history["loss"][0] == pytest.approx(expected, rel=1e-4)


def test_scrub_min_step_and_distillation_formula(toy):
    from camu.methods.scrub import distill_kl

    gamma = 0.7
    history = first("scrub", toy, batch_size=ALL, msteps=0, gamma=gamma, alpha=0.5)
    assert history["loss_min"][0] == pytest.approx(gamma * ce(toy["f0"], toy["xr"], toy["yr"]), rel=1e-5)  # KL(f0||f0)=0
    s, t, temp = torch.randn(5, 4), torch.randn(5, 4), 3.0
    p_t, p_s = F.softmax(t / temp, 1), F.softmax(s / temp, 1)
    assert distill_kl(s, t, temp) == pytest.approx((p_t * (p_t / p_s).log()).sum(1) * temp**2, rel=1e-5)
    history = first("scrub", toy, batch_size=ALL, forget_batch_size=ALL, msteps=1)
    assert history["loss_max"][0] == pytest.approx(0.0, abs=1e-6)  # student == teacher at the first max-step


def test_boundary_shrink_trains_towards_the_fgsm_neighbour_class(toy):
    """Independent FGSM: one signed-gradient step of 0.1 on f0's loss (synthetic data: no pixel clamp)."""
    x = toy["xf"].clone().requires_grad_(True)
    F.cross_entropy(toy["f0"](x)[0], toy["yf"]).backward()
    neighbour = logits(toy["f0"], toy["xf"] + 0.1 * x.grad.sign()).argmax(1)
    expected = F.cross_entropy(logits(toy["f0"], toy["xf"]), neighbour).item()
    assert first("boundary_shrink", toy, batch_size=ALL, bound=0.1)["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_boundary_shrink_clamps_and_rounds_in_pixel_space():
    from camu.methods.base import UnlearnContext as Ctx
    from camu.methods.boundary import fgsm_neighbour_labels

    data = load_dataset("digits")
    torch.manual_seed(0)
    f0 = build_model("mnist_cnn", {}, 1, 10, (8, 8)).eval()
    x, y = data.train.images[:16], data.train.labels[:16]
    seen = []
    f0.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    fgsm_neighbour_labels(f0, x, y, 0.1, Ctx(f0, data, torch.arange(1), torch.arange(2), CPU))
    pixels = data.to_pixels(seen[-1])  # the perturbed batch the labels come from
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    assert torch.allclose(pixels * 255, (pixels * 255).round(), atol=1e-3)  # on the 1/255 grid
    assert float((pixels - data.to_pixels(x)).abs().max()) <= 0.1 + 1 / 255


def test_boundary_expanding_pushes_forget_samples_into_a_shadow_class(toy):
    """CE against class K of the expanded head (K = 3 here) on D_f; the head is back to K outputs after."""
    captured = {}

    class Capture(METHODS.get("boundary_expanding")):
        def prepare(self, run, params):
            captured["expanded"] = copy.deepcopy(run.model).eval()

    method = Capture()
    result = run_unlearning(method, method.Params(epochs=1, batch_size=ALL, lr=1e-3), ctx(toy))
    expected = F.cross_entropy(logits(captured["expanded"], toy["xf"]), torch.full((len(toy["xf"]),), 3)).item()
    assert result.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert logits(captured["expanded"], toy["xf"]).shape[1] == 4 and logits(result.model, toy["xf"]).shape[1] == 3


def test_unrolling_adds_the_forget_gradient_at_the_initial_weights(toy):
    lr, scale = 0.01, 7
    w0 = copy.deepcopy(toy["initial"]).train()
    grads = torch.autograd.grad(F.cross_entropy(w0(toy["xf"])[0], toy["yf"]), list(w0.parameters()))
    result = run_method("unrolling_sgd", {"lr": lr, "scale": scale, "batch_size": ALL}, ctx(toy))
    for p0, g, p in zip(toy["f0"].parameters(), grads, result.model.parameters()):
        assert torch.allclose(p, p0 + lr * scale * g, atol=1e-6)
