"""Decode once against decode every pass: today's image-folder path beside the decoded-once uint8 cache, in one run
on the same machine.

Generates an Imagenette-like tree (``--classes`` x ``--per-class`` JPEGs of about 500 x 375 at quality 90, and
a validation split) or takes ``--root``, then prints:

- preparation: images per second, by a trial's own decode processes and by the job driver's Ray tasks
  (one per shard); the cache's size on disk;
- a trial's data load once the cache is ready (open + labels; goal <= 0.5 s whatever the size), beside the
  lazy path's (file list only) and the in-memory float32 decode's (what ``in_memory: auto`` did below 2 GiB);
- feed rate in the paper setting (224-px random resized crop + flip) through one trial's batch iterator:
  images per second, the lazy path with ``--loader-workers`` decode processes against the cache (and the
  cache's own part, the view's resampling left out); and CaMU
  partner fetches (random single images, decoded in the training process on the lazy path) per second;
- the node's memory with ``--trials`` concurrent readers of the training split: the sum of their
  proportional set sizes (shared pages counted once), against one float32 copy per trial.

    python benchmarks/ingest.py --per-class 130          # a 1,300-image tree: minutes on 2 cores
    python benchmarks/ingest.py                          # 13,000 images, as the issue's Imagenette-like tree
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def make_tree(root: Path, classes: int, per_class: int, val_per_class: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                w, h = (500, 375) if i % 3 else (375, 500)
                # smooth content (JPEG-like cost to decode), not white noise
                base = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
                image = Image.fromarray(base).resize((w, h), Image.BILINEAR)
                image.save(folder / f"img{i:05d}.JPEG", quality=90)
    return root


def opts(root: Path, **extra: object) -> dict:
    return {"root": str(root), "image_size": 224, "setting": "paper", "in_memory": False, **extra}


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def feed_rate(source: Any, n: int, batch: int, seed: int = 0) -> float:
    """Images per second delivered by ``source.batches`` with random resized crops + flips."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(source), generator=g)[:n]
    batches = list(order.split(batch))
    crops = [source.view.draw(len(b), g) for b in batches]
    start = time.perf_counter()
    seen = 0
    for images, _ in source.batches(batches, torch.device("cpu"), crops):
        seen += len(images)
    return seen / (time.perf_counter() - start)


def read_rate(source: Any, n: int, batch: int, normalise: bool, seed: int = 0) -> float:
    """Images per second of the cache's own part of feeding: gathering bytes by index (what a GPU trial's host
    does: normalisation and the view then run on the device), and with ``normalise`` turning them into float
    inputs on the CPU (the view, a resampling, left out)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(source), generator=g)[:n]
    start = time.perf_counter()
    for idx in order.split(batch):
        pixels = source.gather(idx)
        if normalise:
            source.inputs(pixels)
    return n / (time.perf_counter() - start)


def ray_preparation(root: Path, cache: Path) -> tuple[float, int, float]:
    """(seconds, images, CPUs) of the job driver's preparation: one Ray task per shard on a local Ray."""
    import ray

    from camu.data.datasets import splits_to_prepare
    from camu.data.prepared import prepare
    from orchestrator.driver.prepare import ray_shards, shard_size

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        cpus = ray.cluster_resources()["CPU"]
        ray.get([ray.remote(lambda: None).remote() for _ in range(int(cpus))])  # worker processes up, as in a job
        folder, splits = splits_to_prepare("imagefolder", opts(root, cache_dir=str(cache)))
        start, images = time.perf_counter(), 0
        for split in splits:
            prepare(folder, split.files, split.options, split.decode, split.side, builder=ray_shards(),
                    shard_images=shard_size(len(split.files), cpus))
            images += len(split.files)
        return time.perf_counter() - start, images, cpus
    finally:
        ray.shutdown()


def pair_rate(source: Any, n: int, seed: int = 1) -> float:
    """CaMU partner fetches per second: single random images fetched in the training process."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(source), (n,), generator=g)
    start = time.perf_counter()
    for i in picks:
        source.fetch(i.view(1), torch.device("cpu"))
    return n / (time.perf_counter() - start)


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _reader(root: str, cache: str, loaded: Any, touch: Any, touched: Any, done: Any) -> None:
    from camu import load_dataset

    data = load_dataset("imagefolder", opts(Path(root), cache_dir=cache, num_workers=0))
    loaded.set()
    touch.wait(600)
    for chunk in torch.arange(len(data.train)).split(512):  # read every page of the split, a chunk at a time
        data.train.gather(chunk)
    touched.set()
    done.wait(600)


def concurrent_memory(root: Path, cache: Path, trials: int) -> float:
    """MiB the readers' proportional set sizes grow by, all together, once each has read the whole training
    split (shared pages counted once: what the node holds for the images)."""
    ctx = multiprocessing.get_context("spawn")
    touch, done = ctx.Event(), ctx.Event()
    loaded = [ctx.Event() for _ in range(trials)]
    touched = [ctx.Event() for _ in range(trials)]
    procs = [ctx.Process(target=_reader, args=(str(root), str(cache), a, touch, b, done))
             for a, b in zip(loaded, touched)]
    for p in procs:
        p.start()
    for e in loaded:
        e.wait(600)
    before = sum(_pss_kib(p.pid) for p in procs)
    touch.set()
    for e in touched:
        e.wait(600)
    after = sum(_pss_kib(p.pid) for p in procs)
    done.set()
    for p in procs:
        p.join(60)
    return (after - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="an existing root/{train,val}/<class>/* tree")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=1300)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--loader-workers", type=int, default=8, help="decode processes of the lazy path")
    parser.add_argument("--feed-images", type=int, default=1024, help="images fed per rate measurement")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--no-ray", action="store_true", help="skip the preparation by Ray tasks")
    args = parser.parse_args()
    from camu import load_dataset
    from camu.data.datasets import labels_only

    work = Path(tempfile.mkdtemp(prefix="ingest-"))
    try:
        root = args.root
        if root is None:
            root, secs = timed(lambda: make_tree(work / "tree", args.classes, args.per_class, args.val_per_class))
            print(f"generated {args.classes} x {args.per_class} train JPEGs (+ {args.val_per_class} val per class) "
                  f"in {secs:.1f} s")
        cores = os.cpu_count() or 1
        cache = work / "cache"
        workers = max(1, cores)
        prepared, prep_s = timed(lambda: load_dataset("imagefolder", opts(root, cache_dir=str(cache),
                                                                          num_workers=workers)))
        n_images = len(prepared.train) + len(prepared.test)
        size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        print(f"\npreparation: {n_images} images in {prep_s:.1f} s = {n_images / prep_s:.0f} images/s with "
              f"{workers} decode processes on {cores} cores; cache {size / 2**20:.0f} MiB on disk "
              f"({size / n_images / 1024:.0f} KiB an image, uint8 at 256 px)")
        if not args.no_ray:
            ray_s, ray_n, ray_cpus = ray_preparation(root, work / "cache-ray")
            print(f"preparation by the job's driver (one Ray task per shard, {ray_cpus:g} CPUs): {ray_n} images in "
                  f"{ray_s:.1f} s = {ray_n / ray_s:.0f} images/s")
        _, ready_s = timed(lambda: load_dataset("imagefolder", opts(root, cache_dir=str(cache), num_workers=0)))
        with labels_only():
            _, lazy_s = timed(lambda: load_dataset("imagefolder", opts(root, num_workers=0)))
        float_bytes = n_images * 3 * 256 * 256 * 4
        print(f"data load of a trial: cache ready {ready_s:.2f} s; lazy path (file list) {lazy_s:.2f} s; the "
              f"in-memory float32 decode would hold {float_bytes / 2**30:.2f} GiB per trial and decode all "
              f"{n_images} images again (about {n_images / (n_images / prep_s) :.0f} s at the rate above)")
        lazy = load_dataset("imagefolder", opts(root, num_workers=args.loader_workers))
        n = min(args.feed_images, len(lazy.train))
        lazy_rate = feed_rate(lazy.train, n, 64)
        cached_rate = feed_rate(prepared.train, n, 64)
        print(f"\nfeed rate (224 random resized crop + flip, batches of 64, {n} images): lazy with "
              f"{args.loader_workers} decode processes {lazy_rate:.0f} images/s; cache {cached_rate:.0f} images/s "
              f"({cached_rate / lazy_rate:.1f}x)")
        gathered, normalised = read_rate(prepared.train, n, 64, False), read_rate(prepared.train, n, 64, True)
        print(f"  the cache's own part: gathering uint8 batches by index {gathered:.0f} images/s "
              f"({gathered / lazy_rate:.1f}x the lazy path: a GPU trial's host work), with normalisation on the "
              f"CPU {normalised:.0f} images/s ({normalised / lazy_rate:.1f}x); the rest is the view's resampling "
              f"on the CPU")
        pairs = min(256, len(lazy.train))
        lazy_pairs, cached_pairs = pair_rate(lazy.train, pairs), pair_rate(prepared.train, pairs)
        print(f"CaMU partner fetches (one image each, in the training process): lazy {lazy_pairs:.0f}/s; cache "
              f"{cached_pairs:.0f}/s ({cached_pairs / lazy_pairs:.1f}x)")
        mib = concurrent_memory(root, cache, args.trials)
        split_mib = len(prepared.train) * 3 * 256 * 256 / 2**20
        print(f"\nmemory with {args.trials} concurrent trials reading the whole training split: +{mib:.0f} MiB in all "
              f"(growth of their proportional set sizes; the split's bytes are {split_mib:.0f} MiB once); "
              f"{args.trials} float32 copies would be {args.trials * split_mib * 4:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
