import pytest
import torch
from pydantic import ValidationError

from camu.models import MODELS, build_model, has_batch_norm


@pytest.mark.parametrize("name,channels,size,classes,emb", [
    ("mnist_cnn", 1, (28, 28), 10, 256),
    ("mnist_cnn", 1, (8, 8), 10, 256),
    ("mnist_cnn", 3, (32, 32), 100, 256),
    ("resnet18", 3, (32, 32), 10, 512),
    ("resnet18", 1, (28, 28), 10, 512),
    ("resnet18", 3, (64, 64), 5, 512),
    ("resnet50", 3, (32, 32), 7, 2048),
])
def test_models_return_logits_and_embedding(name, channels, size, classes, emb):
    model = build_model(name, {}, channels, classes, size).eval()
    logits, z = model(torch.randn(2, channels, *size))
    assert logits.shape == (2, classes)
    assert z.shape == (2, emb)


def test_stems_and_batchnorm_detection():
    cifar = build_model("resnet18", {"stem": "cifar"}, 3, 10, (32, 32))
    imagenet = build_model("resnet18", {"stem": "imagenet"}, 3, 10, (224, 224))
    assert cifar.backbone.conv1.kernel_size == (3, 3)
    assert imagenet.backbone.conv1.kernel_size == (7, 7)
    assert has_batch_norm(cifar)
    assert not has_batch_norm(build_model("mnist_cnn", {}, 1, 10, (28, 28)))


def test_bad_model_options_are_rejected():
    with pytest.raises(ValidationError, match="stem"):
        build_model("resnet18", {"stem": "huge"}, 3, 10, (32, 32))
    with pytest.raises(KeyError, match="known models"):
        build_model("vgg", {}, 3, 10, (32, 32))
    assert "mnist_cnn" in MODELS
