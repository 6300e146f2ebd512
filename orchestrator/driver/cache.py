"""Content-addressed cache of trained originals and oracles.

The key hashes everything that determines the trained weights: dataset (name and options), model,
recipe, and the exact training indices (for an oracle, the split's retained set). A later job with
the same inputs reuses the weights instead of retraining. Entries are safetensors + JSON metadata.

An entry ``<cache>/<key>/`` is complete only once its ``meta.json`` exists, and ``meta.json`` carries the
sha256 and size of ``weights.safetensors``. It is built in a private staging folder
(``<cache>/<key>.tmp-<random>/``), then published by ``os.replace`` (the weights first, ``meta.json``
last, each under a unique temporary name first): readers see a whole entry or none. Everything from
"is it cached?" to "published" runs under an exclusive ``flock`` of ``<cache>/<key>.lock``, so a second
job wanting the same key waits and then reuses the entry instead of training it again or overwriting it.
``flock`` excludes across processes of one node, and across nodes on NFS (Linux emulates it with NFS
byte-range locks, NFSv4 or NLM); on a filesystem without working locks (some FUSE mounts) two jobs can
still train one key twice, but each publishes atomically and a reader never sees a mix.

On load an entry is verified (``verified_meta``): no symlinks (entry folder, weights or meta), a readable
meta.json, and the weights' size and sha256 as recorded. A failed entry is never used: it is moved aside
to ``<key>.corrupt-<time>`` with a warning naming it, and the model is trained again. The digest catches
torn writes, corruption and a weights file swapped on its own; the training run in MLflow records the
same digest (tag ``camu.weights_sha256``) so a swap of both files is caught against the tracking store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orchestrator.files import atomic_write
from orchestrator.record.run_identity import content_hash

log = logging.getLogger(__name__)
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"


class CacheEntryError(RuntimeError):
    """A cache entry that must not be used (tampered, torn, a symlink); the message names it and why."""


@dataclass
class CachedModel:
    key: str
    folder: Path

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_FILE

    @property
    def meta_path(self) -> Path:
        return self.folder / META_FILE

    def exists(self) -> bool:
        """True when the entry is complete (its meta.json, written last, exists); not that it is valid."""
        return self.meta_path.exists() and self.weights.exists()

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Write meta.json atomically (a unique temporary name in the folder, then ``os.replace``)."""
        atomic_write(self.meta_path, json.dumps(meta, indent=2, default=str).encode())

    def verified_meta(self) -> dict[str, Any] | None:
        """The entry's metadata once its weights match it; None when there is no complete entry (never
        published, or interrupted before meta.json); ``CacheEntryError`` when there is one that must not
        be used."""
        if not os.path.lexists(self.folder):
            return None
        if os.path.islink(self.folder) or not self.folder.is_dir():
            raise CacheEntryError(f"cache entry {self.folder} is a symlink or not a folder")
        if not os.path.lexists(self.meta_path):
            return None
        for path in (self.meta_path, self.weights):
            if os.path.islink(path):
                raise CacheEntryError(f"cache entry {self.folder}: {path.name} is a symlink")
        try:
            meta = json.loads(_read_regular(self.meta_path))
        except (OSError, ValueError) as err:
            raise CacheEntryError(f"cache entry {self.folder}: meta.json is unreadable or torn ({err})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                or not isinstance(meta.get("size"), int):
            raise CacheEntryError(f"cache entry {self.folder}: meta.json records no weights digest (sha256, size)")
        try:
            digest, size = file_digest(self.weights)
        except OSError as err:
            raise CacheEntryError(f"cache entry {self.folder}: weights unreadable ({err})") from None
        if size != meta["size"] or digest != meta["sha256"]:
            raise CacheEntryError(f"cache entry {self.folder}: weights.safetensors (sha256 {digest[:16]}, {size} "
                                  f"bytes) is not what meta.json records (sha256 {meta['sha256'][:16]}, "
                                  f"{meta['size']} bytes)")
        return meta


def indices_digest(indices: torch.Tensor) -> str:
    return hashlib.sha256(indices.cpu().numpy().astype("int64").tobytes()).hexdigest()[:16]


def model_key(role: str, dataset: dict[str, Any], model: dict[str, Any], recipe: dict[str, Any],
              train_indices: torch.Tensor) -> str:
    """Cache key of a trained model; runtime options (``num_workers``, the decoded-once ``cache_dir``) do not
    enter it: they change where and how fast pixels come, never which."""
    options = {k: v for k, v in dataset["options"].items() if k not in ("num_workers", "cache_dir")}
    return content_hash({"role": role, "dataset": {"name": dataset["name"], "options": options}, "model": model,
                         "recipe": recipe, "indices": indices_digest(train_indices)}, length=20)


def entry(cache_dir: str | Path, key: str) -> CachedModel:
    """The entry of ``key`` (the cache folder is created; the entry's own folder only when published)."""
    if not key or "/" in key or key.startswith(".") or key in (".", ".."):
        raise ValueError(f"not a cache key: {key!r}")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return CachedModel(key, Path(cache_dir) / key)


# ----------------------------------------------------------------------------- files
def _read_regular(path: Path) -> bytes:
    """The bytes of ``path``, refusing a symlink (O_NOFOLLOW) or anything but a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        return fh.read()


def file_digest(path: str | Path) -> tuple[str, int]:
    """(sha256 hex, size) of a regular file, read without following a symlink."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        h, size = hashlib.sha256(), 0
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def replace_file(staged: str | Path, path: str | Path) -> Path:
    """Move the regular file ``staged`` onto ``path`` atomically (same filesystem); a symlink is refused."""
    staged, path = Path(staged), Path(path)
    if os.path.islink(staged) or not staged.is_file():
        raise CacheEntryError(f"{staged} is a symlink or not a file; refusing to publish it")
    os.replace(staged, path)
    return path


# ----------------------------------------------------------------------------- locking and publishing
@contextlib.contextmanager
def key_lock(cache_dir: str | Path, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<cache_dir>/<key>.lock`` for the body, waiting while another process
    holds it (``on_wait`` is called once first). Works between processes of a node, and between nodes on
    NFS where the mount supports locks (see the module docstring). The lock file stays (removing it would
    race with a waiter)."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    path = Path(cache_dir) / f"{key}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o664)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def quarantine(item: CachedModel, reason: str) -> Path:
    """Move a bad entry aside to ``<key>.corrupt-<time>`` (kept for inspection, never read again)."""
    target = item.folder.with_name(f"{item.key}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(item.folder, target)  # a symlinked entry: the link itself moves, its target is left alone
    log.warning("cache entry %s not used: %s; moved to %s and training again", item.folder, reason, target)
    return target


def publish(item: CachedModel, staged_weights: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Publish ``staged_weights`` (a file in the cache's own filesystem) as the entry's weights and then its
    meta.json (with the weights' sha256 and size): the weights replace any old ones first, the meta last,
    so the entry is complete exactly when meta.json exists. Returns the meta written."""
    if os.path.islink(item.folder):
        raise CacheEntryError(f"cache entry {item.folder} is a symlink; refusing to publish into it")
    if os.path.lexists(item.meta_path):
        os.unlink(item.meta_path)  # incomplete from here until the new meta is in place
    item.folder.mkdir(parents=True, exist_ok=True)
    digest, size = file_digest(staged_weights)
    replace_file(staged_weights, item.weights)
    full = {**meta, "sha256": digest, "size": size}
    item.write_meta(full)
    return full


def _remove_stale_staging(cache_dir: Path, key: str) -> None:
    """Staging folders of ``key`` left by a job that died while training (only the lock holder trains)."""
    for stale in cache_dir.glob(f"{key}.tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def fetch_or_build(cache_dir: str | Path, key: str, build: Callable[[Path], dict[str, Any]],
                   check: Callable[[dict[str, Any]], str | None] | None = None,
                   on_wait: Callable[[], None] | None = None) -> tuple[CachedModel, dict[str, Any], bool]:
    """The verified entry of ``key``, built first when there is no usable one; returns (entry, meta, built).

    Under the key's lock: an entry that verifies (and that ``check(meta)``, if given, does not object to:
    it returns why not, or None) is reused; a bad one is moved aside with a warning. Otherwise
    ``build(staging)`` writes ``weights.safetensors`` into a private staging folder and returns the
    metadata to record; the weights and then meta.json are published atomically. ``on_wait`` is called
    when another process holds the key (training the same model) and this one waits for it."""
    item = entry(cache_dir, key)
    with key_lock(cache_dir, key, on_wait):
        try:
            meta = item.verified_meta()
            problem = check(meta) if meta is not None and check is not None else None
            if problem:
                raise CacheEntryError(f"cache entry {item.folder}: {problem}")
        except CacheEntryError as err:
            quarantine(item, str(err))
            meta = None
        if meta is not None:
            return item, meta, False
        _remove_stale_staging(Path(cache_dir), key)
        staging = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=cache_dir))
        try:
            meta = publish(item, staging / WEIGHTS_FILE, build(staging))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return item, meta, True
