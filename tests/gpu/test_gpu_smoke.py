"""GPU checks (skipped without CUDA): GPU-resident data, bf16 autocast + channels_last, and CaMU
still unlearning a digits class on the device."""

import pytest
import torch

from camu import (
    CamuParams,
    TrainRecipe,
    build_model,
    evaluate,
    forget_indices,
    load_dataset,
    make_split,
    official_params,
    retain_indices,
    train_classifier,
)
from camu.loop import run_method
from camu.methods import UnlearnContext

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def test_resnet_camu_step_on_gpu_is_channels_last_and_finite():
    data = load_dataset("synthetic", {"num_train": 512, "num_test": 64, "channels": 3, "image_size": 32}).to(CUDA)
    assert data.train.images.device.type == "cuda"
    split = make_split("random", {"fraction": 0.25}, data.train.labels.cpu(), data.class_names, 0)
    torch.manual_seed(0)
    model = build_model("resnet18", {"stem": "cifar"}, 3, 10, (32, 32))
    ctx = UnlearnContext(model, data, forget_indices(split), retain_indices(split), CUDA)
    result = run_method("camu", CamuParams(epochs=1, batch_size=64), ctx)
    conv = result.model.backbone.conv1.weight
    assert conv.is_cuda and conv.dtype == torch.float32
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.history["loss_rep"] + result.history["loss_out"])


def test_digits_class_removal_quality_on_gpu():
    data = load_dataset("digits").to(CUDA)
    split = make_split("classes", {"classes": [3]}, data.train.labels.cpu(), data.class_names, 0)
    forget, retain = forget_indices(split), retain_indices(split)

    def trained(indices):
        torch.manual_seed(0)
        model = build_model("mnist_cnn", {}, 1, 10, data.image_size)
        train_classifier(model, data.train, indices, TrainRecipe(epochs=20), CUDA)
        return model

    original, oracle = trained(torch.arange(len(data.train))), trained(retain)
    result = run_method("camu", official_params("digits", "classes"),
                        UnlearnContext(original, data, forget, retain, CUDA))
    m = evaluate(result.model, data, split, CUDA).metrics
    o = evaluate(oracle, data, split, CUDA).metrics
    assert m["ta_forgotten"] <= 5.0
    assert abs(m["ta_retained"] - o["ta_retained"]) <= 3.0
