"""Each baseline's parameter update against the reference's update written out here: the reference's loss
(its formula, not ours) differentiated with plain autograd at the original's weights, then the reference's
optimizer rule (torch.optim.SGD / Adam written out: coupled weight decay, momentum buffer, first-step bias
correction). Same parameter change within float tolerance; and, at each reference's batch sizes, the same
number of optimizer steps per epoch as its loaders would give (drop_last=False: ceil(n / batch)).

Every run uses a batch that holds the whole set it iterates over (``ALL``) where the update is checked,
so the expected step is the formula's gradient on that set (means are order-invariant)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from camu import build_model, forget_indices, make_split, retain_indices
from camu.data import load_dataset
from camu.loop import run_method, run_unlearning
from camu.methods import METHODS, Setting, UnlearnContext
from camu.training import TrainRecipe, train_classifier

CPU = torch.device("cpu")
ALL = 4096
K = 3


@pytest.fixture(scope="module")
def toy():
    data = load_dataset(
        "synthetic", {"num_train": 120, "num_test": 30, "num_classes": K, "image_size": 8, "seed": 5}
    )
    torch.manual_seed(2)
    initial = build_model("mnist_cnn", {}, 1, K, (8, 8))
    original = copy.deepcopy(initial)
    train_classifier(original, data.train, torch.arange(120), TrainRecipe(epochs=2, batch_size=30), CPU)
    split = make_split("classes", {"classes": [2]}, data.train.labels, data.class_names, 0)
    f, r = forget_indices(split), retain_indices(split)
    x, y = data.train.images, data.train.labels
    return {
        "data": data,
        "initial": initial,
        "f0": original.eval(),
        "forget": f,
        "retain": r,
        "xf": x[f],
        "yf": y[f],
        "xr": x[r],
        "yr": y[r],
    }


def context(toy, seed: int = 3) -> UnlearnContext:
    return UnlearnContext(
        toy["f0"], toy["data"], toy["forget"], toy["retain"], CPU, seed=seed, initial=toy["initial"]
    )


class Reference:
    """A copy of the original whose parameters follow the reference optimizer's rule, step by step."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: str,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.model = copy.deepcopy(model).train()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.optimizer, self.lr, self.momentum, self.wd = optimizer, lr, momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(list(self.model.parameters()))
        self.t = 0

    def step(
        self, loss_of: Callable[[torch.nn.Module], torch.Tensor], keep: list[torch.Tensor] | None = None
    ) -> float:
        """One step on ``loss_of(model)``; ``keep``: SalUn's mask (gradient masked, unmasked weights put back
        and their momentum cleared after the step, as Unlearn-Saliency@a6e89fd)."""
        params = list(self.model.parameters())
        loss = loss_of(self.model)
        grads = torch.autograd.grad(loss, params)
        self.t += 1
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                before = p.detach().clone()
                if keep is not None:
                    g = g * keep[i]
                d = g + self.wd * p
                if self.optimizer == "sgd":
                    if self.momentum:
                        self.buffers[i] = (
                            d.clone() if self.buffers[i] is None else self.momentum * self.buffers[i] + d
                        )
                        d = self.buffers[i]
                    p -= self.lr * d
                else:  # Adam's first step: m_hat = d, v_hat = d^2
                    assert self.t == 1, "only Adam's first step is written out here"
                    p -= self.lr * d / (d.abs() + 1e-8)
                if keep is not None:
                    p.copy_(keep[i] * p + (1 - keep[i]) * before)
                    if self.buffers[i] is not None:
                        self.buffers[i] *= keep[i]
        return float(loss.detach())

    def params(self) -> list[torch.Tensor]:
        return [p.detach() for p in self.model.parameters()]


def assert_same_weights(model: torch.nn.Module, expected: list[torch.Tensor], atol: float = 1e-6) -> None:
    got = [p.detach() for p in model.parameters()]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=atol, rtol=1e-4), float((a - b).abs().max())


def moved(model: torch.nn.Module, original: torch.nn.Module) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(model.parameters(), original.parameters()))


def ce(x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.nn.Module], torch.Tensor]:
    return lambda m: F.cross_entropy(m(x)[0], y)


# ----------------------------------------------------------------------------- one step / one epoch
def test_finetune_step_is_sgd_on_retained_cross_entropy(toy):
    ref = Reference(toy["f0"], "sgd", 0.05, 0.9, 5e-4)
    ref.step(ce(toy["xr"], toy["yr"]))
    result = run_method("finetune", {"epochs": 1, "batch_size": ALL, "lr": 0.05}, context(toy))
    assert moved(result.model, toy["f0"]) > 1e-4
    assert_same_weights(result.model, ref.params())


def test_neggrad_step_is_sgd_ascent_on_forget_cross_entropy(toy):
    ref = Reference(toy["f0"], "sgd", 0.05, 0.9, 5e-4)
    ref.step(lambda m: -F.cross_entropy(m(toy["xf"])[0], toy["yf"]))
    result = run_method("neggrad", {"epochs": 1, "batch_size": ALL, "lr": 0.05}, context(toy))
    assert_same_weights(result.model, ref.params())


def test_neggrad_plus_two_epochs_with_the_pull_towards_the_original(toy):
    """SCRUB's small-scale run_neggrad_epoch:
    alpha * (CE_r + wd/2 * ||theta - theta_0||^2) - (1 - alpha) * CE_f,
    plain SGD; the pull's gradient is 0 at theta_0, so the second step is the one that shows it."""
    alpha, pull, lr = 0.9, 0.5, 0.05
    theta0 = [p.detach().clone() for p in toy["f0"].parameters()]

    def loss(m):
        l2 = sum(((p - p0) ** 2).sum() for p, p0 in zip(m.parameters(), theta0))
        return alpha * (F.cross_entropy(m(toy["xr"])[0], toy["yr"]) + pull / 2 * l2) - (
            1 - alpha
        ) * F.cross_entropy(m(toy["xf"])[0], toy["yf"])

    ref = Reference(toy["f0"], "sgd", lr)
    ref.step(loss)
    ref.step(loss)
    params = {
        "epochs": 2,
        "batch_size": ALL,
        "forget_batch_size": ALL,
        "alpha": alpha,
        "pull": pull,
        "lr": lr,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "eval_mode": True,
    }
    result = run_method("neggrad_plus", params, context(toy))
    assert_same_weights(result.model, ref.params())
    without = run_method("neggrad_plus", {**params, "pull": 0.0}, context(toy))
    assert moved(without.model, result.model) > 1e-6  # the pull changes the second step


def test_l1_sparse_step_adds_the_l1_subgradient(toy):
    alpha = 1e-2
    ref = Reference(toy["f0"], "sgd", 0.05, 0.9, 5e-4)
    ref.step(
        lambda m: (
            F.cross_entropy(m(toy["xr"])[0], toy["yr"]) + alpha * sum(p.abs().sum() for p in m.parameters())
        )
    )
    # epoch 0 of 1: the l1 weight is alpha * (1 - 0 / 1) = alpha (Unlearn-Sparse FT_l1's linear decay)
    result = run_method(
        "l1_sparse", {"epochs": 1, "batch_size": ALL, "lr": 0.05, "alpha": alpha}, context(toy)
    )
    assert_same_weights(result.model, ref.params())


def test_random_label_two_pass_epoch(toy):
    """RL.py's CIFAR-10 branch: a step on D_f with uniform random labels, then a step on D_r (one SGD)."""
    ctx = context(toy)
    labels = torch.randint(0, K, (len(toy["forget"]),), generator=ctx.epoch_generator(13, 0))
    order = torch.randperm(len(toy["forget"]), generator=ctx.epoch_generator(12, 0))
    x_f = toy["data"].train.images[toy["forget"][order]]
    ref = Reference(toy["f0"], "sgd", 0.05, 0.9, 5e-4)
    ref.step(ce(x_f, labels))
    ref.step(ce(toy["xr"], toy["yr"]))
    result = run_method(
        "random_label", {"epochs": 1, "batch_size": ALL, "lr": 0.05, "schedule": "two_pass"}, ctx
    )
    assert_same_weights(result.model, ref.params())


def test_random_label_mixed_epoch(toy):
    """RL.py's CIFAR-100 / TinyImageNet branch: D_f with one random label draw per sample,
    concatenated with D_r,
    one shuffled pass (here one step over the union)."""
    ctx = context(toy)
    labels = torch.randint(0, K, (len(toy["forget"]),), generator=ctx.epoch_generator(13, 0))
    x = torch.cat([toy["xf"], toy["xr"]])
    y = torch.cat([labels, toy["yr"]])
    ref = Reference(toy["f0"], "sgd", 0.05, 0.9, 5e-4)
    ref.step(ce(x, y))
    result = run_method(
        "random_label", {"epochs": 1, "batch_size": ALL, "lr": 0.05, "schedule": "mixed"}, ctx
    )
    assert_same_weights(result.model, ref.params())


def test_salun_epoch_moves_only_salient_weights_by_the_masked_sgd_rule(toy):
    ratio = 0.3
    model = copy.deepcopy(toy["f0"])
    grads = torch.autograd.grad(-F.cross_entropy(model(toy["xf"])[0], toy["yf"]), list(model.parameters()))
    flat = torch.cat([g.reshape(-1) for g in grads]).abs()
    chosen = torch.zeros_like(flat)
    chosen[torch.argsort(-flat, stable=True)[: int(len(flat) * ratio)]] = 1
    keep, start = [], 0
    for g in grads:
        keep.append(chosen[start : start + g.numel()].view_as(g))
        start += g.numel()
    ctx = context(toy)
    labels = torch.randint(0, K, (len(toy["forget"]),), generator=ctx.epoch_generator(13, 0))
    order = torch.randperm(len(toy["forget"]), generator=ctx.epoch_generator(12, 0))
    x_f = toy["data"].train.images[toy["forget"][order]]
    ref = Reference(toy["f0"], "sgd", 0.05, 0.9, 5e-4)
    ref.step(ce(x_f, labels), keep)
    ref.step(ce(toy["xr"], toy["yr"]), keep)
    result = run_method("salun", {"epochs": 1, "batch_size": ALL, "lr": 0.05, "mask_ratio": ratio}, ctx)
    assert_same_weights(result.model, ref.params())


def test_bad_teacher_step_is_adam_on_the_element_mean_kl(toy):
    method = METHODS.get("bad_teacher")()
    temperature, lr = 2.0, 1e-3
    result = run_unlearning(
        method,
        method.Params(epochs=1, batch_size=ALL, temperature=temperature, retain_fraction=1.0, lr=lr),
        context(toy),
    )
    x = torch.cat([toy["xf"], toy["xr"]])
    with torch.no_grad():
        teacher = torch.cat(
            [
                F.softmax(method.incompetent(toy["xf"])[0] / temperature, dim=1),
                F.softmax(method.competent(toy["xr"])[0] / temperature, dim=1),
            ]
        )

    def loss(m):  # UnlearnerLoss: F.kl_div(log_softmax(s / T), t), reduction 'mean' over all elements, no T^2
        return (teacher * (teacher.log() - F.log_softmax(m(x)[0] / temperature, dim=1))).mean()

    ref = Reference(toy["f0"], "adam", lr)
    ref.step(loss)
    assert_same_weights(result.model, ref.params(), atol=1e-5)


def test_scrub_epoch_is_a_max_pass_then_a_min_pass_with_one_sgd(toy):
    gamma, alpha, temperature, lr = 0.7, 0.5, 2.0, 0.05
    with torch.no_grad():
        t_f, t_r = toy["f0"](toy["xf"])[0], toy["f0"](toy["xr"])[0]

    def kl(student, teacher):  # RepDistiller DistillKL: batch mean of KL(p_t || p_s) * T^2
        p_t = F.softmax(teacher / temperature, dim=1)
        return (p_t * (p_t.log() - F.log_softmax(student / temperature, dim=1))).sum(
            1
        ).mean() * temperature**2

    ref = Reference(toy["f0"], "sgd", lr, 0.9, 5e-4)
    ref.step(lambda m: -kl(m(toy["xf"])[0], t_f))
    ref.step(lambda m: gamma * F.cross_entropy(m(toy["xr"])[0], toy["yr"]) + alpha * kl(m(toy["xr"])[0], t_r))
    params = {
        "epochs": 1,
        "msteps": 1,
        "batch_size": ALL,
        "forget_batch_size": ALL,
        "lr": lr,
        "gamma": gamma,
        "alpha": alpha,
        "kd_T": temperature,
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }
    result = run_method("scrub", params, context(toy))
    assert_same_weights(result.model, ref.params())


def test_boundary_shrink_step_trains_towards_the_fgsm_neighbour(toy):
    x = toy["xf"].clone().requires_grad_(True)
    F.cross_entropy(toy["f0"](x)[0], toy["yf"]).backward()
    with torch.no_grad():
        neighbour = toy["f0"](toy["xf"] + 0.1 * x.grad.sign())[0].argmax(1)
    ref = Reference(toy["f0"], "sgd", 0.05, 0.9, 0.0)
    ref.step(ce(toy["xf"], neighbour))
    result = run_method("boundary_shrink", {"epochs": 1, "batch_size": ALL, "lr": 0.05}, context(toy))
    assert_same_weights(result.model, ref.params())


def test_boundary_expanding_shadow_row_is_xavier_normal_with_zero_bias_and_pruned(toy):
    captured = {}

    class Capture(METHODS.get("boundary_expanding")):
        def prepare(self, run, params):
            captured["expanded"] = copy.deepcopy(run.model)

    method = Capture()
    result = run_unlearning(method, method.Params(epochs=1, batch_size=ALL, lr=0.05), context(toy))
    head = captured["expanded"].head[-1]
    assert head.out_features == K + 1 and float(head.bias[K]) == 0.0
    fan_in = head.in_features
    # kaiming-uniform (PyTorch's default) stays within 1/sqrt(fan_in); xavier-normal's std is sqrt(2/(in+out))
    assert float(head.weight[K].abs().max()) > 1 / math.sqrt(fan_in)
    assert float(head.weight[K].std()) == pytest.approx(math.sqrt(2 / (fan_in + K + 1)), rel=0.35)
    ref = Reference(captured["expanded"], "sgd", 0.05, 0.9, 0.0)
    ref.step(ce(toy["xf"], torch.full((len(toy["xf"]),), K)))
    expected = ref.params()
    expected[-2], expected[-1] = expected[-2][:K], expected[-1][:K]  # the shadow class pruned
    assert_same_weights(result.model, expected)


# ----------------------------------------------------------------------------- steps per epoch
@pytest.fixture(scope="module")
def large():
    """A set large enough for the references' batch sizes: 1,500 samples, class 2 forgotten."""
    data = load_dataset(
        "synthetic", {"num_train": 1500, "num_test": 30, "num_classes": K, "image_size": 8, "seed": 5}
    )
    torch.manual_seed(0)
    model = build_model("mnist_cnn", {}, 1, K, (8, 8)).eval()
    split = make_split("classes", {"classes": [2]}, data.train.labels, data.class_names, 0)
    return UnlearnContext(
        model, data, forget_indices(split), retain_indices(split), CPU, seed=1, initial=model
    )


def _steps(name: str, family: str, ctx: UnlearnContext, **overrides) -> dict[str, int]:
    method = METHODS.get(name)()
    at = Setting(family, "synthetic", "classes")
    params = {**method.preset(method.preset_names(at)[0], at), "epochs": 1, **overrides}
    if "lr" in params:
        params["lr"] = 1e-6  # the count is what is checked: keep the model as it is
    return {key: len(values) for key, values in run_method(name, params, ctx).history.items()}


def test_steps_per_epoch_at_the_references_batch_sizes(large):
    n_f, n_r = len(large.forget), len(large.retain)
    assert n_f > 300 and n_r > 900
    c = math.ceil
    # SCRUB, CIFAR (large_scale_unlearning.ipynb: forget loader 512, retain loader 256); msteps >= 1
    assert _steps("scrub", "cifar", large) == {"loss_max": c(n_f / 512), "loss_min": c(n_r / 256)}
    # SCRUB, small scale (retain 32, forget 64)
    assert _steps("scrub", "mnist", large) == {"loss_max": c(n_f / 64), "loss_min": c(n_r / 32)}
    # NegGrad+: one pass over D_r at 128 (D_f cycled)
    assert _steps("neggrad_plus", "mnist", large) == {"loss": c(n_r / 128)}
    assert _steps("neggrad_plus", "cifar", large) == {"loss": c(n_r / 128)}
    # Boundary (authors' code: batch 64 over D_f)
    assert _steps("boundary_shrink", "cifar", large) == {"loss": c(n_f / 64)}
    assert _steps("boundary_expanding", "mnist", large) == {"loss": c(n_f / 64)}
    # RL / SalUn at 256: two passes below 100 classes; the mixed pass over D_f + D_r
    assert _steps("random_label", "cifar", large) == {
        "loss_forget": c(n_f / 256),
        "loss_retain": c(n_r / 256),
    }
    assert _steps("random_label", "cifar", large, schedule="mixed") == {"loss": c((n_f + n_r) / 256)}
    assert _steps("salun", "cifar", large) == {"loss_forget": c(n_f / 256), "loss_retain": c(n_r / 256)}
    # finetune / l1-sparse at 256 over D_r; NegGrad at 256 over D_f
    assert _steps("finetune", "cifar", large) == {"loss": c(n_r / 256)}
    assert _steps("neggrad", "cifar", large) == {"loss": c(n_f / 256)}
    # bad teacher: D_f + 30% of D_r at 256
    assert _steps("bad_teacher", "cifar", large) == {"loss": c((n_f + int(0.3 * n_r)) / 256)}


def test_random_label_schedule_auto_follows_the_class_count():
    from camu.methods.random_label import resolved_schedule

    assert resolved_schedule("auto", 10) == "two_pass"  # CIFAR-10 / SVHN branch
    assert resolved_schedule("auto", 100) == "mixed"  # CIFAR-100 / TinyImageNet branch
    assert resolved_schedule("two_pass", 200) == "two_pass"


def test_scrub_small_scale_adam_step_and_lr_schedule(toy):
    """small_scale_unlearning.ipynb: Adam (coupled weight decay 0.1) on the min-step; the lr decays by 0.1 after
    epochs 5, 8 and 9 (1-based, strict): 5e-4 for epochs 1-5, 5e-5 for 6-8, 5e-6 at 9, 5e-7 at 10."""
    from camu.methods.scrub import scrub_lr

    gamma, alpha, temperature, lr = 1.0, 0.5, 2.0, 5e-4
    ref = Reference(toy["f0"], "adam", lr, weight_decay=0.1)
    ref.step(lambda m: gamma * F.cross_entropy(m(toy["xr"])[0], toy["yr"]))  # KL(f0 || f0) = 0 at the first step
    params = {"epochs": 1, "msteps": 0, "batch_size": ALL, "forget_batch_size": ALL, "lr": lr, "gamma": gamma,
              "alpha": alpha, "kd_T": temperature, "optimizer": "adam", "weight_decay": 0.1}
    result = run_method("scrub", params, context(toy))
    assert_same_weights(result.model, ref.params(), atol=1e-5)
    expected = [5e-4] * 5 + [5e-5] * 3 + [5e-6, 5e-7]
    assert [scrub_lr(5e-4, e, [5, 8, 9], 0.1) for e in range(10)] == pytest.approx(expected)
