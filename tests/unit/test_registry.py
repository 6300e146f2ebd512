import pytest

from camu import DATASETS, METHODS, MODELS, SCENARIOS
from camu.registry import Registry, UnknownNameError


def test_register_get_names_and_duplicates():
    reg: Registry[int] = Registry("thing")
    reg.register("b", "second")(2)
    reg.register("a", "first\nmore detail")(1)
    assert reg.names() == ["a", "b"]
    assert reg.get("b") == 2
    assert reg.describe() == {"a": "first", "b": "second"}
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", "again")(3)
    with pytest.raises(ValueError, match="needs a one-line description"):
        reg.register("c", " ")
    with pytest.raises(UnknownNameError, match="known things: a, b"):
        reg.get("c")


def test_builtin_registries_list_what_the_issue_names():
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic"} <= set(DATASETS.names())
    assert {"mnist_cnn", "resnet18", "resnet50"} <= set(MODELS.names())
    assert set(SCENARIOS.names()) == {"random", "classes", "proportions", "indices"}
    assert "camu" in METHODS.names()
    for registry in (DATASETS, MODELS, SCENARIOS, METHODS):  # `camu-orch ls` shows sentences, not signatures
        assert all(d and "(options=" not in d and "Entry(" not in d for d in registry.describe().values())
