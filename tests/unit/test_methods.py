"""Every registered method, through the shared loop: it reports every epoch, never touches the
original, changes the model, and a run resumed from its epoch-0 state ends with the same weights as
an uninterrupted run. Plus the registry contract (description, presets, spaces, applicability)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from camu import build_model, forget_indices, make_split, retain_indices
from camu.data import load_dataset
from camu.loop import run_method
from camu.methods import METHODS, UnlearnContext, check_applicable
from camu.methods.base import Setting
from camu.models import FAMILIES
from camu.training import TrainRecipe, train_classifier
from orchestrator.job.space import SearchSpace

CPU = torch.device("cpu")
BUILTIN = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("camu.")]  # not a test's plugin
FAST = {"epochs": 2, "batch_size": 32, "forget_batch_size": 16}


@pytest.fixture(scope="module")
def setup():
    """A 4-class synthetic set, a briefly trained CNN and its initialisation, class 1 removed."""
    data = load_dataset("synthetic", {"num_train": 160, "num_test": 40, "num_classes": 4, "image_size": 8, "seed": 3})
    torch.manual_seed(0)
    initial = build_model("mnist_cnn", {}, 1, 4, (8, 8))
    original = copy.deepcopy(initial)
    train_classifier(original, data.train, torch.arange(160), TrainRecipe(epochs=2, batch_size=32), CPU)
    split = make_split("classes", {"classes": [1]}, data.train.labels, data.class_names, 0)
    return data, initial, original, split


def fast_params(name: str) -> dict:
    """The method's default preset, shortened to 2 epochs with small batches."""
    method = METHODS.get(name)()
    params = method.preset(method.preset_names(Setting("mnist", "synthetic", "classes"))[0], Setting("mnist", "synthetic", "classes"))
    return {**params, **{k: v for k, v in FAST.items() if k in params}}


def context(setup, **kw) -> UnlearnContext:
    data, initial, original, split = setup
    return UnlearnContext(original, data, forget_indices(split), retain_indices(split), CPU, seed=5, initial=initial, **kw)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", BUILTIN)
def test_method_reports_every_epoch_and_resumes_to_the_same_weights(name, setup):
    original = setup[2]
    before = weights(original)
    reports = []
    ctx = context(setup, on_epoch=lambda e, m, state, model: reports.append((e, m, copy.deepcopy(state))))
    params = fast_params(name)
    full = run_method(name, params, ctx)
    cls = METHODS.get(name)
    epochs = cls().num_epochs(cls.Params.model_validate(params))
    assert [r[0] for r in reports] == list(range(epochs))
    assert all(torch.isfinite(torch.tensor(v)) for r in reports for v in r[1].values()) and reports[0][1]
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items()), "the original was modified"
    assert any(not torch.equal(before[k], v) for k, v in full.model.state_dict().items()), "nothing was unlearned"
    assert set(full.model.state_dict()) == set(before)  # the original's architecture (boundary_expanding pruned)
    assert full.seconds > 0 and full.epochs == epochs
    so_far = [r[2]["unlearn_seconds"] for r in reports]  # the unlearning time carried by each resume state
    assert so_far[0] > 0 and all(b > a for a, b in itertools.pairwise(so_far)) and so_far[-1] <= full.seconds
    done = run_method(name, params, context(setup, resume_state=reports[-1][2]))  # resumed after its last epoch
    assert done.seconds >= so_far[-1]  # the whole run's time, not the seconds after the interruption
    if epochs < 2:
        return
    resumed = run_method(name, params, context(setup, resume_state=reports[0][2]))
    for key, value in full.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[key], atol=1e-6), key
    for key, values in full.history.items():
        tail = values[len(values) - len(resumed.history[key]):]
        assert resumed.history[key] == pytest.approx(tail, rel=1e-5, abs=1e-7), key


def test_registry_contract():
    assert {"retrain", "finetune", "neggrad", "neggrad_plus", "random_label", "salun", "l1_sparse", "bad_teacher",
            "scrub", "boundary_shrink", "boundary_expanding", "unrolling_sgd", "camu"} <= set(METHODS.names())
    for name in BUILTIN:
        cls, description = METHODS.get(name), METHODS.describe()[name]
        assert description and "(" not in description[:1], name  # a sentence, not a signature
        for family in FAMILIES:
            assert cls().preset_names(Setting(family, "mnist", "classes")), f"{name} has no {family} preset"
        assert SearchSpace.parse(cls.space).problems_for("s", name, cls.Params) == [], f"{name}'s documented space is invalid"


def test_methods_cite_their_paper_and_reference_code():
    import importlib

    for name in BUILTIN:
        module = importlib.import_module(METHODS.get(name).__module__)
        assert module.__doc__ and ("github.com" in module.__doc__ or name == "retrain"), name
        assert "Search space" in module.__doc__ or METHODS.get(name).reuses_oracle, name


def test_applicability():
    assert check_applicable("boundary_shrink", "random", True) is not None
    assert check_applicable("boundary_shrink", "classes", True) is None
    assert "original.recipe" in check_applicable("unrolling_sgd", "classes", has_initial=False)
    assert check_applicable("camu", "indices", has_initial=False) is None


def test_retrain_does_not_depend_on_the_original(setup):
    """Retraining from scratch: two different originals of the same architecture give the same model."""
    data, _initial, _original, split = setup
    other = build_model("mnist_cnn", {}, 1, 4, (8, 8))
    params = fast_params("retrain")
    a = run_method("retrain", params, context(setup))
    b = run_method("retrain", params, UnlearnContext(other, data, forget_indices(split), retain_indices(split), CPU,
                                                     seed=5))
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
