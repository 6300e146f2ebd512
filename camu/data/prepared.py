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
non-blocking on a GPU), mapped through a per-channel table of every byte's input computed on the CPU with the
very operations of ``ToTensor`` and ``Normalize``, so every model input equals the decode path's bit for bit on
any device. A shard (or the labels) whose sha256 does not match is never fed: the split is rebuilt (the old
folder renamed aside first, so readers that mapped it keep their pages). Hashing gigabytes at every trial start
would cost seconds, so a file verified once gets a stamp with its size, modification and change times (the
change time cannot be set back), inode and the manifest's digest; a later open rehashes only a file whose stamp
no longer matches. A build that fails leaves no partial folder; one a dead builder left is removed under the
lock.

Where the cache cannot be written (a read-only folder), a split prepared there before is still read; otherwise
``open_or_prepare`` returns None with the reason and the caller keeps the lazy decode path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from camu.data.pixels import BytesToInputs
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


def _stamp(path: Path, manifest_sha: str) -> str:
    """What must not change for a verified file to be trusted unhashed: its size, times (ctime included,
    which no one can set back) and inode, and the manifest it was verified against."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{manifest_sha}"


def _entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every hashed file of a prepared split: the shards and the labels."""
    return [*manifest["shards"], manifest["labels"]]


def _write_stamps(folder: Path, manifest: dict[str, Any]) -> None:
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    stamps = {e["file"]: _stamp(folder / e["file"], digest) for e in _entries(manifest)}
    with contextlib.suppress(OSError):  # a read-only cache is verified again next time
        tmp = folder / f"verified.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(stamps))
        os.replace(tmp, folder / "verified.json")


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


Chunk = tuple[int, Sequence[tuple[str, int]]]  # (shard number, its (file, label) pairs)
ShardBuilder = Callable[[Path, Sequence[Chunk], Callable[[str], Any], int], list[dict[str, Any]]]
"""Decodes every chunk into ``<staging>/shard-<number>.npy`` and returns each shard's manifest entry
(``write_shard``'s), in any order: processes of this node (``local_shards``) or tasks over a cluster
(``orchestrator.driver.prepare``)."""


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.npy"


def decode_chunk(files: Sequence[tuple[str, int]], decode: Callable[[str], Any], side: int) -> np.ndarray:
    """The uint8 (n, 3, side, side) pixels of ``files``, decoded one after the other in this process."""
    out = np.empty((len(files), 3, side, side), dtype=np.uint8)
    item = _Decode(files, decode)
    for i in range(len(files)):
        pixels, _ = item[i]
        _check_shape(pixels[None], side)
        out[i] = pixels
    return out


def write_shard(staging: Path, number: int, pixels: np.ndarray) -> dict[str, Any]:
    """Save one shard and return its manifest entry (file, count, sha256)."""
    path = Path(staging) / shard_name(number)
    np.save(path, pixels)
    return {"file": path.name, "count": len(pixels), "sha256": _sha256(path)}


def decode_and_write_shard(staging: Path, number: int, files: Sequence[tuple[str, int]],
                           decode: Callable[[str], Any], side: int) -> dict[str, Any]:
    """One shard from its files: what a preparation task runs (anywhere the staging folder is mounted)."""
    return write_shard(staging, number, decode_chunk(files, decode, side))


def _check_shape(images: np.ndarray, side: int) -> None:
    if images.shape[1:] != (3, side, side):
        raise ValueError(f"decoding gave images of shape {images.shape[1:]} where (3, {side}, {side}) was expected")


def local_shards(workers: int) -> ShardBuilder:
    """A builder decoding with ``workers`` DataLoader processes of this node (0: in this process), the
    shards written in order, the rate in the log."""

    def build(staging: Path, chunks: Sequence[Chunk], decode: Callable[[str], Any], side: int
              ) -> list[dict[str, Any]]:
        files = [f for _, part in chunks for f in part]
        loader = DataLoader(_Decode(files, decode), batch_size=64, num_workers=workers, collate_fn=_collate)
        entries, pending, start, done = [], [], time.perf_counter(), 0
        sizes = iter([(number, len(part)) for number, part in chunks])
        number, want = next(sizes, (0, 0))
        for images, _ in loader:
            _check_shape(images, side)
            pending.append(images)
            done += len(images)
            while pending and sum(len(b) for b in pending) >= want > 0:
                block = np.concatenate(pending)
                entries.append(write_shard(staging, number, block[:want]))
                pending = [block[want:]] if len(block) > want else []
                number, want = next(sizes, (0, 0))
            if done % (SHARD_IMAGES * 4) < len(images):
                log.info("preparing: %d/%d images (%.0f images/s)", done, len(files),
                         done / (time.perf_counter() - start))
        return entries

    return build


def chunks_of(files: Sequence[tuple[str, int]], shard_images: int = SHARD_IMAGES) -> list[Chunk]:
    """The files cut into shards of ``shard_images`` (the last one shorter)."""
    return [(i, files[at: at + shard_images]) for i, at in enumerate(range(0, len(files), shard_images))]


def _build(folder: Path, files: Sequence[tuple[str, int]], decode: Callable[[str], Any], side: int,
           builder: ShardBuilder, shard_images: int, workers: int) -> PrepareReport:
    """Decode every file into shards under ``folder`` (which does not exist yet: written at a temporary
    name, renamed when complete)."""
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
    try:
        return _fill(staging, folder, files, decode, side, builder, shard_images, workers, start)
    except BaseException:  # a failed build (a bad file, a full disk, an interrupt) leaves nothing behind
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fill(staging: Path, folder: Path, files: Sequence[tuple[str, int]], decode: Callable[[str], Any], side: int,
          builder: ShardBuilder, shard_images: int, workers: int, start: float) -> PrepareReport:
    chunks = chunks_of(files, shard_images)
    entries = sorted(builder(staging, chunks, decode, side), key=lambda e: e["file"])
    expected = [(shard_name(n), len(part)) for n, part in chunks]
    if [(e["file"], e["count"]) for e in entries] != expected:
        raise ValueError(f"the shard builder wrote {[(e['file'], e['count']) for e in entries]} where {expected} "
                         f"were expected")
    total = sum(e["count"] for e in entries)
    labels = np.array([label for _, label in files], dtype=np.int64)
    np.save(staging / "labels.npy", labels)
    manifest = {"version": FORMAT_VERSION, "images": total, "side": side, "shards": entries,
                "labels": {"file": "labels.npy", "count": total, "sha256": _sha256(staging / "labels.npy")}}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _write_stamps(staging, manifest)  # just hashed: the first reader need not hash again
    os.replace(staging, folder)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.iterdir())
    log.info("prepared %s: %d images in %.1f s (%.0f images/s, %d decode processes), %.1f MB", folder.name, total,
             seconds, total / max(seconds, 1e-9), workers, size / 1e6)
    return PrepareReport(total, seconds, workers, size)


def _verify(folder: Path) -> str | None:
    """None when every shard and the labels match the manifest's sha256s and counts (rehashing only files
    whose stamp changed), else what is wrong."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("version") != FORMAT_VERSION:
            return "another format version"
        entries = _entries(manifest)
        if not sum(s["count"] for s in manifest["shards"]) == manifest["images"] == manifest["labels"]["count"]:
            return "the manifest's counts disagree"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable manifest ({type(err).__name__}: {err})"
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    try:
        stamps = json.loads((folder / "verified.json").read_text())
    except (OSError, ValueError):
        stamps = {}
    changed = False
    for entry in entries:
        path = folder / entry["file"]
        if not path.is_file():
            return f"{entry['file']} is missing"
        if stamps.get(entry["file"]) == _stamp(path, digest):
            continue
        if _sha256(path) != entry["sha256"]:
            return f"{entry['file']} does not match its sha256"
        changed = True
    if changed:
        _write_stamps(folder, manifest)
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (flock: across the processes of a node, and across nodes on a shared
    file system whose mounts support locks)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process preparing %s", path.stem)
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


def split_folder(cache: Path, files: Sequence[tuple[str, int]], options: dict[str, Any], side: int) -> Path:
    """Where the prepared form of ``files`` lives under ``cache`` (its content key)."""
    return cache / content_key(files, {**options, "side": side})


def prepare(cache: Path, files: Sequence[tuple[str, int]], options: dict[str, Any], decode: Callable[[str], Any],
            side: int, builder: ShardBuilder | None = None, shard_images: int = SHARD_IMAGES,
            workers: int = 4) -> tuple[Path, PrepareReport | None]:
    """Make sure the prepared split of ``files`` exists under ``cache`` and passes its sha256s, building it
    (with ``builder``, default ``local_shards(workers)``) if it is missing or failing; under the key's lock,
    so processes that start together build it once. Returns its folder and what building cost (None: it
    was there). Raises OSError when the cache cannot be written."""
    folder = split_folder(cache, files, options, side)
    key = folder.name
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{key}.lock"):
        for stale in cache.glob(f"{key}.tmp-*"):  # a builder that died (we hold the key's lock)
            shutil.rmtree(stale, ignore_errors=True)
        problem = _verify(folder) if folder.exists() else "not prepared yet"
        if problem is None:
            return folder, None
        if folder.exists():
            log.warning("prepared split %s: %s; rebuilding it (never fed)", key, problem)
            aside = folder.with_name(f"{key}.bad-{os.getpid()}-{time.time_ns()}")
            os.replace(folder, aside)  # readers that mapped the old shards keep them until they exit
            shutil.rmtree(aside, ignore_errors=True)
        return folder, _build(folder, files, decode, side, builder or local_shards(workers), shard_images, workers)


def open_or_prepare(cache: Path, files: Sequence[tuple[str, int]], options: dict[str, Any],
                    decode: Callable[[str], Any], side: int, mean: Sequence[float], std: Sequence[float],
                    view: ImageView = PLAIN_VIEW, workers: int = 4) -> tuple[Prepared | None, str]:
    """The prepared split of ``files`` under ``cache`` (built here if missing or failing its sha256), or
    (None, why) when the cache cannot be written or read."""
    folder = split_folder(cache, files, options, side)
    try:
        folder, built = prepare(cache, files, options, decode, side, workers=workers)
        return Prepared(PreparedSource.open(folder, mean, std, view), built), ""
    except OSError as err:
        if folder.is_dir() and _verify(folder) is None:  # a read-only cache that someone prepared before
            return Prepared(PreparedSource.open(folder, mean, std, view)), ""
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
    inputs: BytesToInputs | None = field(default=None, init=False, repr=False)  # bytes to model inputs
    _starts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64), repr=False)

    def __post_init__(self) -> None:
        self._starts = np.cumsum([0] + [len(s) for s in self.shards])  # first index of every shard, then the end
        if int(self._starts[-1]) != len(self.labels):
            raise ValueError(f"{int(self._starts[-1])} images in the shards but {len(self.labels)} labels")
        self.inputs = BytesToInputs(self.mean.tolist(), self.std.tolist())

    def table(self, device: torch.device) -> torch.Tensor:
        """Every byte value's model input per channel (C, 256), the CPU's values (``BytesToInputs.table``)."""
        return self.inputs.table(device)

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
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices outside 0..{len(self) - 1}")
        out = np.empty((len(idx), *self.shards[0].shape[1:]), dtype=np.uint8) if self.shards else \
            np.empty((0, 3, 1, 1), dtype=np.uint8)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard):
            where = np.nonzero(shard == s)[0]
            out[where] = self.shards[int(s)][idx[where] - self._starts[s]]
        return torch.from_numpy(out)

    def fetch(self, indices: torch.Tensor, device: torch.device, crops: torch.Tensor | None = None) -> torch.Tensor:
        """Model inputs at ``indices`` on ``device``: ToTensor's scaling and Normalize, then the view."""
        pixels = self.gather(indices)
        if device.type == "cuda":
            pixels = pixels.pin_memory()
        return self.view(self.inputs(pixels.to(device, non_blocking=True)), crops)

    def batches(self, index_batches: Sequence[torch.Tensor], device: torch.device,
                crops: Sequence[torch.Tensor | None] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) per index batch on ``device``."""
        for i, idx in enumerate(index_batches):
            yield (self.fetch(idx, device, crops[i] if crops is not None else None),
                   self.labels.index_select(0, idx.cpu()).to(device, non_blocking=True))
