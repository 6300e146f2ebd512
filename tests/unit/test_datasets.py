import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from camu.data import DATASETS, DataFormatError, DataRootError, load_dataset
from tests.conftest import MNIST10K


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_digits_is_offline_and_normalised(digits):
    assert len(digits.train) + len(digits.test) == 1797
    assert digits.train.images.shape[1:] == (1, 8, 8)
    assert digits.num_classes == 10 and digits.in_channels == 1
    assert abs(float(digits.train.images.mean())) < 0.2


def test_synthetic_any_size():
    d = load_dataset("synthetic", {"num_train": 50, "num_test": 20, "num_classes": 3, "channels": 3, "image_size": 16})
    assert d.train.images.shape == (50, 3, 16, 16) and int(d.train.labels.max()) < 3


def test_mnist_reads_raw_idx_files_and_resplits(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (50, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(50) % 10)
    with pytest.raises(DataRootError, match="test_size"):
        load_dataset("mnist", {"root": str(tmp_path)})
    d = load_dataset("mnist", {"root": str(tmp_path), "test_size": 0.2})
    assert (len(d.train), len(d.test)) == (40, 10)
    assert d.train.images.shape[1:] == (1, 28, 28)
    assert sorted(torch.cat([d.train.labels, d.test.labels]).tolist()) == sorted((np.arange(50) % 10).tolist())


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_missing_root_says_where_and_how(tmp_path, name):
    with pytest.raises(DataRootError, match=r"dataset\.root.*download"):
        load_dataset(name, {"root": str(tmp_path / "nowhere")})


def test_imagefolder_subset_and_cap(tmp_path):
    for part, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog", "eel"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((20, 20, 3), i * 40, np.uint8)).save(tmp_path / part / cls / f"{i}.png")
    d = load_dataset("imagefolder", {"root": str(tmp_path), "classes": ["dog", "eel"], "max_per_class": 3,
                                     "image_size": 16, "num_workers": 0})
    assert d.num_classes == 2 and d.class_names == ["dog", "eel"]
    assert len(d.train) == 6 and len(d.test) == 4
    x, y = next(d.train.batches([torch.tensor([0, 5])], torch.device("cpu")))
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [0, 1]
    with pytest.raises(DataFormatError, match=r"dataset.classes: \['owl'\] are not folders"):
        load_dataset("imagefolder", {"root": str(tmp_path), "classes": ["dog", "owl"], "num_workers": 0})
    with pytest.raises(DataRootError, match="train"):
        load_dataset("imagefolder", {"root": str(tmp_path / "empty")})


def test_unknown_option_rejected():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        load_dataset("digits", {"sede": 1})
    assert "digits" in DATASETS


@pytest.mark.skipif(not MNIST10K.exists(), reason="../shared/data/mnist10k not present")
def test_real_mnist10k_split_8k_2k():
    d = load_dataset("mnist", {"root": str(MNIST10K), "test_size": 0.2})
    assert (len(d.train), len(d.test)) == (8000, 2000)
    assert d.image_size == (28, 28)
