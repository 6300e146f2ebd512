"""Presets by model family (not by dataset name), their listing with sources, Unrolling SGD's recipe
requirements, the recipe's optimizer and the GPU precision setting."""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from camu import build_model
from camu.data import load_dataset
from camu.methods import METHODS
from camu.models import model_family
from camu.runtime import autocast, set_precision
from camu.training import TrainRecipe, train_classifier
from orchestrator.cli import app
from orchestrator.job.presets import base_params, setting
from orchestrator.job.spec import MethodSpec, ResourcesSpec
from orchestrator.worker.unlearning import scaled_params

runner = CliRunner()
JOB = {
    "name": "p",
    "dataset": {"name": "digits"},
    "model": {"name": "mnist_cnn"},
    "scenarios": [{"name": "c", "kind": "classes", "classes": [1]}],
}


def test_the_family_comes_from_the_model_not_the_dataset_name():
    assert model_family("mnist_cnn") == "mnist" and model_family("resnet18") == "cifar"
    # an MNIST image folder runs the paper's CNN: CaMU's official preset is the MNIST one (class removal:
    # IMPAIR_LR 1e-3, KL_LR 4e-4), not the CIFAR one the registry name "imagefolder" used to select
    camu = base_params(MethodSpec(name="camu"), setting("mnist_cnn", "imagefolder", "classes"))
    assert (camu.lr_out, camu.lr_rep, camu.epochs) == (1e-3, 4e-4, 2)
    cifar = base_params(MethodSpec(name="camu"), setting("resnet18", "mnist", "classes"))
    assert (cifar.lr_out, cifar.lr_rep) == (5e-5, 1e-5)
    scrub = base_params(MethodSpec(name="scrub"), setting("mnist_cnn", "imagefolder", "random"))
    assert (scrub.batch_size, scrub.forget_batch_size, scrub.optimizer) == (32, 64, "adam")


def test_validate_says_which_family_a_job_got(tmp_path):
    for model, family in (("mnist_cnn", "mnist"), ("resnet18", "cifar")):
        path = tmp_path / f"{model}.yaml"
        path.write_text(yaml.safe_dump({**JOB, "model": {"name": model}}))
        out = runner.invoke(app, ["validate", str(path)])
        assert out.exit_code == 0, out.output
        assert f"presets: the {family} family's (model {model})" in out.stdout


def test_ls_methods_json_lists_every_preset_per_family_with_values_and_source():
    out = runner.invoke(app, ["ls", "methods", "--format", "json"])
    assert out.exit_code == 0
    listed = {entry["name"]: entry for entry in json.loads(out.stdout)}
    assert {"camu", "scrub", "neggrad_plus", "boundary_shrink", "unrolling_sgd", "salun"} <= set(listed)
    for name, entry in listed.items():
        assert {row["family"] for row in entry["presets"]} == {"mnist", "cifar"}, name
        assert all(row["source"] for row in entry["presets"]), name

    def values(name: str, family: str) -> dict:
        return next(r["values"] for r in listed[name]["presets"] if r["family"] == family)

    assert (values("scrub", "cifar")["batch_size"], values("scrub", "cifar")["forget_batch_size"]) == (
        256,
        512,
    )
    assert (values("neggrad_plus", "cifar")["alpha"], values("neggrad_plus", "cifar")["pull"]) == (
        0.9999,
        0.0,
    )
    assert (values("neggrad_plus", "mnist")["alpha"], values("neggrad_plus", "mnist")["pull"]) == (0.95, 0.1)
    assert values("boundary_shrink", "mnist")["batch_size"] == 64
    assert values("boundary_shrink", "mnist")["weight_decay"] == 0.0
    assert any("98ffb11" in r["source"] for r in listed["scrub"]["presets"])
    assert listed["unrolling_sgd"]["deviations"], "a kept difference must be listed"
    table = runner.invoke(app, ["ls", "methods"]).stdout
    assert "kept difference:" in table and "source: github.com/meghdadk/SCRUB@98ffb11" in table


def test_unrolling_follows_the_recipe_and_refuses_an_adam_original_unless_told(tmp_path):
    recipe = TrainRecipe(optimizer="sgd", lr=0.05, epochs=7, batch_size=64).model_dump()
    params = base_params(MethodSpec(name="unrolling_sgd"), setting("mnist_cnn", "digits", "classes", recipe))
    assert (params.lr, params.scale, params.batch_size) == (0.05, 7, 64)
    job = {**JOB, "methods": [{"name": "unrolling_sgd"}]}
    path = tmp_path / "adam.yaml"
    path.write_text(yaml.safe_dump(job))
    out = runner.invoke(app, ["validate", "--no-data", str(path)])
    assert out.exit_code == 2
    assert "methods.0: unrolling_sgd's correction is plain SGD's identity" in out.output
    assert "original.recipe.optimizer: sgd" in out.output
    for fixed in (
        {**job, "original": {"recipe": {"optimizer": "sgd"}}},
        {**job, "methods": [{"name": "unrolling_sgd", "params": {"accept_non_sgd_original": True}}]},
    ):
        path.write_text(yaml.safe_dump(fixed))
        out = runner.invoke(app, ["validate", "--no-data", str(path)])
        assert out.exit_code == 0, out.output


def test_linear_lr_scaling_leaves_unrolling_s_training_lr_alone():
    params = METHODS.get("unrolling_sgd").Params(lr=1e-3, scale=20, batch_size=32)
    assert scaled_params("unrolling_sgd", params, "linear", 4).lr == 1e-3
    finetune = METHODS.get("finetune").Params(lr=0.01)
    scaled = scaled_params("finetune", finetune, "linear", 4)
    assert type(scaled) is type(finetune) and scaled.lr == pytest.approx(0.04) and finetune.lr == 0.01
    assert scaled_params("finetune", finetune, "linear", 1) is finetune


def test_recipe_optimizer_sgd_takes_plain_sgd_steps():
    data = load_dataset(
        "synthetic", {"num_train": 40, "num_test": 10, "num_classes": 3, "image_size": 8, "seed": 1}
    )
    torch.manual_seed(0)
    model = build_model("mnist_cnn", {}, 1, 3, (8, 8))
    before = copy.deepcopy(model)
    recipe = TrainRecipe(optimizer="sgd", lr=0.1, epochs=1, batch_size=40, weight_decay=0.0)
    train_classifier(model, data.train, torch.arange(40), recipe, torch.device("cpu"))
    x, y = data.train.images, data.train.labels
    grads = torch.autograd.grad(F.cross_entropy(before(x)[0], y), list(before.parameters()))
    for p, p0, g in zip(model.parameters(), before.parameters(), grads):
        assert torch.allclose(p, p0 - 0.1 * g, atol=1e-6)
    with pytest.raises(ValidationError, match="momentum: applies to optimizer: sgd only"):
        TrainRecipe(momentum=0.9)
    assert "optimizer" not in TrainRecipe().key_fields()  # models trained before the field keep their keys
    assert TrainRecipe(optimizer="sgd").key_fields()["optimizer"] == "sgd"


def test_precision_setting():
    assert ResourcesSpec().precision == "bf16"
    with pytest.raises(ValidationError, match="precision"):
        ResourcesSpec(precision="fp16")
    cuda = torch.device("cuda")
    try:
        set_precision("fp32")
        assert isinstance(autocast(cuda), contextlib.nullcontext)
        set_precision("bf16")
        with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
            assert isinstance(autocast(cuda), torch.autocast)
        assert isinstance(autocast(torch.device("cpu")), contextlib.nullcontext)
        with pytest.raises(ValueError, match="bf16, fp32"):
            set_precision("fp16")
    finally:
        set_precision("bf16")


def test_presets_in_the_plain_shape_serve_every_family_and_mixed_shapes_are_refused():
    from typing import ClassVar

    from camu.methods import Preset, Setting, UnlearningMethod
    from camu.methods.common import OptimParams

    class Plain(UnlearningMethod):
        Params = OptimParams
        presets: ClassVar = {"tiny": {"lr": 0.05, "epochs": 2}}

    for family in ("mnist", "cifar"):
        at = Setting(family, "digits", "classes")
        assert Plain().preset_names(at) == ["tiny"] and Plain().preset("tiny", at)["lr"] == 0.05
    assert "source not given" in Plain().preset_entry("tiny", Setting("mnist", "digits", "classes")).source
    with pytest.raises(TypeError, match="mixes Preset entries and plain values"):

        class Mixed(UnlearningMethod):
            Params = OptimParams
            presets: ClassVar = {"bad": {"mnist": Preset({"lr": 0.1}, "x"), "lr": 0.1}}


def test_a_model_entry_names_a_known_family():
    from camu.models import ModelEntry, ModelOptions

    assert ModelEntry(ModelOptions, lambda *a: None, "x").family == "cifar"
    with pytest.raises(ValueError, match="not one of mnist, cifar"):
        ModelEntry(ModelOptions, lambda *a: None, "x", "imagenet")


def test_training_key_fields_change_only_for_new_regimes():
    from pathlib import Path

    from camu.data.datasets import CifarOptions, cifar_data
    from orchestrator.driver.context import training_key_fields
    from orchestrator.job.spec import JobSpec

    base = {"name": "k", "dataset": {"name": "digits"}, "model": {"name": "mnist_cnn"},
            "scenarios": [{"name": "c", "kind": "classes", "classes": [1]}]}
    plain = training_key_fields(JobSpec.model_validate(base), load_dataset("digits"))
    assert plain == {"epochs": 20, "batch_size": 32, "lr": 1e-3, "weight_decay": 1e-4, "seed": 0}  # as before
    gpu_fp32 = JobSpec.model_validate({**base, "resources": {"precision": "fp32"}})
    assert training_key_fields(gpu_fp32, None)["precision"] == "fp32"
    cpu_fp32 = JobSpec.model_validate({**base, "device": "cpu", "resources": {"precision": "fp32"}})
    assert "precision" not in training_key_fields(cpu_fp32, None)
    images = torch.zeros((4, 32, 32, 3), dtype=torch.uint8)
    fast = cifar_data("cifar10", CifarOptions(root=Path("u")), (images, torch.arange(4)), (images, torch.arange(4)),
                      [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3)
    assert training_key_fields(JobSpec.model_validate(base), fast)["view"] == "pad_crop"
