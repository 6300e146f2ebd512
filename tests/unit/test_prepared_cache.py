"""The decoded-once uint8 cache of an image folder (``camu.data.prepared``): every model input equals the decode
path's exactly (evaluation views bit for bit, training crops for the same drawn crop parameters), in the fast
and the paper setting, from JPEG and PNG files of several sizes; the key changes when a file is added or
changed; a tampered shard is rebuilt, never fed; processes starting together build once; and a cache that
cannot be written leaves the lazy decode path in place."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camu import load_dataset
from camu.data.prepared import PreparedSource, content_key, open_or_prepare
from camu.data.sources import LazySource

SIZES = [(40, 30), (30, 52), (64, 64), (37, 45)]


def tree(root: Path, per_class: int = 5) -> Path:
    """train/val folders of two classes, JPEG and PNG files of several sizes and colours."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 2):
                w, h = SIZES[(i + c) % len(SIZES)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                image = Image.fromarray(pixels)
                if i % 2:
                    image.save(folder / f"{i}.jpg", quality=90)
                else:
                    image.save(folder / f"{i}.png")
    return root


def options(root: Path, setting: str, cache: Path | None = None) -> dict:
    return {"root": str(root), "image_size": 32, "setting": setting, "in_memory": False, "num_workers": 0,
            **({"cache_dir": str(cache)} if cache is not None else {})}


@pytest.mark.parametrize("setting", ["fast", "paper"])
def test_every_model_input_equals_the_decode_path(tmp_path, setting):
    root = tree(tmp_path / "tree")
    lazy = load_dataset("imagefolder", options(root, setting))
    prepared = load_dataset("imagefolder", options(root, setting, tmp_path / "cache"))
    assert isinstance(prepared.train, PreparedSource) and isinstance(lazy.train, LazySource)
    for a, b in ((lazy.train, prepared.train), (lazy.test, prepared.test)):
        idx = torch.arange(len(a))
        assert torch.equal(a.labels, b.labels)
        assert torch.equal(a.fetch(idx, torch.device("cpu")), b.fetch(idx, torch.device("cpu")))  # bit for bit
    if setting == "paper":  # training crops: the same drawn (box, flip) gives the same inputs
        crops = lazy.train.view.draw(len(lazy.train), torch.Generator().manual_seed(3))
        idx = torch.arange(len(lazy.train)).flip(0)
        assert torch.equal(lazy.train.fetch(idx, torch.device("cpu"), crops),
                           prepared.train.fetch(idx, torch.device("cpu"), crops))
        batches = [idx[:3], idx[3:]]
        got = list(prepared.train.batches(batches, torch.device("cpu"), [crops[:3], crops[3:]]))
        want = list(lazy.train.batches(batches, torch.device("cpu"), [crops[:3], crops[3:]]))
        assert all(torch.equal(g[0], w[0]) and torch.equal(g[1], w[1]) for g, w in zip(got, want))
    stored = prepared.train.gather(torch.arange(len(prepared.train)))
    assert stored.dtype == torch.uint8  # the split is held as bytes; only batches become float32
    # the lookup table other devices use holds exactly the CPU's values of every byte
    table = prepared.train.table(torch.device("cpu"))
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    mean, std = prepared.train.mean.view(1, -1, 1, 1), prepared.train.std.view(1, -1, 1, 1)
    assert torch.equal(table.view(1, 3, 1, 256), values.to(torch.float32).div(255).sub(mean).div(std))


def _files(root: Path) -> list[tuple[str, int]]:
    return [(str(p), 0) for p in sorted((root / "train").rglob("*.*"))]


def test_a_file_added_or_changed_gives_a_new_key(tmp_path):
    root = tree(tmp_path / "tree")
    before = content_key(_files(root), {"side": 32})
    assert content_key(_files(root), {"side": 32}) == before
    assert content_key(_files(root), {"side": 36}) != before  # an option that changes pixels
    Image.new("RGB", (20, 20), (255, 0, 0)).save(root / "train" / "cat" / "new.png")
    added = content_key(_files(root), {"side": 32})
    assert added != before
    target = root / "train" / "cat" / "0.png"
    Image.new("RGB", (41, 30), (0, 255, 0)).save(target)
    os.utime(target, ns=(1, 1))
    assert content_key(_files(root), {"side": 32}) != added


def test_a_tampered_shard_is_rebuilt_not_fed(tmp_path, caplog):
    root = tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", options(root, "fast", cache))
    want = first.train.fetch(torch.arange(len(first.train)), torch.device("cpu"))
    shard = next(cache.glob("*/shard-00000.npy"))
    data = bytearray(shard.read_bytes())
    data[-50:] = bytes(255 - b for b in data[-50:])  # same size, other pixels
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="camu.data.prepared"):
        again = load_dataset("imagefolder", options(root, "fast", cache))
    assert "does not match its sha256; rebuilding it" in caplog.text
    assert torch.equal(again.train.fetch(torch.arange(len(again.train)), torch.device("cpu")), want)


def _open(cache: str, root: str, queue: multiprocessing.Queue) -> None:
    from camu.data.datasets import PilDecode

    files = [(str(p), 0) for p in sorted(Path(root, "train").rglob("*.*"))]
    found, _ = open_or_prepare(Path(cache), files, {"test": 1}, PilDecode(36, 32), 32, (0.5,) * 3, (0.5,) * 3,
                               workers=0)
    queue.put(found is not None and found.built is not None)


def test_processes_starting_together_build_once(tmp_path):
    root = tree(tmp_path / "tree", per_class=12)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open, args=(str(tmp_path / "cache"), str(root), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    built = [queue.get(timeout=5) for _ in procs]
    assert sorted(built) == [False, False, True]  # one built it; the others waited and opened it
    assert len(list((tmp_path / "cache").glob("*/manifest.json"))) == 1


def test_a_cache_that_cannot_be_written_keeps_the_decode_path(tmp_path, caplog):
    root = tree(tmp_path / "tree")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="camu.data.datasets"):
        data = load_dataset("imagefolder", options(root, "fast", blocked / "cache"))
        load_dataset("imagefolder", options(root, "fast", blocked / "cache"))
    assert isinstance(data.train, LazySource)
    assert caplog.text.count("the decoded-once cache cannot be used") == 1  # said once, with the reason
    assert "Not a directory" in caplog.text


def test_a_shard_rewritten_in_place_with_its_times_restored_is_caught(tmp_path, caplog):
    """After a verified open (the stamp exists), an in-place rewrite that keeps size, inode and mtime (as
    ``cp -p`` or ``rsync --inplace -t`` would) still changes the change time: the shard is hashed again."""
    root = tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", options(root, "fast", cache))
    want = first.train.fetch(torch.arange(len(first.train)), torch.device("cpu"))
    load_dataset("imagefolder", options(root, "fast", cache))  # a verified open: stamps in place
    shard = next(cache.glob("*/shard-00000.npy"))
    before = shard.stat()
    with shard.open("r+b") as f:
        f.seek(before.st_size - 40)
        f.write(bytes(40))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert shard.stat().st_ino == before.st_ino and shard.stat().st_mtime_ns == before.st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="camu.data.prepared"):
        again = load_dataset("imagefolder", options(root, "fast", cache))
    assert "shard-00000.npy does not match its sha256" in caplog.text
    assert torch.equal(again.train.fetch(torch.arange(len(again.train)), torch.device("cpu")), want)


def test_tampered_labels_are_caught_and_a_failed_build_leaves_nothing(tmp_path, caplog):
    root = tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", options(root, "fast", cache))
    labels = next(cache.glob("*/labels.npy"))
    np.save(labels, 1 - np.load(labels))
    with caplog.at_level(logging.WARNING, logger="camu.data.prepared"):
        again = load_dataset("imagefolder", options(root, "fast", cache))
    assert "labels.npy does not match its sha256" in caplog.text
    assert torch.equal(again.train.labels, first.train.labels)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")  # decoding it fails mid-build
    from camu.data.datasets import PilDecode

    files = [(str(p), 0) for p in sorted((root / "train").rglob("*.*"))]
    found, why = open_or_prepare(cache, files, {"x": 1}, PilDecode(36, 32), 32, (0.5,) * 3, (0.5,) * 3, workers=0)
    assert found is None and "broken.jpg" in why  # the reason names the file; the caller decodes lazily
    assert not list(cache.glob("*.tmp-*"))  # no partial folder left behind


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_inputs_on_a_gpu_equal_the_decode_path_bit_for_bit(tmp_path):
    root = tree(tmp_path / "tree")
    lazy = load_dataset("imagefolder", options(root, "paper"))
    prepared = load_dataset("imagefolder", options(root, "paper", tmp_path / "cache"))
    idx = torch.arange(len(lazy.train))
    got = prepared.train.fetch(idx, torch.device("cuda")).cpu()
    # the decode path's normalisation (on the CPU, as ToTensor and Normalize run), then the same view on the GPU
    want = lazy.train.view(torch.stack([lazy.train.dataset[i][0] for i in idx.tolist()]).cuda()).cpu()
    assert torch.equal(got, want)
