"""Decode once, read everywhere: an image folder's splits prepared as uint8 shards on disk, memory-mapped by
every trial.

Decoding and resizing JPEGs is the costly part of feeding an image-folder model, and a sweep feeds the same
images to every trial. The first process that needs a split decodes every image exactly as the decode path
does (``Resize`` + ``CenterCrop`` of the PIL image, before ``ToTensor``), keeps the 8-bit pixels, and writes
them in shards of ``SHARD_IMAGES`` images (``(n, 3, S, S)`` uint8 ``.npy``) with the labels and a manifest
holding each shard's sha256, into ``<cache>/<key>/``. The key is the content: the pixel-changing options and
the file list with sizes and modification times, so an added or changed file makes a new key. The folder is
written under a temporary name and renamed; a lock per key makes processes that start together build it once
(the others wait and open it).

Readers memory-map the shards (one copy of the bytes per node, in the page cache, whatever the number of
trials) and gather uint8 batches by index; the batch alone becomes float32 on the trial's device (pinned and
non-blocking on a GPU), scaled and normalised with the very operations of ``ToTensor`` and ``Normalize``, so
every model input equals the decode path's bit for bit. A shard whose sha256 does not match is never fed: the
split is rebuilt. Hashing gigabytes at every trial start would cost seconds, so a shard verified once gets a
stamp with its size, modification time and inode; a later open rehashes only a shard whose stamp no longer
matches (rewritten, touched, replaced).

Where the cache cannot be written (a read-only folder), ``open_or_prepare`` returns None with the reason and
the caller keeps the lazy decode path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camu.data.views import PLAIN_VIEW, ImageView

SHARD_IMAGES = 1024        # images per shard file
FORMAT_VERSION = 1         # bump when the layout or the decode changes: old caches are simply not found
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


def content_key(files: Sequence[tuple[str, int]], options: dict[str, Any]) -> str:
    """The identity of a prepared split: ``options`` (what changes pixels) and every (file, label) with the
    file's size and modification time."""
    h = hashlib.sha256(json.dumps({"version": FORMAT_VERSION, "options": options}, sort_keys=True).encode())
    for path, label in files:
        st = os.stat(path)
        h.update(f"{path}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


class _Decode(Dataset):
    """(uint8 CHW array, label) of each file: ``decode(path)`` gives the resized, cropped RGB PIL image."""

    def __init__(self, files: Sequence[tuple[str, int]], decode: Callable[[str], Any]) -> None:
        self.files, self.decode = list(files), decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        path, label = self.files[i]
        pixels = np.asarray(self.decode(path), dtype=np.uint8)
        if pixels.ndim == 2:  # a grey image the decode kept as one channel
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)), label


def _collate(batch: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([b[0] for b in batch]), np.array([b[1] for b in batch], dtype=np.int64)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


@dataclass
class PrepareReport:
    """What preparing a split cost: images, seconds, decode processes, bytes on disk."""

    images: int
    seconds: float
    workers: int
    bytes: int

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def _build(folder: Path, files: Sequence[tuple[str, int]], decode: Callable[[str], Any], side: int,
           workers: int) -> PrepareReport:
    """Decode every file into shards under ``folder`` (which does not exist yet: written at a temporary
    name, renamed when complete)."""
    start = time.perf_counter()
    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    loader = DataLoader(_Decode(files, decode), batch_size=64, num_workers=workers, collate_fn=_collate)
    shards, labels, pending, filled, total = [], [], [], 0, 0

    def flush() -> None:
        nonlocal pending, filled
        if not pending:
            return
        block = np.concatenate(pending)
        name = f"shard-{len(shards):05d}.npy"
        np.save(staging / name, block)
        shards.append({"file": name, "count": len(block), "sha256": _sha256(staging / name)})
        pending, filled = [], 0

    for images, batch_labels in loader:
        if images.shape[1:] != (3, side, side):
            raise ValueError(f"decoding gave images of shape {images.shape[1:]} where (3, {side}, {side}) was "
                             f"expected")
        labels.append(batch_labels)
        at = 0
        while at < len(images):
            take = min(SHARD_IMAGES - filled, len(images) - at)
            pending.append(images[at: at + take])
            filled += take
            total += take
            at += take
            if filled == SHARD_IMAGES:
                flush()
        if total and total % (SHARD_IMAGES * 4) < len(images):
            rate = total / (time.perf_counter() - start)
            log.info("preparing %s: %d/%d images (%.0f images/s)", folder.name, total, len(files), rate)
    flush()
    np.save(staging / "labels.npy", np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64))
    manifest = {"version": FORMAT_VERSION, "images": total, "side": side, "shards": shards}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    os.replace(staging, folder)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.iterdir())
    log.info("prepared %s: %d images in %.1f s (%.0f images/s, %d decode processes), %.1f MB", folder.name, total,
             seconds, total / max(seconds, 1e-9), workers, size / 1e6)
    return PrepareReport(total, seconds, workers, size)


def _verify(folder: Path) -> str | None:
    """None when every shard matches its manifest's sha256 (rehashing only shards whose stamp changed), else
    what is wrong."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return f"unreadable manifest ({err})"
    if manifest.get("version") != FORMAT_VERSION:
        return "another format version"
    stamps_file = folder / "verified.json"
    try:
        stamps = json.loads(stamps_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    changed = False
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        if not path.is_file():
            return f"{shard['file']} is missing"
        stamp = _stamp(path)
        if stamps.get(shard["file"]) == stamp:
            continue
        if _sha256(path) != shard["sha256"]:
            return f"{shard['file']} does not match its sha256"
        stamps[shard["file"]] = stamp
        changed = True
    if changed:
        with contextlib.suppress(OSError):  # a read-only cache is verified again next time
            tmp = stamps_file.with_name(f"verified.json.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(stamps))
            os.replace(tmp, stamps_file)
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Prepared:
    """An opened prepared split and, when this process built it, what that cost."""

    source: PreparedSource
    built: PrepareReport | None = None


def open_or_prepare(cache: Path, files: Sequence[tuple[str, int]], options: dict[str, Any],
                    decode: Callable[[str], Any], side: int, mean: Sequence[float], std: Sequence[float],
                    view: ImageView = PLAIN_VIEW, workers: int = 4) -> tuple[Prepared | None, str]:
    """The prepared split of ``files`` under ``cache`` (built here if missing or failing its sha256), or
    (None, why) when the cache cannot be written or read."""
    key = content_key(files, {**options, "side": side})
    folder = cache / key
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = cache / f"{key}.lock"
        with _locked(lock):
            built = None
            problem = _verify(folder) if folder.exists() else "not prepared yet"
            if problem is not None:
                if folder.exists():
                    log.warning("prepared split %s: %s; rebuilding it (never fed)", key, problem)
                    shutil.rmtree(folder)
                built = _build(folder, files, decode, side, workers)
            return Prepared(PreparedSource.open(folder, mean, std, view), built), ""
    except OSError as err:
        return None, f"{cache}: {err.strerror or err}"


@dataclass
class PreparedSource:
    """A split as memory-mapped uint8 shards: batches are gathered by index, then scaled, normalised and
    viewed on the requested device; nothing float32 larger than a batch exists."""

    shards: list[np.ndarray]
    labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    view: ImageView = PLAIN_VIEW
    _norm: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, folder: Path, mean: Sequence[float], std: Sequence[float],
             view: ImageView = PLAIN_VIEW) -> PreparedSource:
        manifest = json.loads((folder / MANIFEST).read_text())
        shards = [np.load(folder / s["file"], mmap_mode="r") for s in manifest["shards"]]
        labels = torch.from_numpy(np.load(folder / "labels.npy")).long()
        return cls(shards, labels, torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32),
                   view)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> PreparedSource:
        """The bytes stay memory-mapped on the host (shared by every trial of the node); batches move."""
        return self

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices`` (n, 3, S, S), in that order."""
        idx = indices.cpu().numpy().astype(np.int64)
        out = np.empty((len(idx), *self.shards[0].shape[1:]), dtype=np.uint8) if self.shards else \
            np.empty((0, 3, 1, 1), dtype=np.uint8)
        shard, offset = np.divmod(idx, SHARD_IMAGES)
        for s in np.unique(shard):
            where = np.nonzero(shard == s)[0]
            out[where] = self.shards[int(s)][offset[where]]
        return torch.from_numpy(out)

    def fetch(self, indices: torch.Tensor, device: torch.device, crops: torch.Tensor | None = None) -> torch.Tensor:
        """Model inputs at ``indices`` on ``device``: ToTensor's scaling and Normalize, then the view."""
        pixels = self.gather(indices)
        if device.type == "cuda":
            pixels = pixels.pin_memory()
        pixels = pixels.to(device, non_blocking=True)
        key = str(device)
        if key not in self._norm:
            self._norm[key] = (self.mean.to(device).view(1, -1, 1, 1), self.std.to(device).view(1, -1, 1, 1))
        mean, std = self._norm[key]
        images = pixels.to(torch.float32).div(255).sub_(mean).div_(std)
        return self.view(images, crops)

    def batches(self, index_batches: Sequence[torch.Tensor], device: torch.device,
                crops: Sequence[torch.Tensor | None] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) per index batch on ``device``."""
        for i, idx in enumerate(index_batches):
            yield (self.fetch(idx, device, crops[i] if crops is not None else None),
                   self.labels.index_select(0, idx.cpu()).to(device, non_blocking=True))
