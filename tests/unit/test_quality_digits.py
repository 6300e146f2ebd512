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
from camu.loop import run_method
from camu.methods import UnlearnContext

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
    assert t.column_names == ["index", "split", "set", "label", "prediction", "loss", "max_prob", "true_prob"]
    assert t.num_rows == len(digits.train) + len(digits.test)
    assert set(t.column("split").to_pylist()) == {"forget", "retain", "test"}
    assert 0 <= ev.metrics["mia_auc"] <= 1


def test_selection_and_report_parts_are_disjoint_and_each_number_is_on_its_part(outcome, digits):
    """Every metric exists twice: on the report part (plain keys) and the selection part (sel_*); the
    parts split D_f, D_r and the test set without overlap, and RA / FA / TA are recomputed here from the
    per-sample table on each part."""
    import numpy as np

    _, result = outcome
    split = make_split("classes", {"classes": [3]}, digits.train.labels, digits.class_names, seed=0)
    ev = evaluate(result.model, digits, split, CPU, seed=2, selection_fraction=0.4)
    rows = ev.samples.to_pylist()
    for role in ("forget", "retain", "test"):
        mine = [r for r in rows if r["split"] == role]
        sel = [r for r in mine if r["set"] == "select"]
        assert 0.35 < len(sel) / len(mine) < 0.45  # 40% for selection, the rest reported
    for prefix, part in (("", "report"), ("sel_", "select")):
        for key, role in (("ra", "retain"), ("fa", "forget"), ("ta", "test")):
            chosen = [r for r in rows if r["split"] == role and r["set"] == part]
            expected = 100 * np.mean([r["prediction"] == r["label"] for r in chosen])
            assert ev.metrics[prefix + key] == pytest.approx(expected), prefix + key
    same = evaluate(result.model, digits, split, CPU, seed=2, selection_fraction=0.0).metrics
    assert same["ra"] == same["sel_ra"] and same["mia_official"] == same["sel_mia_official"]  # fraction 0: one part


def test_a_diverged_model_is_scored_not_a_crash(digits):
    """NaN outputs (a method run at too high a learning rate) give a finished evaluation: the NaN rows
    count as uniform predictions and ``nonfinite_outputs`` reports their share."""
    split = make_split("classes", {"classes": [3]}, digits.train.labels, digits.class_names, seed=0)
    model = build_model("mnist_cnn", {}, 1, 10, digits.image_size)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    ev = evaluate(model, digits, split, CPU, seed=0)
    assert ev.metrics["nonfinite_outputs"] == 1.0
    y = digits.train.labels.cpu()
    # uniform logits: argmax is class 0 everywhere, so RA is the share of class 0 in the reported D_r
    from camu.evaluation import evaluation_sets

    sets = evaluation_sets(forget_indices(split), retain_indices(split), len(digits.test), 0, 0.5)
    r = sets.retain["report"]
    assert ev.metrics["ra"] == pytest.approx(100.0 * float((y[r] == 0).float().mean()))
    for key in ("mia_official", "mia_efficacy", "mia_auc"):
        assert ev.metrics[key] == ev.metrics[key], key  # defined, not NaN
    assert torch.isfinite(ev.train_logits).all()
