"""What a job keeps, and how much it stored.

By default (``storage.keep_weights: chosen``) trial weights reach MLflow only for the presets, the
replicates and each method's chosen configuration, a finished run's Train checkpoints are deleted, and
a finished sweep's Tune folder goes too (camu-orch never reads it back). ``keep_weights: all`` keeps
every trial's weights in MLflow. The job summary says how many bytes the job stored where.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def remove_folder(storage_path: str, name: str) -> None:
    """Delete ``<storage_path>/<name>`` (a Train run's or a Tune sweep's folder), local or object storage;
    a failure is logged, never raised (what was to be deleted is only space)."""
    try:
        if "://" in storage_path:
            import pyarrow.fs

            fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
            fs.delete_dir(f"{root.rstrip('/')}/{name}")
        else:
            folder = Path(storage_path) / name
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
    except Exception as err:  # noqa: BLE001 - best effort
        log.warning("could not delete %s/%s: %s", storage_path, name, err)


def folder_bytes(path: str | Path) -> int:
    """Bytes of the regular files below ``path`` (symlinks not followed); 0 for a missing folder."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def artifact_bytes(tracker: Any, run_ids: list[str]) -> int:
    """Bytes of the artifacts logged to ``run_ids`` (two folder levels deep, as camu-orch logs them)."""
    total = 0
    for run_id in run_ids:
        stack = [None]
        while stack:
            folder = stack.pop()
            for entry in tracker.client.list_artifacts(run_id, folder):
                if entry.is_dir:
                    stack.append(entry.path)
                else:
                    total += entry.file_size or 0
    return total


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} GB"
