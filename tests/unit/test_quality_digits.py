"""End-to-end quality on real (bundled) data: CaMU with the official configuration removes a digit
class about as well as retraining from scratch."""

import pytest
import torch

from camu import (
    TrainRecipe,
    build_model,
    evaluate,
    forget_indices,
    make_split,
    official_params,
    retain_indices,
    train_classifier,
)
from camu.methods import UnlearnContext, run_method

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def outcome(digits):
    split = make_split("classes", {"classes": [3]}, digits.train.labels, digits.class_names, seed=0)
    forget, retain = forget_indices(split), retain_indices(split)
    recipe = TrainRecipe(epochs=20, batch_size=32, seed=0)

    def trained(indices):
        torch.manual_seed(recipe.seed)
        model = build_model("mnist_cnn", {}, 1, 10, digits.image_size)
        train_classifier(model, digits.train, indices, recipe, CPU)
        return model

    original, oracle = trained(torch.arange(len(digits.train))), trained(retain)
    ctx = UnlearnContext(original, digits, forget, retain, CPU, seed=0)
    unlearned = run_method("camu", official_params("digits", "classes"), ctx)
    return {name: evaluate(m, digits, split, CPU, seed=0).metrics
            for name, m in [("original", original), ("oracle", oracle), ("camu", unlearned.model)]}, unlearned


def test_original_and_oracle_are_sane(outcome):
    m, _ = outcome
    assert m["original"]["ta"] > 90 and m["original"]["fa"] > 90
    assert m["oracle"]["fa"] == 0 and m["oracle"]["ta_forgotten"] == 0


def test_camu_forgets_the_class_and_keeps_the_rest(outcome):
    m, result = outcome
    assert m["camu"]["ta_forgotten"] <= 5.0
    assert abs(m["camu"]["ta_retained"] - m["oracle"]["ta_retained"]) <= 3.0
    assert m["camu"]["fa"] <= 5.0 and m["camu"]["ra"] >= 95.0
    assert result.seconds > 0


def test_per_sample_table(outcome, digits):
    _, result = outcome
    split = make_split("classes", {"classes": [3]}, digits.train.labels, digits.class_names, seed=0)
    ev = evaluate(result.model, digits, split, CPU)
    t = ev.samples
    assert t.column_names == ["index", "split", "label", "prediction", "loss", "max_prob"]
    assert t.num_rows == len(digits.train) + len(digits.test)
    assert set(t.column("split").to_pylist()) == {"forget", "retain", "test"}
    assert 0 <= ev.metrics["mia_auc"] <= 1
