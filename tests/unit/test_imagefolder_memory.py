"""Image folders in memory: decoded once into a preallocated tensor (not a list of batches and their
concatenation: twice the data), the 2 GiB auto limit on train and val together, in_memory: true refused
beyond the memory available, and validation reading only the file lists and labels, never the pixels."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from camu.data import DataFormatError, LazySource, TensorSource, load_dataset
from camu.data import datasets as ds_module

CLASSES = ("cat", "dog", "eel")


def png_tree(root: Path, per_class: dict[str, int], size: int = 20, garbage: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for part, n in per_class.items():
        for cls in CLASSES:
            (root / part / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                path = root / part / cls / f"{i}.png"
                if garbage:
                    path.write_bytes(b"not a png at all")
                else:
                    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return root


def options(root: Path, **extra) -> dict:
    return {"root": str(root), "image_size": 16, "num_workers": 0, **extra}


def test_decoded_images_are_the_files_in_order(tmp_path):
    root = png_tree(tmp_path, {"train": 5, "val": 2})
    held = load_dataset("imagefolder", options(root, in_memory=True))
    lazy = load_dataset("imagefolder", options(root, in_memory=False))
    assert isinstance(held.train, TensorSource) and isinstance(lazy.train, LazySource)
    for a, b in ((held.train, lazy.train), (held.test, lazy.test)):
        everything = torch.arange(len(b))
        assert torch.equal(a.labels, b.labels)
        assert torch.allclose(a.fetch(everything, torch.device("cpu")), b.fetch(everything, torch.device("cpu")))


def test_auto_limit_counts_train_and_val_together(tmp_path, monkeypatch):
    root = png_tree(tmp_path, {"train": 2, "val": 2})  # 6 images per split of 3x16x16 float32 each
    per_split = 6 * 3 * 16 * 16 * 4
    monkeypatch.setattr(ds_module, "IN_MEMORY_LIMIT", per_split + 1)  # each split fits, both together do not
    data = load_dataset("imagefolder", options(root))
    assert isinstance(data.train, LazySource) and isinstance(data.test, LazySource)
    monkeypatch.setattr(ds_module, "IN_MEMORY_LIMIT", 2 * per_split)
    data = load_dataset("imagefolder", options(root))
    assert isinstance(data.train, TensorSource) and isinstance(data.test, TensorSource)


def test_in_memory_true_beyond_available_memory_is_refused(tmp_path, monkeypatch):
    root = png_tree(tmp_path, {"train": 2, "val": 2})
    monkeypatch.setattr(ds_module, "available_memory", lambda: 10_000)  # bytes: far less than 12 decoded images
    with pytest.raises(DataFormatError, match=r"dataset\.in_memory: true would decode .* set in_memory: auto"):
        load_dataset("imagefolder", options(root, in_memory=True))
    assert isinstance(load_dataset("imagefolder", options(root, in_memory=False)).train, LazySource)
    monkeypatch.setattr(ds_module, "available_memory", lambda: 1 << 40)
    assert isinstance(load_dataset("imagefolder", options(root, in_memory=True)).train, TensorSource)


def test_available_memory_is_a_positive_number_here():
    found = ds_module.available_memory()
    assert found is None or found > 0


def test_validation_reads_labels_not_pixels(tmp_path):
    """Files that cannot be decoded: the driver's validation still passes (it lists files and labels only)."""
    from orchestrator.job.validate import check_job

    root = png_tree(tmp_path / "tree", {"train": 4, "val": 2}, garbage=True)
    from PIL import UnidentifiedImageError

    with pytest.raises(UnidentifiedImageError):  # these really are not images
        load_dataset("imagefolder", options(root, in_memory=True))
    job = {"name": "folder", "dataset": {"name": "imagefolder", **options(root, in_memory=True)},
           "model": {"name": "mnist_cnn"}, "scenarios": [{"name": "c", "kind": "classes", "classes": ["dog"]}],
           "device": "cpu"}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    checked = check_job(tmp_path / "job.yaml")
    assert isinstance(checked.data.train, LazySource) and len(checked.data.train) == 12
    assert checked.data.class_names == list(CLASSES)
    split = checked.splits[("c", 0)]
    assert split.num_rows == 12


PEAK = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    from camu.data import datasets, load_dataset

    datasets.DECODE_BATCH = 8  # the transient batch stays small beside this small tree (a real one is GiBs)

    def rss(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    options = json.loads(sys.argv[1])
    lazy = load_dataset("imagefolder", {**options, "in_memory": False})  # imports and file listing, no pixels
    lazy.train.fetch(torch.arange(2), torch.device("cpu"))  # decoding code warmed up (lazy imports, buffers)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
    before = rss("VmRSS:")
    data = load_dataset("imagefolder", {**options, "in_memory": True})
    decoded = data.train.images.numel() * 4 + data.test.images.numel() * 4
    print(json.dumps({"peak": rss("VmHWM:") - before, "decoded": decoded}))
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS accounting")
def test_decoding_peaks_near_the_decoded_size_not_twice_it(tmp_path):
    # 240 training images of 3x160x160 float32 (~70 MiB) and a few validation ones: decoding the training split
    # as a list of batches plus their concatenation would peak at twice its size
    root = png_tree(tmp_path, {"train": 80, "val": 2}, size=24)
    opts = {"root": str(root), "image_size": 160, "num_workers": 0}
    out = subprocess.run([sys.executable, "-c", PEAK, json.dumps(opts)], capture_output=True, text=True, timeout=300, check=False,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["decoded"] > 60 << 20
    assert got["peak"] < 1.5 * got["decoded"], got
