"""Registered classifiers. Every model returns ``(logits, embedding)``; the embedding is the
penultimate representation Z that CaMU's representation-level step works on.

Input channels, image size and class count come from the dataset, so the same model name
works on MNIST, CIFAR or an ImageNet subset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from camu.registry import Registry
from camu.schema import StrictModel


class ModelOptions(StrictModel):
    """Base for per-model options; unknown keys are rejected."""


FAMILIES = ("mnist", "cifar")
"""The two regimes the reference codebases publish settings for: the small-scale one (MNIST-like
data, a small CNN such as the CaMU paper's) and the CIFAR-scale one (ResNets on 32-px images)."""


@dataclass(frozen=True)
class ModelEntry:
    options: type[ModelOptions]
    build: Callable[[ModelOptions, int, int, tuple[int, int]], nn.Module]
    description: str
    family: str = "cifar"  # which references' settings apply to it (FAMILIES): mnist for small CNNs

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"model family {self.family!r} is not one of {', '.join(FAMILIES)}")


MODELS: Registry[ModelEntry] = Registry("model")


def model_family(name: str) -> str:
    """The settings family of model ``name``: the reference settings of unlearning methods depend on the
    model and its input size (a small CNN on 28-px digits vs a ResNet on 32-px CIFAR), not on what the
    dataset is called (an MNIST image folder still runs the paper's CNN)."""
    return MODELS.get(name).family


def build_model(name: str, options: dict | None, in_channels: int, num_classes: int,
                image_size: tuple[int, int]) -> nn.Module:
    """Build model ``name`` for a dataset with the given channels, classes and image size."""
    entry = MODELS.get(name)
    return entry.build(entry.options.model_validate(options or {}), in_channels, num_classes, image_size)


# ----------------------------------------------------------------------------- the paper's MNIST CNN
class MnistCNN(nn.Module):
    """conv(16,5x5)+ReLU+pool, conv(32,5x5)+ReLU+pool, fc->256 (embedding), fc 256->128, fc 128->classes."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], embedding_dim: int = 256):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 32 * (image_size[0] // 4) * (image_size[1] // 4)
        self.embed = nn.Linear(flat, embedding_dim)  # no activation: this is Z
        self.head = nn.Sequential(nn.Linear(embedding_dim, 128), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.embed(torch.flatten(self.features(x), 1))
        return self.head(z), z


class MnistCNNOptions(ModelOptions):
    embedding_dim: int = Field(256, ge=8, le=65536, description="width of the representation layer Z")


def _build_mnist_cnn(opt: MnistCNNOptions, in_channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
    if min(size) < 4:
        raise ValueError(f"model mnist_cnn needs images of at least 4x4, got {size}")
    return MnistCNN(in_channels, num_classes, size, opt.embedding_dim)


_MNIST_CNN = "the CaMU paper's MNIST/Fashion-MNIST CNN (Z = 256-d fc)"
MODELS.register("mnist_cnn", _MNIST_CNN)(ModelEntry(MnistCNNOptions, _build_mnist_cnn, _MNIST_CNN, "mnist"))


# ----------------------------------------------------------------------------- ResNets
class ResNetClassifier(nn.Module):
    """A torchvision ResNet split into backbone (-> pooled features = Z) and ``fc``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.fc = backbone.fc
        backbone.fc = nn.Identity()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.backbone(x)
        return self.fc(z), z


class ResNetOptions(ModelOptions):
    stem: Literal["auto", "cifar", "imagenet"] = Field(
        "auto", description="cifar: 3x3 stride-1 conv, no max-pool (32x32 inputs); imagenet: 7x7/2 + max-pool; "
                            "auto picks cifar below 64 px")


def _resnet(depth: int) -> Callable[[ResNetOptions, int, int, tuple[int, int]], nn.Module]:
    def build(opt: ResNetOptions, in_channels: int, num_classes: int, size: tuple[int, int]) -> nn.Module:
        import torchvision

        net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
        stem = opt.stem if opt.stem != "auto" else ("cifar" if max(size) < 64 else "imagenet")
        if stem == "cifar":
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        return ResNetClassifier(net)

    return build


for _depth, _width in ((18, 512), (50, 2048)):
    _text = f"ResNet-{_depth} from scratch, CIFAR 3x3 or ImageNet stem (Z = {_width}-d)"
    MODELS.register(f"resnet{_depth}", _text)(ModelEntry(ResNetOptions, _resnet(_depth), _text, "cifar"))


def has_batch_norm(model: nn.Module) -> bool:
    """True when batch statistics couple the samples of a forward pass."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
