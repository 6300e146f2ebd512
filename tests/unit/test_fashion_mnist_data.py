"""The ``fashion_mnist`` dataset through the registry, on the real files Debian's ``dataset-fashion-mnist``
installs (``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``; ``.ci/run``
installs it): sizes, shape, classes, balance and the normalisation. Skipped where the folder is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = [f"{split}-{kind}-ubyte.gz" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]


@pytest.fixture(scope="module")
def fashion():
    if not all((ROOT / name).is_file() for name in FILES):
        pytest.skip(f"Fashion-MNIST files not under {ROOT} (apt install dataset-fashion-mnist)")
    import camu

    return camu.load_dataset("fashion_mnist", {"root": str(ROOT)})


def test_sizes_shape_and_classes(fashion):
    assert len(fashion.train) == 60_000 and len(fashion.test) == 10_000
    assert fashion.num_classes == 10 and fashion.in_channels == 1 and fashion.image_size == (28, 28)
    assert fashion.class_names == [str(i) for i in range(10)]
    assert tuple(fashion.train.images.shape[1:]) == (1, 28, 28) and fashion.train.images.dtype == torch.uint8
    assert fashion.train.images.nbytes == 60_000 * 28 * 28  # kept as bytes: a quarter of float32
    assert tuple(fashion.test.images.shape[1:]) == (1, 28, 28)


def test_labels_are_balanced(fashion):
    assert torch.bincount(fashion.train.labels, minlength=10).tolist() == [6_000] * 10
    assert torch.bincount(fashion.test.labels, minlength=10).tolist() == [1_000] * 10


def test_pixels_are_normalised(fashion):
    """(pixel - 0.2860) / 0.3530 over a few hundred images spread over the set: mean near 0, std near 1,
    and the pixel range [0, 1] mapped exactly."""
    picked = torch.arange(0, 60_000, 150)  # 400 images
    images = fashion.train.fetch(picked, torch.device("cpu"))
    assert images.dtype == torch.float32 and images.shape == (400, 1, 28, 28)
    assert abs(images.mean().item()) < 0.1
    assert abs(images.std().item() - 1) < 0.1
    pixels = fashion.to_pixels(images)
    assert pixels.min().item() == pytest.approx(0.0, abs=1e-5) and pixels.max().item() == pytest.approx(1.0, abs=1e-5)


def test_inputs_are_the_normalised_bytes_of_the_file(fashion):
    """Each model input is (byte / 255 - 0.2860) / 0.3530 of the idx file's byte, read here independently."""
    import gzip

    import numpy as np

    with gzip.open(ROOT / "train-images-idx3-ubyte.gz") as fh:
        raw = np.frombuffer(fh.read(), dtype=np.uint8, offset=16).reshape(60_000, 1, 28, 28)
    picked = torch.tensor([0, 1, 59_999, 31_337])
    expected = (torch.from_numpy(raw[picked.numpy()].astype(np.float32)) / 255.0 - 0.2860) / 0.3530
    assert torch.equal(fashion.train.fetch(picked, torch.device("cpu")), expected)
